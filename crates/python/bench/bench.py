"""cache_layer against the old redis-py ``CacheLayer``, on one redis-server, with the
same calls: ``cache_current_trends`` of 50 alerts, and ``get_trending_keywords(limit=10)``
after it, each awaited one after the other for ``--seconds``. The two alternate, three
rounds each, on the same Redis flushed between runs; the median run of each is reported.
Both are single callers: this measures each call's own cost (client CPU, round trips,
Redis's work), not a crowd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis as redis_sync

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cache_layer import CacheLayer  # noqa: E402
from old_cache_layer import OldCacheLayer  # noqa: E402
from shared.models import TrendAlert  # noqa: E402

ROUNDS = 3
ALERTS = 50


def alerts(end: datetime) -> list[TrendAlert]:
    return [
        TrendAlert(
            keyword=f"keyword{i}",
            frequency=1000 - i,
            growth_rate=2.5,
            confidence_score=0.8,
            window_start=end - timedelta(minutes=1),
            window_end=end,
            sample_posts=[f"a post about keyword{i}", "another post"],
            unique_authors=10,
            rank=i + 1,
        )
        for i in range(ALERTS)
    ]


async def per_second(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await call()
        done += 1
    return done / (time.perf_counter() - started)


async def measure(cache: Any, seconds: float) -> tuple[float, float]:
    # One window older than the clock: newer each round, so that the version guards
    # write rather than skip.
    batch = alerts(datetime.utcnow().replace(microsecond=0) - timedelta(minutes=1))
    writes = await per_second(lambda: cache.cache_current_trends(batch, ttl=300), seconds)
    top = await cache.get_trending_keywords(limit=10)
    assert len(top) == 10, top
    reads = await per_second(lambda: cache.get_trending_keywords(limit=10), seconds)
    return writes, reads


async def main(port: int, seconds: float, out: Path | None) -> None:
    flush = redis_sync.Redis(port=port)
    runs: dict[str, list[tuple[float, float]]] = {"redis-py (old)": [], "cache_layer": []}
    for _ in range(ROUNDS):
        for name in runs:
            flush.flushall()
            if name == "cache_layer":
                cache: Any = CacheLayer(redis_host="127.0.0.1", redis_port=port)
            else:
                cache = OldCacheLayer(redis_host="127.0.0.1", redis_port=port)
            runs[name].append(await measure(cache, seconds))
            await cache.close()
    report = {
        name: {
            "cache_current_trends_50_per_sec": statistics.median(w for w, _ in results),
            "get_trending_keywords_10_per_sec": statistics.median(r for _, r in results),
        }
        for name, results in runs.items()
    }
    print("| implementation | cache_current_trends(50 alerts)/s | get_trending_keywords(10)/s |")
    print("|---|---|---|")
    for name, figures in report.items():
        print(
            f"| {name} | {figures['cache_current_trends_50_per_sec']:.0f} "
            f"| {figures['get_trending_keywords_10_per_sec']:.0f} |"
        )
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--out", type=Path, help="where the JSON results go")
    args = parser.parse_args()
    asyncio.run(main(args.redis_port, args.seconds, args.out))
