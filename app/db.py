"""Transactions: the one place that commits, and the retry of serialization failures.

Every command that moves money is idempotent, so a transaction that PostgreSQL aborted with a
serialization failure (40001) or a deadlock (40P01) can simply run again from the start.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors

T = TypeVar("T")

RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)
ATTEMPTS_MAX = 12
BACKOFF_FIRST_SECONDS = 0.001
BACKOFF_MAX_SECONDS = 0.1


class RetriesExhausted(RuntimeError):
    """A transaction kept failing with serialization errors and was given up."""

    def __init__(self, attempts: int, last_error: Exception) -> None:
        super().__init__(f"transaction gave up after {attempts} attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max, first * 2**attempt)], so retries spread apart."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
    return (rng or random).uniform(0, ceiling)


def run_transaction(
    conn: psycopg.Connection,
    work: Callable[[psycopg.Connection], T],
    *,
    isolation: psycopg.IsolationLevel = psycopg.IsolationLevel.SERIALIZABLE,
    attempts_max: int = ATTEMPTS_MAX,
    on_retry: Callable[[int, Exception], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `work` in a transaction (SERIALIZABLE unless told) and commit, retrying 40001 and 40P01.

    `conn` must not be inside a transaction. `work` must not commit; it runs again from the start
    on each attempt. Other errors roll back and propagate at once. `on_retry(attempt, error)` is
    called before each retry.
    """
    if attempts_max < 1:
        raise ValueError("attempts_max must be at least 1")
    conn.isolation_level = isolation
    for attempt in range(attempts_max):
        try:
            with conn.transaction():
                return work(conn)
        except RETRYABLE as error:
            if attempt + 1 == attempts_max:
                raise RetriesExhausted(attempts_max, error) from error
            if on_retry is not None:
                on_retry(attempt + 1, error)
            sleep(backoff_seconds(attempt))
    raise AssertionError("unreachable")
