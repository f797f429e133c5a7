"""The package README's example: cache a trend, read the ranking back. Redis is found as
the old service found it: REDIS_HOST and REDIS_PORT, else localhost:6379."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from cache_layer import CacheLayer


async def main() -> None:
    async with CacheLayer(default_ttl=300) as cache:
        now = datetime.utcnow()
        await cache.cache_current_trends(
            [
                {
                    "keyword": "Python",
                    "frequency": 150,
                    "growth_rate": 25.5,
                    "confidence_score": 0.85,
                    "window_start": now - timedelta(minutes=10),
                    "window_end": now,
                    "sample_posts": ["post1", "post2"],
                    "unique_authors": 75,
                    "rank": 1,
                }
            ]
        )
        for trend in await cache.get_trending_keywords(limit=10):
            print(f"{trend['rank']}. {trend['keyword']}: {trend['frequency']}")


asyncio.run(main())
