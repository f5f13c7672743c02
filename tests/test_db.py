"""The unit of work in app/db.py: SERIALIZABLE, commit once, retry 40001/40P01 from the start."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import errors

from app import db as appdb
from app.db import (
    BACKOFF_FIRST_SECONDS,
    BACKOFF_MAX_SECONDS,
    RetriesExhausted,
    backoff_seconds,
    run_transaction,
)
from app.pgcluster import Cluster
from tests.conftest import ScratchDatabase

RETRYABLE_ERRORS = [
    pytest.param(errors.SerializationFailure, id="serialization_failure"),
    pytest.param(errors.DeadlockDetected, id="deadlock_detected"),
]
BARRIER_TIMEOUT_SECONDS = 10


@pytest.fixture
def conn(pg_cluster: Cluster) -> Iterator[psycopg.Connection]:
    """A non-autocommit connection, as the application's pool hands them out. For units of work
    that touch no table, so it skips the cost of a scratch database."""
    with psycopg.connect(pg_cluster.conninfo(), autocommit=False) as connection:
        yield connection


@pytest.fixture
def db_conn(db: ScratchDatabase) -> Iterator[psycopg.Connection]:
    """A non-autocommit connection to this test's scratch database."""
    with db.connect(autocommit=False) as connection:
        yield connection


@pytest.fixture
def scratch_table(admin: psycopg.Connection) -> str:
    admin.execute("CREATE TABLE scratch (attempt int NOT NULL)")
    return "scratch"


