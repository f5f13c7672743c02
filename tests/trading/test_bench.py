"""The engine benchmark's building blocks, cheaply, on the test cluster (not a durable one):
`exchange bench engine` puts the same pieces together on a throwaway cluster with fsync on."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from app import verify
from app.bench import (
    ENGINE_FUNDING,
    ENGINE_MID_PRICE,
    OrderFlow,
    engine_orders,
    prepare_engine,
)
from app.pgcluster import Cluster
from app.trading.commands import Cancel, Place

DBNAME = "bench_engine_smoke"


@pytest.fixture
def bench_db(pg_cluster: Cluster) -> Iterator[str]:
    """The name of the benchmark's database, dropped afterwards (prepare_engine creates it)."""
    yield DBNAME
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')


def test_prepare_engine_creates_instruments_and_funded_accounts(
    pg_cluster: Cluster, bench_db: str
) -> None:
    symbols, accounts = prepare_engine(pg_cluster, 2, 4, dbname=bench_db)

    assert symbols == ["BTC-USD", "ETH-USD"]
    assert len(accounts) == len(set(accounts)) == 4
    with psycopg.connect(pg_cluster.conninfo(bench_db)) as conn:
        instruments = conn.execute(
            "SELECT symbol, status, tick_size, lot_size FROM trading.instrument ORDER BY symbol"
        ).fetchall()
        assert instruments == [
            ("BTC-USD", "trading", Decimal("0.01"), Decimal("0.001")),
            ("ETH-USD", "trading", Decimal("0.01"), Decimal("0.001")),
        ]
        balances = conn.execute(
            "SELECT customer_id, asset, balance FROM ledger.account"
            " WHERE bucket = 'available' ORDER BY customer_id, asset"
        ).fetchall()
        assert balances == [
            (account, asset, ENGINE_FUNDING)
            for account in sorted(accounts)
            for asset in ("BTC", "ETH", "USD")
        ]
        assert list(verify.violations(conn)) == []


def test_engine_orders_trade_and_keep_every_invariant(pg_cluster: Cluster, bench_db: str) -> None:
    symbols, accounts = prepare_engine(pg_cluster, 2, 4, dbname=bench_db)

    measured = engine_orders(
        pg_cluster,
        symbols,
        accounts,
        connections=2,
        batch_size=3,
        seconds=1,
        seed=7,
        dbname=bench_db,
    )

    assert measured.commands > 0
    assert measured.commands == 3 * measured.batches
    assert measured.fills_per_second > 0
    assert measured.refused < measured.commands
    assert measured.latency_p50_ms <= measured.latency_p99_ms <= measured.latency_max_ms
    with psycopg.connect(pg_cluster.conninfo(bench_db)) as conn:
        found = [(v.invariant.name, v.details) for v in verify.violations(conn)]
        assert found == []
        trades = conn.execute("SELECT count(*) FROM trading.trade").fetchone()
        assert trades is not None and trades[0] > 0
        # Every accepted command is one event; both instruments were traded.
        seqs = dict(conn.execute("SELECT symbol, seq FROM trading.instrument").fetchall())
        assert set(seqs) == set(symbols) and all(seq > 0 for seq in seqs.values())
        assert sum(seqs.values()) <= measured.commands - measured.refused


def flow(seed: int, client: str = "s1c0", accounts: tuple[int, ...] = (11, 12, 13)) -> list[object]:
    stream = OrderFlow(random.Random(seed), client, list(accounts))
    return [stream.next() for _ in range(500)]


def test_order_flow_is_determined_by_its_seed() -> None:
    assert flow(seed=3) == flow(seed=3)
    assert flow(seed=3) != flow(seed=4)
    assert flow(seed=3, client="s1c1") != flow(seed=3, client="s1c0")


def test_order_flow_mixes_limit_market_and_cancel_commands_of_its_own() -> None:
    commands = flow(seed=5)
    places = [c for c in commands if isinstance(c, Place)]
    cancels = [c for c in commands if isinstance(c, Cancel)]
    assert len(places) + len(cancels) == len(commands)

    assert {(p.type, p.time_in_force) for p in places} == {
        ("market", None),
        ("limit", "IOC"),
        ("limit", "GTC"),
    }
    assert {p.account for p in places} == {11, 12, 13}
    ids = [p.client_order_id for p in places]
    assert len(set(ids)) == len(ids) and all(i.startswith("s1c0-") for i in ids)
    # A cancel names one of the client's own earlier limit orders, at most once.
    limits = {(p.account, p.client_order_id) for p in places if p.type == "limit"}
    canceled = [(c.account, c.client_order_id) for c in cancels]
    assert cancels and set(canceled) <= limits and len(set(canceled)) == len(canceled)
    # Limit prices stay on the 0.01 tick within 20 ticks of the mid, quantities on the 0.001 lot.
    mid = Decimal(ENGINE_MID_PRICE).scaleb(-2)
    for p in places:
        assert p.quantity == p.quantity.quantize(Decimal("0.001")) and p.quantity > 0
        if p.price is not None:
            assert p.price == p.price.quantize(Decimal("0.01"))
            assert abs(p.price - mid) <= Decimal("0.20")
