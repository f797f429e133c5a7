"""What the tests start: real redis-server processes on free loopback ports, and, for the
tests beside the daemon, Apache Kafka (the broker ``scripts/test.sh`` shares through
``CACHE_LAYER_TEST_KAFKA``, or one of this session's own) and the daemon's binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from shared.models import TrendAlert

#: The workspace's binaries: ``cache-layer`` and ``cache-layer-dev``.
BIN_DIR = Path(
    os.environ.get("CACHE_LAYER_BIN_DIR", Path(__file__).resolve().parents[3] / "target" / "debug")
)
DEADLINE = 60.0
#: The window of the tests' trends: naive, so UTC.
WINDOW_END = datetime(2024, 1, 1, 12, 5)


def alert(
    keyword: str, rank: int = 1, frequency: int = 100, end: datetime = WINDOW_END
) -> TrendAlert:
    """A trend alert of the minute ending at ``end``."""
    return TrendAlert(
        keyword=keyword,
        frequency=frequency,
        growth_rate=2.5,
        confidence_score=0.9,
        window_start=end - timedelta(minutes=1),
        window_end=end,
        sample_posts=[f"a post about {keyword}"],
        unique_authors=7,
        rank=rank,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(what: str, condition: object, timeout: float = DEADLINE) -> None:
    """Waits until ``condition()`` is true, failing the test after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """A redis-server of the test's own, without persistence, stopped on ``stop``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.dir = tempfile.mkdtemp(prefix="cache-layer-redis-")
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed; scripts/test.sh installs it"
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, decode_responses=True)

        def answers() -> bool:
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                assert self.process.poll() is None, f"redis-server on {self.port} exited"
                return False

        wait_until(f"redis-server on port {self.port}", answers)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The shared broker of ``scripts/test.sh``, or one started for this session."""
    shared = os.environ.get("CACHE_LAYER_TEST_KAFKA")
    if shared:
        yield shared
        return
    ready = Path(tempfile.mkdtemp(prefix="cache-layer-kafka-")) / "ready"
    broker = subprocess.Popen(
        [str(BIN_DIR / "cache-layer-dev"), "kafka", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(
            "Apache Kafka", lambda: ready.exists() and ready.read_text().strip() != "", timeout=300
        )
        yield ready.read_text().strip()
    finally:
        broker.terminate()
        broker.wait(timeout=60)
