"""The pipeline's message models, as its services import them (``shared.models``): what
the old service's callers pass to ``CacheLayer``, here for the tests and the old
README's examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class TrendAlert:
    keyword: str
    frequency: int
    growth_rate: float
    confidence_score: float
    window_start: datetime
    window_end: datetime
    sample_posts: list[str] = field(default_factory=list)
    unique_authors: int = 0
    rank: int = 1


@dataclass
class WindowedKeywordCount:
    keyword: str
    count: int
    window_start: datetime
    window_end: datetime
    unique_authors: int = 0
    normalized_keyword: str | None = None
