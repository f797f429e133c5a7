"""``CacheLayer``: the old service's API over cache-layer's own library.

Every write and read goes through the native module, which runs the daemon's code: the
same validation, key schema, Lua scripts and version guards. What this module adds is
Python's side of it: the old constructor and its environment defaults, turning the
pipeline's objects into the JSON upstream publishes, turning replies into dicts, and
the old service's behaviour on a Redis that is down (reads return empty, with a warning
under the logger ``cache_layer``; writes raise).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Iterable, Mapping
from datetime import date, datetime, timezone
from os import PathLike
from types import TracebackType
from typing import Any, TypeVar, cast

from ._cache_layer import Client
from .errors import CacheUnavailableError, InvalidInputError
from .types import CacheStats, TrendDetails, UserMetricsDict, WindowEntry

__all__ = ["CacheLayer"]

logger = logging.getLogger("cache_layer")

_TREND_FIELDS = (
    "keyword",
    "frequency",
    "growth_rate",
    "confidence_score",
    "window_start",
    "window_end",
    "sample_posts",
    "unique_authors",
    "rank",
)
_WINDOW_FIELDS = (
    "keyword",
    "count",
    "window_start",
    "window_end",
    "unique_authors",
    "normalized_keyword",
    "window_id",
)

_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="CacheLayer")


def _timestamp(value: datetime) -> str:
    """RFC 3339; a naive datetime is UTC, as ``datetime.utcnow()`` gives."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def _jsonable(value: Any) -> Any:
    """``value`` with its datetimes as RFC 3339 strings, nested or not."""
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _fields(item: Any, names: tuple[str, ...], what: str, index: int) -> dict[str, Any]:
    """The named fields of a dict or of an object's attributes. One missing, or None,
    is left out: the validation names it when it is required."""
    if isinstance(item, Mapping):
        values = {name: item.get(name) for name in names}
    elif any(hasattr(item, name) for name in names):
        values = {name: getattr(item, name, None) for name in names}
    else:
        raise InvalidInputError(
            f"{what} (element {index}): expected a dict or an object with the fields "
            f"{', '.join(names)}, got {type(item).__name__}"
        )
    return {name: _jsonable(value) for name, value in values.items() if value is not None}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be an integer, got {value!r}") from None


