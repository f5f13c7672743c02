"""The API's settings, from the environment (see README's configuration table)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiSettings:
    admin_token: str | None = None  # EXCHANGE_ADMIN_TOKEN; operators may also use admin keys
    # Order entry per API key: a token bucket refilled at `rate_per_second`, holding `burst`.
    order_rate_per_second: float = 200.0
    order_burst: int = 400
    # Order entry gathers the commands that arrive within this window into one engine call per
    # instrument, up to batch_size_max commands (bounded queue of queue_max per instrument).
    batch_window_seconds: float = 0.001
    batch_size_max: int = 100
    queue_max: int = 10_000
    pool_size_max: int = 20
    # An authenticated key is trusted this long before it is looked up again, so a revoked key
    # stops working within this many seconds.
    key_cache_seconds: float = 2.0

    @classmethod
    def from_environment(cls) -> ApiSettings:
        def number(name: str, default: float) -> float:
            value = os.environ.get(name)
            return float(value) if value else default

        defaults = cls()
        return cls(
            admin_token=os.environ.get("EXCHANGE_ADMIN_TOKEN") or None,
            order_rate_per_second=number(
                "EXCHANGE_ORDER_RATE_PER_SECOND", defaults.order_rate_per_second
            ),
            order_burst=int(number("EXCHANGE_ORDER_BURST", defaults.order_burst)),
            batch_window_seconds=number(
                "EXCHANGE_BATCH_WINDOW_SECONDS", defaults.batch_window_seconds
            ),
            batch_size_max=int(number("EXCHANGE_BATCH_SIZE_MAX", defaults.batch_size_max)),
            pool_size_max=int(number("EXCHANGE_POOL_SIZE_MAX", defaults.pool_size_max)),
        )
