"""Order entry's gateway: concurrent commands for one instrument share engine calls, and each
request gets its own command's result once the batch has committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from app.api import gateway as gateway_module
from app.api.gateway import OrderGateway
from app.api.problems import Problem
from app.trading import engine
from app.trading.commands import Place, Result
from app.trading.errors import TradingError
from tests.conftest import APP_ROLE, ScratchDatabase, create_tenant
from tests.trading.helpers import create_market, funded_account

THREADS = 16


def wait_for_lock_waiter(conn: psycopg.Connection) -> None:
    """Until a session of the application role waits for a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE usename = 'exchange_app' AND wait_event_type = 'Lock'"
            " AND datname = current_database() AND query LIKE '%await_turn%'"
        ).fetchone()
        if waiting is not None and waiting[0] > 0:
            return
        time.sleep(0.01)
    raise AssertionError("no session waited for the instrument")


def wait_for_queued(gateway: OrderGateway, count: int) -> None:
    """Until `count` commands wait in the lane's queue (its thread holds the first one)."""
    deadline = time.monotonic() + 10
    while gateway._lanes["BTC-USD"].queue.qsize() < count:
        assert time.monotonic() < deadline, "the commands never reached the lane's queue"
        time.sleep(0.01)


@pytest.fixture
def pool(db: ScratchDatabase) -> Iterator[ConnectionPool]:
    with ConnectionPool(db.conninfo(APP_ROLE), min_size=1, max_size=4) as opened:
        yield opened


def order(account: int, number: int, price: str = "100") -> Place:
    return Place(account, f"o{number}", "buy", "limit", Decimal("0.01"), Decimal(price))


