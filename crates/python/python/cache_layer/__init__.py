"""cache_layer: the cache of the Bluesky streaming pipeline, for the services that read
and write it from Python.

``CacheLayer`` offers the old ``CacheLayer`` service's API over cache-layer's own Rust
library: the daemon's validation, key schema, Lua scripts and version guards, so a
Python writer and the daemon never roll each other back. See docs/python.md.
"""

from __future__ import annotations

import atexit

from . import _cache_layer
from ._client import CacheLayer
from .errors import CacheError, CacheRefusedError, CacheUnavailableError, InvalidInputError
from .types import CacheStats, Contributor, TrendDetails, UserMetricsDict, WindowEntry

# The native module's tokio threads end before the interpreter finalizes: past that, a
# thread that still reached for the GIL would abort the process.
atexit.register(_cache_layer.shutdown)

__all__ = [
    "CacheError",
    "CacheLayer",
    "CacheRefusedError",
    "CacheStats",
    "CacheUnavailableError",
    "Contributor",
    "InvalidInputError",
    "TrendDetails",
    "UserMetricsDict",
    "WindowEntry",
]