class Recorder:
    """Stand-ins for `sleep` and `on_retry` that remember how they were called."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, Exception]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, attempt: int, error: Exception) -> None:
        self.retries.append((attempt, error))


def failing_then(
    raised: list[Exception], result: object
) -> tuple[Callable[[psycopg.Connection], object], list[int]]:
    """A unit of work that raises each of `raised` in turn, then returns `result`."""
    calls: list[int] = []

    def work(conn: psycopg.Connection) -> object:
        calls.append(len(calls) + 1)
        if len(calls) <= len(raised):
            raise raised[len(calls) - 1]
        return result

    return work, calls


def count_rows(db: ScratchDatabase, query: str) -> int:
    with db.connect() as other:
        row = other.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# Retrying ------------------------------------------------------------------------------------


@pytest.mark.parametrize("error_class", RETRYABLE_ERRORS)
def test_retries_a_retryable_error_then_returns_the_result(
    conn: psycopg.Connection, error_class: type[psycopg.Error]
) -> None:
    work, calls = failing_then([error_class("first"), error_class("second")], "done")
    recorder = Recorder()

    result = run_transaction(conn, work, sleep=recorder.sleep)

    assert result == "done"
    assert calls == [1, 2, 3]
    assert len(recorder.sleeps) == 2


def test_on_retry_is_called_with_attempt_numbers_1_2_3_and_each_error(
    conn: psycopg.Connection,
) -> None:
    raised: list[Exception] = [
        errors.SerializationFailure("one"),
        errors.DeadlockDetected("two"),
        errors.SerializationFailure("three"),
    ]
    work, _ = failing_then(raised, 42)
    recorder = Recorder()

    assert run_transaction(conn, work, on_retry=recorder.on_retry, sleep=recorder.sleep) == 42

    assert [attempt for attempt, _ in recorder.retries] == [1, 2, 3]
    assert all(seen is sent for (_, seen), sent in zip(recorder.retries, raised, strict=True))


def test_sleeps_a_jittered_backoff_between_attempts(conn: psycopg.Connection) -> None:
    work, _ = failing_then([errors.SerializationFailure(str(n)) for n in range(6)], None)
    recorder = Recorder()

    run_transaction(conn, work, sleep=recorder.sleep)

    assert len(recorder.sleeps) == 6
    # Retry n waits at most the ceiling of attempt n (whether attempts count from 0 or 1).
    for retry, seconds in enumerate(recorder.sleeps, start=1):
        assert 0 <= seconds <= min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**retry)


@pytest.mark.parametrize("error_class", RETRYABLE_ERRORS)
@pytest.mark.parametrize("attempts_max", [1, 3])
def test_gives_up_after_attempts_max_attempts_with_retries_exhausted(
    conn: psycopg.Connection, error_class: type[psycopg.Error], attempts_max: int
) -> None:
    raised = [error_class(f"attempt {n}") for n in range(1, attempts_max + 2)]
    work, calls = failing_then(raised, "never")
    recorder = Recorder()

    with pytest.raises(RetriesExhausted) as caught:
        run_transaction(
            conn,
            work,
            attempts_max=attempts_max,
            on_retry=recorder.on_retry,
            sleep=recorder.sleep,
        )

    assert calls == list(range(1, attempts_max + 1))
    assert caught.value.attempts == attempts_max
    assert caught.value.last_error is raised[attempts_max - 1]
    assert caught.value.__cause__ is raised[attempts_max - 1]
    assert [attempt for attempt, _ in recorder.retries] == list(range(1, attempts_max))
    assert len(recorder.sleeps) == attempts_max - 1


def test_default_attempts_max_is_attempts_max_constant(conn: psycopg.Connection) -> None:
    raised = [errors.SerializationFailure(str(n)) for n in range(appdb.ATTEMPTS_MAX + 1)]
    work, calls = failing_then(raised, "never")

    with pytest.raises(RetriesExhausted) as caught:
        run_transaction(conn, work, sleep=lambda _: None)

    assert len(calls) == appdb.ATTEMPTS_MAX
    assert caught.value.attempts == appdb.ATTEMPTS_MAX


@pytest.mark.parametrize("attempts_max", [0, -1])
def test_refuses_attempts_max_below_one_without_running_the_work(
    conn: psycopg.Connection, attempts_max: int
) -> None:
    work, calls = failing_then([], "never")

    with pytest.raises(ValueError, match="attempts_max"):
        run_transaction(conn, work, attempts_max=attempts_max, sleep=lambda _: None)

    assert calls == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(errors.UniqueViolation("duplicate key"), id="unique_violation"),
        pytest.param(errors.QueryCanceled("canceled"), id="query_canceled"),
        pytest.param(ValueError("not a database error"), id="value_error"),
    ],
)
def test_does_not_retry_other_errors_runs_once_and_propagates(
    conn: psycopg.Connection, error: Exception
) -> None:
    work, calls = failing_then([error], "never")
    recorder = Recorder()

    with pytest.raises(type(error)) as caught:
        run_transaction(conn, work, on_retry=recorder.on_retry, sleep=recorder.sleep)

    assert caught.value is error
    assert calls == [1]
    assert recorder.retries == []
    assert recorder.sleeps == []


# The transaction -----------------------------------------------------------------------------


def isolation_of_the_transaction(c: psycopg.Connection) -> str:
    row = c.execute("SHOW transaction_isolation").fetchone()
    assert row is not None
    return str(row[0])


def test_runs_the_work_at_serializable_isolation_by_default(conn: psycopg.Connection) -> None:
    assert run_transaction(conn, isolation_of_the_transaction) == "serializable"


def test_runs_the_work_at_the_isolation_asked_for(conn: psycopg.Connection) -> None:
    isolation = psycopg.IsolationLevel.READ_COMMITTED

    assert run_transaction(conn, isolation_of_the_transaction, isolation=isolation) == (
        "read committed"
    )


def test_commits_the_work_so_other_connections_see_it(
    db: ScratchDatabase, db_conn: psycopg.Connection, scratch_table: str
) -> None:
    run_transaction(db_conn, lambda c: c.execute("INSERT INTO scratch VALUES (1)"))

    assert db_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert count_rows(db, "SELECT count(*) FROM scratch") == 1


def test_rolls_back_each_failed_attempt_before_retrying(
    db: ScratchDatabase, db_conn: psycopg.Connection, scratch_table: str
) -> None:
    attempts: list[int] = []

    def work(c: psycopg.Connection) -> None:
        attempts.append(len(attempts) + 1)
        c.execute("INSERT INTO scratch VALUES (%s)", (len(attempts),))
        # What this attempt sees must be its own row only, not the rolled-back ones before it.
        seen = c.execute("SELECT array_agg(attempt ORDER BY attempt) FROM scratch").fetchone()
        assert seen == ([len(attempts)],)
        if len(attempts) < 3:
            raise errors.SerializationFailure("conflict")

    run_transaction(db_conn, work, sleep=lambda _: None)

    assert attempts == [1, 2, 3]
    with db.connect() as other:
        assert other.execute("SELECT attempt FROM scratch").fetchall() == [(3,)]


def test_rolls_back_the_work_when_a_non_retryable_error_propagates(
    db: ScratchDatabase, db_conn: psycopg.Connection, scratch_table: str
) -> None:
    def work(c: psycopg.Connection) -> None:
        c.execute("INSERT INTO scratch VALUES (1)")
        raise ValueError("refused after writing")

    with pytest.raises(ValueError, match="refused after writing"):
        run_transaction(db_conn, work)

    assert db_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert count_rows(db, "SELECT count(*) FROM scratch") == 0
    # The connection is still usable for the next unit of work.
    run_transaction(db_conn, lambda c: c.execute("INSERT INTO scratch VALUES (2)"))
    assert count_rows(db, "SELECT count(*) FROM scratch") == 1


def test_rolls_back_the_last_attempt_when_retries_are_exhausted(
    db: ScratchDatabase, db_conn: psycopg.Connection, scratch_table: str
) -> None:
    def work(c: psycopg.Connection) -> None:
        c.execute("INSERT INTO scratch VALUES (1)")
        raise errors.DeadlockDetected("deadlock")

    with pytest.raises(RetriesExhausted):
        run_transaction(db_conn, work, attempts_max=2, sleep=lambda _: None)

    assert count_rows(db, "SELECT count(*) FROM scratch") == 0


# Backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 6, 7, 10, 30])
def test_backoff_stays_within_zero_and_the_capped_exponential_ceiling(attempt: int) -> None:
    rng = random.Random(20240601 + attempt)
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)

    samples = [backoff_seconds(attempt, rng) for _ in range(500)]

    assert all(0 <= seconds <= ceiling for seconds in samples)
    # Full jitter: spread over the whole range, not pinned to either end.
    assert min(samples) < 0.1 * ceiling
    assert max(samples) > 0.9 * ceiling


def test_backoff_never_exceeds_the_maximum_however_many_attempts() -> None:
    rng = random.Random(7)
    samples = [backoff_seconds(attempt, rng) for attempt in range(64) for _ in range(20)]

    assert max(samples) <= BACKOFF_MAX_SECONDS
    assert max(samples) > 0.9 * BACKOFF_MAX_SECONDS


def test_backoff_is_reproducible_from_a_seeded_rng() -> None:
    first = [backoff_seconds(n, random.Random(99)) for n in range(10)]
    second = [backoff_seconds(n, random.Random(99)) for n in range(10)]

    assert first == second


# Real conflicts ------------------------------------------------------------------------------


def run_concurrently(
    db: ScratchDatabase, work: Callable[[psycopg.Connection, int], None], workers: int
) -> list[int]:
    """Runs `work(conn, worker)` in `workers` threads, one connection each, through
    run_transaction; returns the attempt numbers passed to on_retry (all threads)."""
    retries: list[int] = []
    lock = threading.Lock()

    def on_retry(attempt: int, error: Exception) -> None:
        assert isinstance(error, errors.SerializationFailure | errors.DeadlockDetected)
        with lock:
            retries.append(attempt)

    def worker(number: int) -> None:
        with db.connect(autocommit=False) as connection:
            run_transaction(connection, lambda c: work(c, number), on_retry=on_retry)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(worker, n) for n in range(workers)]:
            future.result()
    return retries


def test_real_lost_update_conflict_is_retried_to_the_serial_result(
    db: ScratchDatabase, admin: psycopg.Connection
) -> None:
    admin.execute("CREATE TABLE counter (id int PRIMARY KEY, value int NOT NULL)")
    admin.execute("INSERT INTO counter VALUES (1, 0)")
    barrier = threading.Barrier(2)
    attempts = [0, 0]

    def increment(c: psycopg.Connection, worker: int) -> None:
        attempts[worker] += 1
        row = c.execute("SELECT value FROM counter WHERE id = 1").fetchone()
        assert row is not None
        if attempts[worker] == 1:
            barrier.wait(BARRIER_TIMEOUT_SECONDS)  # both have read before either writes
        c.execute("UPDATE counter SET value = %s WHERE id = 1", (row[0] + 1,))

    retries = run_concurrently(db, increment, workers=2)

    assert retries, "the two read-then-write transactions should have conflicted"
    assert sum(attempts) == 2 + len(retries)
    assert admin.execute("SELECT value FROM counter").fetchall() == [(2,)]


def test_real_write_skew_conflict_is_retried_to_the_serial_result(
    db: ScratchDatabase, admin: psycopg.Connection
) -> None:
    # Each transaction reads both rows and writes a different one: no row lock conflicts, only
    # serializable snapshot isolation notices that neither serial order gives {1, 1}.
    admin.execute("CREATE TABLE slot (id int PRIMARY KEY, value int NOT NULL)")
    admin.execute("INSERT INTO slot VALUES (0, 0), (1, 0)")
    barrier = threading.Barrier(2)
    attempts = [0, 0]

    def write_sum_plus_one(c: psycopg.Connection, worker: int) -> None:
        attempts[worker] += 1
        row = c.execute("SELECT sum(value) FROM slot").fetchone()
        assert row is not None
        if attempts[worker] == 1:
            barrier.wait(BARRIER_TIMEOUT_SECONDS)  # both have read before either writes
        c.execute("UPDATE slot SET value = %s WHERE id = %s", (row[0] + 1, worker))

    retries = run_concurrently(db, write_sum_plus_one, workers=2)

    assert retries, "the write skew should have been refused with a serialization failure"
    assert sum(attempts) == 2 + len(retries)
    values = [value for (value,) in admin.execute("SELECT value FROM slot ORDER BY id")]
    assert sorted(values) == [1, 2]
