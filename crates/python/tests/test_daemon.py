"""The package beside the daemon, on one Redis: what the daemon writes from Kafka is read
through the package, what the package writes is served by the daemon's HTTP API, and a
Python write of an older window than the daemon's changes nothing. The daemon is the
workspace's ``cache-layer`` binary, consuming from Apache Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cache_layer import CacheLayer
from conftest import BIN_DIR, WINDOW_END, RedisServer, alert, free_port, wait_until
from shared.models import TrendAlert


def published(alert: TrendAlert) -> str:
    """The alert as upstream publishes it to Kafka."""
    fields = dataclasses.asdict(alert)
    for name in ("window_start", "window_end"):
        fields[name] = fields[name].isoformat() + "Z"
    return json.dumps(fields)


class Daemon:
    """``cache-layer run`` on its own topics and group, its API on a free port."""

    def __init__(self, bootstrap: str, redis: RedisServer) -> None:
        name = f"py-{uuid.uuid4().hex[:8]}"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.env = os.environ | {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CACHE_LAYER__KAFKA__GROUP_ID": name,
            "CACHE_LAYER__TOPICS__TRENDS": f"{name}-trends",
            "CACHE_LAYER__TOPICS__USER_METRICS": f"{name}-users",
            "CACHE_LAYER__TOPICS__WINDOWS": f"{name}-windows",
            "CACHE_LAYER__TOPICS__DEAD_LETTER": f"{name}-dlq",
            "CACHE_LAYER__REDIS__URL": f"redis://127.0.0.1:{redis.port}/0",
            "CACHE_LAYER__HTTP__LISTEN": f"127.0.0.1:{free_port()}",
            "CACHE_LAYER__HTTP__API_LISTEN": self.api.removeprefix("http://"),
            "CACHE_LAYER__LOG__LEVEL": "warn",
        }
        self.env.pop("CACHE_LAYER_CONFIG", None)
        self.trends = self.env["CACHE_LAYER__TOPICS__TRENDS"]
        self.process: subprocess.Popen[bytes] | None = None

    def produce(self, topic: str, *lines: str) -> None:
        """Through ``cache-layer produce``, which creates nothing: Apache Kafka creates
        the topic on its first record."""
        subprocess.run(
            [str(BIN_DIR / "cache-layer"), "produce", "--topic", topic, "--file", "-"],
            input="\n".join(lines).encode(),
            env=self.env,
            check=True,
            timeout=60,
        )

    def start(self) -> None:
        self.process = subprocess.Popen([str(BIN_DIR / "cache-layer"), "run"], env=self.env)

    def get(self, path: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(self.api + path, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:
            return 0, None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            assert self.process.wait(timeout=30) == 0


def newest_frequency(cache: CacheLayer) -> int | None:
    details = asyncio.run(cache.get_trend_details("python"))
    return None if details is None else details["frequency"]


@pytest.fixture
def daemon(kafka_bootstrap: str, redis_server: RedisServer) -> Iterator[Daemon]:
    daemon = Daemon(kafka_bootstrap, redis_server)
    yield daemon
    daemon.stop()


def test_the_daemons_writes_are_read_and_an_older_python_write_changes_nothing(
    daemon: Daemon, redis_server: RedisServer
) -> None:
    daemon.produce(daemon.trends, published(alert("Rust", frequency=500)))
    daemon.start()
    cache = CacheLayer(redis_host="127.0.0.1", redis_port=redis_server.port)
    wait_until(
        "the daemon's trend read through the package",
        lambda: asyncio.run(cache.get_trend_details("rust")) is not None,
    )
    older = alert("Rust", frequency=10, end=WINDOW_END - timedelta(minutes=5))
    asyncio.run(cache.cache_current_trends([older]))
    details = asyncio.run(cache.get_trend_details("rust"))
    assert details is not None and details["frequency"] == 500
    status, body = daemon.get("/v1/trends/rust")
    assert status == 200 and isinstance(body, dict) and body["frequency"] == 500


def test_the_packages_writes_are_served_by_the_daemon(
    daemon: Daemon, redis_server: RedisServer
) -> None:
    daemon.start()
    cache = CacheLayer(redis_host="127.0.0.1", redis_port=redis_server.port)
    asyncio.run(cache.cache_current_trends([alert("Python", frequency=150)]))
    wait_until("the daemon's API up", lambda: daemon.get("/v1/trends/python")[0] == 200)
    status, body = daemon.get("/v1/trends/python")
    assert status == 200 and isinstance(body, dict)
    assert body["frequency"] == 150 and body["window_end"] == "2024-01-01T12:05:00.000000Z"
    # The daemon's newer write of the same keyword, then, wins over the package's.
    newer = alert("Python", frequency=900, end=WINDOW_END + timedelta(minutes=1))
    daemon.produce(daemon.trends, published(newer))
    wait_until(
        "the daemon's newer trend",
        lambda: newest_frequency(cache) == 900,
    )
