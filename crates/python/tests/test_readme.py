"""The old service's README examples, run unchanged against this package: its callers'
code, as it is today. The snippets below are copied from that README as they are; only
what they leave to the reader is added around them (the datetime imports the first one
uses, and a ``cache`` for the others). The first names ``localhost:6379`` itself, so a
redis-server of the test's own takes that port."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer

BASIC_USAGE = """\
import asyncio
from cache_layer import CacheLayer
from shared.models import TrendAlert

async def main():
    # Initialize cache layer
    cache = CacheLayer(
        redis_host="localhost",
        redis_port=6379,
        default_ttl=300  # 5 minutes
    )
    
    # Check health
    if await cache.health_check():
        print("Redis is healthy!")
    
    # Cache trending keywords
    trends = [
        TrendAlert(
            keyword="python",
            frequency=150,
            growth_rate=25.5,
            confidence_score=0.85,
            window_start=datetime.utcnow() - timedelta(minutes=10),
            window_end=datetime.utcnow(),
            sample_posts=["post1", "post2"],
            unique_authors=75,
            rank=1,
        )
    ]
    
    await cache.cache_current_trends(trends, ttl=600)
    
    # Retrieve trending keywords
    trending = await cache.get_trending_keywords(limit=10)
    print(f"Found {len(trending)} trending keywords")
    
    # Get specific trend details
    details = await cache.get_trend_details("python")
    if details:
        print(f"Python trend: {details['frequency']} occurrences")
    
    # Clean up
    await cache.close()

asyncio.run(main())
"""  # noqa: W291, W293 (the README's own trailing spaces)

USER_METRICS = """\
# Cache user activity metrics
user_stats = {
    "total_active_users": 1500,
    "posts_per_minute": 45.2,
    "top_contributors": [
        {"user_id": "user1", "post_count": 25},
        {"user_id": "user2", "post_count": 18},
    ]
}

await cache.cache_user_metrics(user_stats, ttl=300)

# Retrieve user metrics
metrics = await cache.get_user_metrics()
print(f"Active users: {metrics['total_active_users']}")
"""

WINDOWED_DATA = """\
from shared.models import WindowedKeywordCount

# Create windowed data
windowed_data = [
    WindowedKeywordCount(
        keyword="Python",
        count=50,
        window_start=datetime.utcnow() - timedelta(minutes=5),
        window_end=datetime.utcnow(),
        unique_authors=25,
        normalized_keyword="python",
    )
]

# Cache windowed data
window_id = "window_2024_01_01_12_00"
await cache.cache_windowed_data(windowed_data, window_id, ttl=300)
"""

CACHE_MANAGEMENT = """\
# Get cache statistics
stats = await cache.get_cache_stats()
print(f"Total keys: {stats['total_keys']}")
print(f"Used memory: {stats['used_memory_human']}")

# Invalidate expired trends
invalidated = await cache.invalidate_expired_trends()
print(f"Invalidated {invalidated} expired keys")

# Clear specific pattern
cleared = await cache.clear_cache_pattern("trends:*")
print(f"Cleared {cleared} trend keys")
"""

HEALTH_AND_LOGGING = """\
# Basic health check
healthy = await cache.health_check()

# Detailed statistics
stats = await cache.get_cache_stats()
"""

DEBUG_LOGGING = """\
import logging
logging.getLogger('cache_layer').setLevel(logging.DEBUG)
"""

#: What the README leaves to its reader: the imports its snippets use.
PRELUDE = "from datetime import datetime, timedelta\n"


def fragment(*snippets: str) -> str:
    """Snippets written with top-level ``await``, run in a coroutine with a ``cache``."""
    body = "\n".join(snippets)
    return (
        PRELUDE
        + "import asyncio\nfrom cache_layer import CacheLayer\n\n"
        + "async def fragment():\n    cache = CacheLayer()\n"
        + textwrap.indent(body, "    ")
        + "\n    await cache.close()\n\nasyncio.run(fragment())\n"
    )


def run_python(code: str, port: int) -> str:
    tests = Path(__file__).parent
    env = os.environ | {"PYTHONPATH": str(tests), "REDIS_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def redis_on_6379() -> Iterator[RedisServer]:
    server = RedisServer(port=6379)
    yield server
    server.stop()


def test_the_basic_usage_runs_unchanged(redis_on_6379: RedisServer) -> None:
    out = run_python(PRELUDE + BASIC_USAGE, 6379)
    assert out.splitlines() == [
        "Redis is healthy!",
        "Found 1 trending keywords",
        "Python trend: 150 occurrences",
    ]
    assert 0 < redis_on_6379.client.ttl("trends:keyword:python") <= 600


def test_the_metrics_windows_and_management_examples_run_unchanged(
    redis_server: RedisServer,
) -> None:
    out = run_python(
        fragment(
            DEBUG_LOGGING,
            USER_METRICS,
            WINDOWED_DATA,
            HEALTH_AND_LOGGING,
            'await cache.cache_current_trends([{"keyword": "rust", "frequency": 3, '
            '"growth_rate": 1.0, "confidence_score": 0.5, "window_start": datetime.utcnow(), '
            '"window_end": datetime.utcnow(), "unique_authors": 1, "rank": 1}])',
            CACHE_MANAGEMENT,
        ),
        redis_server.port,
    )
    lines = out.splitlines()
    assert lines[0] == "Active users: 1500"
    # users: metrics, active, last_update; windows: the window and its index; trends:
    # the details, the ranking and last_update.
    assert lines[1] == "Total keys: 8"
    assert lines[2].startswith("Used memory: ")
    assert lines[3:] == ["Invalidated 0 expired keys", "Cleared 3 trend keys"]
    redis = redis_server.client
    assert redis.hget("windows:window_2024_01_01_12_00", "python") is not None
    assert 0 < redis.ttl("windows:window_2024_01_01_12_00") <= 300
