"""Per-key rate limiting of order entry: a token bucket per API key, in this process.

Each API process keeps its own buckets, so with N processes behind a load balancer a key may
send up to N times the configured rate (docs/api.md says so).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

BUCKETS_MAX = 100_000  # keys remembered; the idlest are forgotten beyond this


class RateLimiter:
    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate_per_second
        self._burst = burst
        self._clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, updated at)
        self._lock = threading.Lock()

    def acquire(self, key: object) -> float:
        """Take one token for `key`: 0 when allowed, else the seconds until a token is due."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self._burst), now))
            tokens = min(self._burst, tokens + (now - updated) * self._rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                self._forget_idlest()
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self._rate

    def _forget_idlest(self) -> None:
        if len(self._buckets) > BUCKETS_MAX:
            idlest = min(self._buckets, key=lambda k: self._buckets[k][1])
            del self._buckets[idlest]


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; never 0 for a refused request."""
    return str(max(1, math.ceil(seconds)))
