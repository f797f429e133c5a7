"""``CacheLayer`` against a real redis-server: what each call leaves in Redis (keys,
values, TTLs), what it returns, and how it fails."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from cache_layer import (
    CacheError,
    CacheLayer,
    CacheUnavailableError,
    InvalidInputError,
)
from conftest import WINDOW_END, RedisServer, alert, free_port
from shared.models import WindowedKeywordCount

T = TypeVar("T")


def run(call: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(call)


def cache_on(redis: RedisServer, **kwargs: Any) -> CacheLayer:
    return CacheLayer(redis_host="127.0.0.1", redis_port=redis.port, **kwargs)


def test_trends_are_cached_with_their_ttl_and_read_in_rank_order(redis_server: RedisServer) -> None:
    cache = cache_on(redis_server)
    trends = [alert("Rust", 2), alert("Python", 1), alert("Go", 3)]
    run(cache.cache_current_trends(trends, ttl=120))

    redis = redis_server.client
    stored = json.loads(redis.get("trends:keyword:python") or "null")
    assert stored["keyword"] == "Python" and stored["frequency"] == 100
    # A naive datetime is UTC, as datetime.utcnow() gives.
    assert stored["window_end"] == "2024-01-01T12:05:00.000000Z"
    for key in ("trends:keyword:python", "trends:current", "trends:last_update"):
        assert 0 < redis.ttl(key) <= 120, key
    assert redis.zcard("trends:current") == 3

    ranking = run(cache.get_trending_keywords(limit=10))
    assert [t["keyword"] for t in ranking] == ["Python", "Rust", "Go"]
    assert [t["keyword"] for t in run(cache.get_trending_keywords(limit=2))] == ["Python", "Rust"]
    details = run(cache.get_trend_details("  PYTHON "))
    assert details is not None and details["rank"] == 1
    assert run(cache.get_trend_details("nothing")) is None


def test_dicts_and_aware_datetimes_are_taken_as_objects_are(redis_server: RedisServer) -> None:
    cache = cache_on(redis_server, default_ttl=60)
    trend = vars(alert("Zig", 1))
    trend["window_end"] = WINDOW_END.replace(tzinfo=timezone(timedelta(hours=2)))
    trend["window_start"] = trend["window_end"] - timedelta(minutes=1)
    run(cache.cache_current_trends([trend]))
    stored = json.loads(redis_server.client.get("trends:keyword:zig") or "null")
    assert stored["window_end"] == "2024-01-01T10:05:00.000000Z"
    assert 0 < redis_server.client.ttl("trends:keyword:zig") <= 60


def test_an_older_window_written_after_a_newer_one_changes_nothing(
    redis_server: RedisServer,
) -> None:
    cache = cache_on(redis_server)
    run(cache.cache_current_trends([alert("Rust", 1, frequency=500)]))
    older = alert("Rust", 1, frequency=10, end=WINDOW_END - timedelta(minutes=5))
    run(cache.cache_current_trends([older]))
    details = run(cache.get_trend_details("rust"))
    assert details is not None and details["frequency"] == 500


def test_user_metrics_are_cached_and_their_users_marked_active(redis_server: RedisServer) -> None:
    cache = cache_on(redis_server)
    stats = {
        "total_active_users": 1500,
        "posts_per_minute": 45.2,
        "top_contributors": [
            {"user_id": "user1", "post_count": 25},
            {"user_id": "user2", "post_count": 18},
        ],
    }
    run(cache.cache_user_metrics(stats, ttl=90))
    assert run(cache.get_user_metrics()) == stats
    redis = redis_server.client
    assert set(redis.zrange("users:active", 0, -1)) == {"user1", "user2"}
    for key in ("users:metrics", "users:active", "users:last_update"):
        assert 0 < redis.ttl(key) <= 90, key


def test_windows_are_cached_under_their_id(redis_server: RedisServer) -> None:
    cache = cache_on(redis_server)
    start = datetime(2024, 1, 1, 12, 0)
    counts = [
        WindowedKeywordCount("Python", 50, start, start + timedelta(minutes=1), 25, "python"),
        WindowedKeywordCount("Rust", 70, start, start + timedelta(minutes=1), 30),
    ]
    run(cache.cache_windowed_data(counts, "window_2024_01_01_12_00", ttl=300))
    window = run(cache.get_windowed_data("window_2024_01_01_12_00"))
    assert list(window) == ["Rust", "Python"]
    assert window["Python"]["count"] == 50
    assert window["Python"]["window_start"] == "2024-01-01T12:00:00.000000Z"
    assert 0 < redis_server.client.ttl("windows:window_2024_01_01_12_00") <= 300
    assert run(cache.get_windowed_data("window_2024_01_01_13_00")) == {}


def test_bad_input_is_a_value_error_naming_the_field_and_the_rule(
    redis_server: RedisServer,
) -> None:
    cache = cache_on(redis_server)
    bad = alert("Rust", 1)
    bad.confidence_score = 7.0
    with pytest.raises(ValueError, match="confidence_score 7 is outside 0..=1"):
        run(cache.cache_current_trends([bad]))
    with pytest.raises(InvalidInputError, match="missing field `frequency`"):
        run(cache.cache_current_trends([{"keyword": "Rust"}]))
    with pytest.raises(InvalidInputError, match="ttl must be"):
        run(cache.cache_current_trends([alert("Rust", 1)], ttl=0))
    with pytest.raises(InvalidInputError, match='window_id "index" would name a fixed key'):
        run(cache.cache_windowed_data([], "index"))
    with pytest.raises(InvalidInputError, match="outside the cache namespaces"):
        run(cache.clear_cache_pattern("*"))
    # Nothing of it was written.
    assert redis_server.client.dbsize() == 0


def test_stats_invalidation_and_clearing(redis_server: RedisServer) -> None:
    cache = cache_on(redis_server)
    run(cache.cache_current_trends([alert("Rust", 1), alert("Go", 2)]))
    redis_server.client.set("foreign", "1")
    stats = run(cache.get_cache_stats())
    assert stats["total_keys"] == 5 and stats["trends_keys"] == 4
    assert stats["used_memory_human"]
    # A trend whose details expired leaves the ranking at the next invalidation.
    redis_server.client.delete("trends:keyword:go")
    assert run(cache.invalidate_expired_trends()) == 1
    assert redis_server.client.zrange("trends:current", 0, -1) == ["rust"]
    assert run(cache.clear_cache_pattern("trends:*")) == 3
    assert redis_server.client.keys("*") == ["foreign"]


def test_a_redis_that_is_down_fails_writes_and_empties_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = CacheLayer(redis_host="127.0.0.1", redis_port=free_port(), socket_connect_timeout=1)
    assert run(cache.health_check()) is False
    with caplog.at_level(logging.WARNING, logger="cache_layer"):
        assert run(cache.get_trending_keywords()) == []
        assert run(cache.get_trend_details("rust")) is None
        assert run(cache.get_user_metrics()) is None
        assert run(cache.get_windowed_data("window_2024_01_01_12_00")) == {}
    warned = [r for r in caplog.records if r.name == "cache_layer"]
    assert len(warned) == 4 and all(r.levelno == logging.WARNING for r in warned)
    with pytest.raises(CacheUnavailableError) as raised:
        run(cache.cache_current_trends([alert("Rust", 1)]))
    assert isinstance(raised.value, CacheError) and isinstance(raised.value, ConnectionError)
    with pytest.raises(CacheUnavailableError):
        run(cache.get_cache_stats())


def test_a_redis_back_is_used_again() -> None:
    redis = RedisServer()
    cache = cache_on(redis)
    try:
        assert run(cache.health_check())
        redis.stop()
        assert run(cache.health_check()) is False
        redis = RedisServer(port=redis.port)
        run(cache.cache_current_trends([alert("Rust", 1)]))
        assert redis.client.exists("trends:keyword:rust")
    finally:
        redis.stop()


def test_arguments_default_from_the_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(redis_server.port))
    monkeypatch.setenv("REDIS_DB", "3")
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "42")
    cache = CacheLayer()
    assert cache.default_ttl == 42
    run(cache.cache_current_trends([alert("Rust", 1)]))
    db3 = redis.Redis(port=redis_server.port, db=3)
    assert 0 < db3.ttl("trends:keyword:rust") <= 42
    assert redis_server.client.dbsize() == 0
    monkeypatch.setenv("REDIS_PORT", "not a port")
    with pytest.raises(InvalidInputError, match="REDIS_PORT"):
        CacheLayer()


def test_a_config_file_configures_it_as_it_configures_the_daemon(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "cache-layer.toml"
    config.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:{redis_server.port}/0"\nkey_prefix = "bsky:"\n'
        "[cache]\ndefault_ttl = 77\n"
    )
    cache = CacheLayer.from_config(config)
    assert cache.default_ttl == 77
    run(cache.cache_current_trends([alert("Rust", 1)]))
    assert 0 < redis_server.client.ttl("bsky:trends:keyword:rust") <= 77
    config.write_text("[redis]\nurll = 1\n")
    with pytest.raises(InvalidInputError, match="urll"):
        CacheLayer.from_config(config)


def test_async_with_closes_and_a_later_call_reconnects(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with cache_on(redis_server) as cache:
            assert await cache.health_check()
        assert await cache.health_check()

    run(scenario())


def test_concurrent_calls_share_the_connection(redis_server: RedisServer) -> None:
    async def scenario() -> list[bool]:
        cache = cache_on(redis_server)
        return await asyncio.gather(*(cache.health_check() for _ in range(200)))

    assert all(run(scenario()))
    clients = redis_server.client.info("clients")["connected_clients"]
    # This test's own client, and the package's connections.
    assert clients <= 3
