"""Per-key rate limits, on the `limits` library's moving window kept in process memory.

One limiter per process: `agentmeter serve` runs the OTLP receivers in their own worker
process and the API in the main one, so ingest keys are limited by the worker and API keys
by the API process, each exactly; with several `serve` replicas, each replica limits on
its own (a key gets the limit once per replica it reaches).
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class KeyRateLimiter:
    """At most `rate` requests per key (e.g. "100/second", "6000/minute"). Thread-safe."""

    def __init__(self, rate: str, *, scope: str) -> None:
        self._item: RateLimitItem = parse(rate)
        self._scope = scope
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, key: str) -> int | None:
        """Count one request of `key`: None when allowed, else whole seconds to wait (≥ 1)."""
        # The limiter's memory never holds a key itself, only a digest of it.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        if self._limiter.hit(self._item, self._scope, digest):
            return None
        reset = self._limiter.get_window_stats(self._item, self._scope, digest).reset_time
        return max(1, math.ceil(reset - time.time()))


def key_rate_limiter(rate: str, *, scope: str) -> KeyRateLimiter | None:
    """A limiter for `rate`, or None when `rate` is empty (limits off)."""
    return KeyRateLimiter(rate, scope=scope) if rate.strip() else None