class CacheLayer:
    """The cache of trends, user metrics and windows, as the old ``CacheLayer`` offered
    it. Arguments not given default from ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``,
    ``REDIS_PASSWORD`` and ``CACHE_DEFAULT_TTL``, then from the old defaults.

    One multiplexed connection serves every call, concurrent or not, and reconnects by
    itself after Redis comes back: ``max_connections`` is accepted for compatibility and
    not needed. ``socket_timeout`` bounds each reply and ``socket_connect_timeout`` each
    connection attempt.
    """

    def __init__(
        self,
        redis_host: str | None = None,
        redis_port: int | None = None,
        redis_db: int | None = None,
        redis_password: str | None = None,
        default_ttl: int | None = None,
        max_connections: int = 20,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 5.0,
        *,
        _client: Client | None = None,
    ) -> None:
        if _client is not None:
            self._client = _client
            return
        if max_connections < 1:
            raise InvalidInputError(f"max_connections must be at least 1, got {max_connections}")
        ttl = default_ttl if default_ttl is not None else _env_int("CACHE_DEFAULT_TTL", 300)
        self._client = Client(
            redis_host or os.environ.get("REDIS_HOST") or "localhost",
            redis_port if redis_port is not None else _env_int("REDIS_PORT", 6379),
            redis_db if redis_db is not None else _env_int("REDIS_DB", 0),
            redis_password if redis_password is not None else os.environ.get("REDIS_PASSWORD"),
            ttl,
            socket_connect_timeout,
            socket_timeout,
        )

    @classmethod
    def from_config(cls: type[_Self], path: str | PathLike[str]) -> _Self:
        """A cache configured by cache-layer's TOML file: its ``redis`` section (a URL or
        host and port, Cluster, Sentinel, TLS, ACL users, the key prefix) and its
        ``cache.default_ttl``, with the daemon's ``CACHE_LAYER__`` environment
        overrides."""
        return cls(_client=Client.from_config(path))

    @property
    def default_ttl(self) -> int:
        """The TTL, in seconds, of writes that give none."""
        return self._client.default_ttl

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Drops the connection; a later call makes a new one."""
        self._client.close()

    async def health_check(self) -> bool:
        """Whether Redis answers; never raises."""
        return await self._client.health_check()

    def _ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise InvalidInputError(
                f"ttl must be a whole number of seconds, at least 1, got {ttl!r}"
            )
        return ttl

    async def _read(self, what: str, call: Awaitable[_T], empty: _T) -> _T:
        try:
            return await call
        except CacheUnavailableError as error:
            logger.warning("cache read of %s failed: %s", what, error)
            return empty

    async def cache_current_trends(self, trends: Iterable[Any], ttl: int | None = None) -> None:
        """Caches trend alerts (the pipeline's ``TrendAlert`` objects, or dicts with the
        same keys): each one's details, the ranking and the time of the update. An alert
        of an older window than the one cached for its keyword changes nothing."""
        alerts = [_fields(trend, _TREND_FIELDS, "trends", i) for i, trend in enumerate(trends)]
        await self._client.cache_current_trends(json.dumps(alerts), self._ttl(ttl))

    async def get_trending_keywords(self, limit: int = 10) -> list[TrendDetails]:
        """The trends, newest window first and then by rank, at most ``limit``."""
        if limit < 0:
            raise InvalidInputError(f"limit must not be negative, got {limit}")
        reply = await self._read("the ranking", self._client.get_trending_keywords(limit), "[]")
        return cast("list[TrendDetails]", json.loads(reply))

    async def get_trend_details(self, keyword: str) -> TrendDetails | None:
        """A keyword's trend (any case and spacing of it), or None."""
        reply = await self._read(
            f"trend {keyword!r}", self._client.get_trend_details(keyword), None
        )
        return None if reply is None else cast(TrendDetails, json.loads(reply))

    async def cache_user_metrics(self, stats: Mapping[str, Any], ttl: int | None = None) -> None:
        """Caches a user-metrics snapshot, and marks its users active."""
        if not isinstance(stats, Mapping):
            raise InvalidInputError(
                f"stats: expected a dict of user metrics, got {type(stats).__name__}"
            )
        await self._client.cache_user_metrics(json.dumps(_jsonable(stats)), self._ttl(ttl))

    async def get_user_metrics(self) -> UserMetricsDict | None:
        """The last user-metrics snapshot, or None."""
        reply = await self._read("user metrics", self._client.get_user_metrics(), None)
        return None if reply is None else cast(UserMetricsDict, json.loads(reply))

    async def cache_windowed_data(
        self, data: Iterable[Any], window_id: str, ttl: int | None = None
    ) -> None:
        """Caches keyword counts (``WindowedKeywordCount`` objects, or dicts) under
        ``window_id``. A count of an older window than the one cached for a keyword
        changes nothing."""
        counts = [_fields(count, _WINDOW_FIELDS, "data", i) for i, count in enumerate(data)]
        await self._client.cache_windowed_data(json.dumps(counts), window_id, self._ttl(ttl))

    async def get_windowed_data(self, window_id: str) -> dict[str, WindowEntry]:
        """A window's counts by keyword, largest count first; empty when it is not
        cached."""
        reply = await self._read(
            f"window {window_id!r}", self._client.get_windowed_data(window_id), "[]"
        )
        entries = cast("list[WindowEntry]", json.loads(reply))
        return {entry["keyword"]: entry for entry in entries}

    async def get_cache_stats(self) -> CacheStats:
        """Keys in all and per category, Redis's memory, clients, hits and misses. Raises
        when Redis is unavailable: there is nothing to report."""
        return cast(CacheStats, json.loads(await self._client.get_cache_stats()))

    async def invalidate_expired_trends(self) -> int:
        """Removes the ranking's keywords whose details have expired; returns how many."""
        return await self._client.invalidate_expired_trends()

    async def clear_cache_pattern(self, pattern: str) -> int:
        """Deletes the keys matching ``pattern`` (``trends:*``, say), which must lie
        inside the cache's namespaces; returns how many."""
        return await self._client.clear_cache_pattern(pattern)