def submit_all(gateway: OrderGateway, tenant: int, commands: list[Place]) -> list[Result]:
    results: list[Result | None] = [None] * len(commands)
    barrier = threading.Barrier(len(commands))

    def submit(index: int) -> None:
        barrier.wait(10)
        results[index] = gateway.submit("BTC-USD", commands[index], tenant)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(commands))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def count_engine_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch the gateway sends to the engine, from now on."""
    calls: list[int] = []
    real_call = engine.call

    def counted(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append(len(args[2]))
        return real_call(*args, **kwargs)

    monkeypatch.setattr(engine, "call", counted)
    return calls


@pytest.fixture
def account(admin: psycopg.Connection, app_conn: psycopg.Connection) -> int:
    create_market(admin)
    return funded_account(app_conn, USD="100000")


def test_concurrent_commands_share_engine_calls_and_each_gets_its_own_result(
    pool: ConnectionPool, tenant: int, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_engine_calls(monkeypatch)
    gateway = OrderGateway(pool, window_seconds=0.05, batch_size_max=100, queue_max=100)
    try:
        results = submit_all(gateway, tenant, [order(account, n) for n in range(THREADS)])
    finally:
        gateway.close()

    assert [r.order.client_order_id for r in results if r.order] == [
        f"o{n}" for n in range(THREADS)
    ]
    assert sum(calls) == THREADS
    assert len(calls) < THREADS  # batched


def test_commands_that_arrive_while_the_lane_waits_for_the_instrument_join_its_batch(
    db: ScratchDatabase,
    pool: ConnectionPool,
    tenant: int,
    account: int,
    admin: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_engine_calls(monkeypatch)
    gateway = OrderGateway(pool, window_seconds=0.001, batch_size_max=100, queue_max=100)
    results: list[Result] = []

    def submit(number: int) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: results.append(gateway.submit("BTC-USD", order(account, number), tenant))
        )
        thread.start()
        return thread

    try:
        with db.connect(autocommit=False) as other_process:  # its batch holds the instrument
            other_process.execute(
                "SELECT FROM trading.instrument WHERE symbol = 'BTC-USD' FOR UPDATE"
            )
            threads = [submit(0)]
            wait_for_lock_waiter(admin)
            threads += [submit(n) for n in range(1, 4)]
            wait_for_queued(gateway, 3)
            other_process.rollback()
        for thread in threads:
            thread.join()
    finally:
        gateway.close()

    assert calls == [4]
    assert sorted(r.order.client_order_id for r in results if r.order) == ["o0", "o1", "o2", "o3"]


def test_a_gateway_closed_while_its_lane_waits_for_the_instrument_still_applies_that_batch(
    db: ScratchDatabase, pool: ConnectionPool, tenant: int, account: int, admin: psycopg.Connection
) -> None:
    gateway = OrderGateway(pool, window_seconds=0.001, batch_size_max=100, queue_max=100)
    results: list[Result] = []
    with db.connect(autocommit=False) as other_process:
        other_process.execute("SELECT FROM trading.instrument WHERE symbol = 'BTC-USD' FOR UPDATE")
        waiting = threading.Thread(
            target=lambda: results.append(gateway.submit("BTC-USD", order(account, 0), tenant))
        )
        waiting.start()
        wait_for_lock_waiter(admin)
        closing = threading.Thread(target=gateway.close)
        closing.start()
        other_process.rollback()
    waiting.join(10)
    closing.join(10)

    assert not closing.is_alive()
    assert [r.order.status for r in results if r.order] == ["new"]


def test_a_batch_retried_after_a_serialization_failure_answers_every_command_once(
    pool: ConnectionPool, tenant: int, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_call = engine.call
    failures = [psycopg.errors.SerializationFailure("injected")]

    def failing_once(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        answers = real_call(*args, **kwargs)
        if failures:
            raise failures.pop()  # after the engine's work: the retry must undo and redo it
        return answers

    monkeypatch.setattr(engine, "call", failing_once)
    gateway = OrderGateway(pool, window_seconds=0.05, batch_size_max=100, queue_max=100)
    try:
        results = submit_all(gateway, tenant, [order(account, n) for n in range(4)])
    finally:
        gateway.close()

    assert failures == []
    assert [r.order.client_order_id for r in results if r.order] == [f"o{n}" for n in range(4)]
    assert all(not r.replayed for r in results)


def test_a_turn_on_an_unknown_instrument_is_refused(app_conn: psycopg.Connection) -> None:
    with pytest.raises(TradingError) as refused, app_conn.transaction():
        engine.await_turn(app_conn, "NOPE-USD")

    assert refused.value.code == "unknown_instrument"


def test_a_refused_command_leaves_the_rest_of_its_batch_applied(
    pool: ConnectionPool, tenant: int, account: int
) -> None:
    commands = [order(account, n, price="100.001" if n == 3 else "100") for n in range(8)]
    gateway = OrderGateway(pool, window_seconds=0.05, batch_size_max=100, queue_max=100)
    try:
        results = submit_all(gateway, tenant, commands)
    finally:
        gateway.close()

    assert [r.code for r in results] == [None] * 3 + ["invalid_tick_size"] + [None] * 4


def test_a_command_of_another_tenant_is_refused_without_touching_the_batch(
    db: ScratchDatabase, pool: ConnectionPool, tenant: int, account: int
) -> None:
    stranger = create_tenant(db)
    gateway = OrderGateway(pool, window_seconds=0.0, batch_size_max=100, queue_max=100)
    try:
        refused = gateway.submit("BTC-USD", order(account, 1), stranger)
        accepted = gateway.submit("BTC-USD", order(account, 2), tenant)
    finally:
        gateway.close()

    assert refused.code == "unknown_account"
    assert accepted.code is None


def test_a_closed_gateway_refuses_at_once(pool: ConnectionPool, tenant: int, account: int) -> None:
    gateway = OrderGateway(pool, window_seconds=0.0, batch_size_max=10, queue_max=10)
    gateway.submit("BTC-USD", order(account, 1), tenant)  # the lane exists
    gateway.close()

    with pytest.raises(Problem) as refused:
        gateway.submit("BTC-USD", order(account, 2), tenant)

    assert (refused.value.status, refused.value.code) == (503, "overloaded")


def test_no_answer_in_time_says_the_outcome_is_unknown_and_the_command_still_applies(
    pool: ConnectionPool, tenant: int, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "SUBMIT_TIMEOUT_SECONDS", 0.05)
    gateway = OrderGateway(pool, window_seconds=0.5, batch_size_max=10, queue_max=10)
    try:
        with pytest.raises(Problem) as unknown:
            gateway.submit("BTC-USD", order(account, 1), tenant)
    finally:
        gateway.close()  # finishes what is queued

    assert (unknown.value.status, unknown.value.code) == (503, "outcome_unknown")
    with pool.connection() as conn:
        placed = conn.execute(
            "SELECT trading.execute('BTC-USD', %s::jsonb)",
            (
                f'[{{"op": "cancel", "account": {account}, "client_order_id": "o1",'
                f' "tenant": {tenant}}}]',
            ),
        ).fetchone()
    assert placed is not None and placed[0][0]["order"]["status"] == "canceled"


def test_a_batch_size_beyond_the_engines_is_refused_up_front(pool: ConnectionPool) -> None:
    with pytest.raises(ValueError, match="batch_size_max"):
        OrderGateway(pool, window_seconds=0.0, batch_size_max=1001, queue_max=10)
