"""The exceptions of cache_layer, by what the caller can do about them.

``CacheError`` is the base of all of them::

    CacheError
    ├── CacheUnavailableError   Redis unreachable, timed out, loading, read-only, out of
    │                           memory or refusing this user: retry later, nothing is wrong
    │                           with the call (also a ``ConnectionError``)
    ├── CacheRefusedError       Redis refused the command for its data (a key of another
    │                           type at one of the schema's keys): retrying cannot help
    └── InvalidInputError       the arguments break a rule: the message names the field
                                and the rule (also a ``ValueError``)

Writes raise them. Reads of a Redis that is unavailable return what the old service
returned instead (an empty list, an empty dict or ``None``) and log a warning under the
logger ``cache_layer``.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CacheRefusedError",
    "CacheUnavailableError",
    "InvalidInputError",
]


class CacheError(Exception):
    """Any error of the cache."""


class CacheUnavailableError(CacheError, ConnectionError):
    """Redis cannot take the call now; the same call may succeed later."""


class CacheRefusedError(CacheError):
    """Redis refused the command for its data; the same call cannot succeed."""


class InvalidInputError(CacheError, ValueError):
    """An argument breaks a rule; the message names the field and the rule."""
