"""The old service's ``CacheLayer`` on redis-py, as its README describes it: the
baseline of ``bench.py``, kept here and never in the package.

Its keys are the README's: ``trends:current`` (the list of current keywords),
``trends:keyword:{keyword}`` (each one's JSON), ``trends:last_update``. Each call is one
redis-py pipeline, as a careful user of redis-py writes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

import redis.asyncio as redis


class OldCacheLayer:
    def __init__(
        self,
        redis_host: str = "localhost",
        redis_port: int = 6379,
        redis_db: int = 0,
        default_ttl: int = 300,
        max_connections: int = 20,
    ) -> None:
        self.default_ttl = default_ttl
        self.redis = redis.Redis(
            host=redis_host,
            port=redis_port,
            db=redis_db,
            max_connections=max_connections,
            decode_responses=True,
        )

    async def cache_current_trends(self, trends: Iterable[Any], ttl: int | None = None) -> None:
        ttl = ttl or self.default_ttl
        pipe = self.redis.pipeline()
        pipe.delete("trends:current")
        for trend in trends:
            details = {
                "keyword": trend.keyword,
                "frequency": trend.frequency,
                "growth_rate": trend.growth_rate,
                "confidence_score": trend.confidence_score,
                "window_start": trend.window_start.isoformat(),
                "window_end": trend.window_end.isoformat(),
                "sample_posts": trend.sample_posts,
                "unique_authors": trend.unique_authors,
                "rank": trend.rank,
            }
            pipe.setex(f"trends:keyword:{trend.keyword}", ttl, json.dumps(details))
            pipe.rpush("trends:current", trend.keyword)
        pipe.expire("trends:current", ttl)
        pipe.setex("trends:last_update", ttl, datetime.utcnow().isoformat())
        await pipe.execute()

    async def get_trending_keywords(self, limit: int = 10) -> list[dict[str, Any]]:
        # Strings: the client decodes replies (decode_responses).
        keywords = cast("list[str]", await self.redis.lrange("trends:current", 0, limit - 1))
        if not keywords:
            return []
        details = await self.redis.mget([f"trends:keyword:{k}" for k in keywords])
        return [json.loads(d) for d in details if d]

    async def close(self) -> None:
        await self.redis.aclose()
