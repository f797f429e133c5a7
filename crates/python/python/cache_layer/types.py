"""The shapes of what ``CacheLayer`` returns, as ``TypedDict``s. Timestamps are RFC 3339
strings in UTC, as the cache stores them."""

from __future__ import annotations

from typing import TypedDict

__all__ = ["CacheStats", "Contributor", "TrendDetails", "UserMetricsDict", "WindowEntry"]


class TrendDetails(TypedDict):
    """A trend alert as cached."""

    keyword: str
    """The keyword as upstream spelled it."""
    frequency: int
    """Occurrences in the window."""
    growth_rate: float
    confidence_score: float
    window_start: str
    window_end: str
    sample_posts: list[str]
    unique_authors: int
    rank: int
    """1 is the top trend of its window."""


class Contributor(TypedDict):
    user_id: str
    post_count: int


class _UserMetricsRequired(TypedDict):
    total_active_users: int
    posts_per_minute: float
    top_contributors: list[Contributor]


class UserMetricsDict(_UserMetricsRequired, total=False):
    """A user-metrics snapshot as cached."""

    active_users: list[str]
    """The users seen active, when the snapshot listed them."""
    timestamp: str
    """When upstream measured it, when it said."""


class WindowEntry(TypedDict):
    """One keyword's count in a window."""

    keyword: str
    count: int
    unique_authors: int
    window_start: str
    window_end: str


class CacheStats(TypedDict):
    """The cache's statistics: keys, and what Redis's ``INFO`` says."""

    total_keys: int
    """Every key of the database, this cache's or not (``DBSIZE``)."""
    trends_keys: int
    users_keys: int
    windows_keys: int
    used_memory: int
    used_memory_human: str
    connected_clients: int
    keyspace_hits: int
    keyspace_misses: int
    hit_ratio: float
    """hits / (hits + misses); 0 before the first lookup."""
    evicted_keys: int
    maxmemory: int
    maxmemory_policy: str
