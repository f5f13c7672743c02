"""Benchmarks, outside the test suite: `exchange bench ledger`.

Each run starts a throwaway cluster with durable settings (fsync and synchronous_commit on, as
in production), measures a pgbench TPC-B-like baseline and the workload on the same cluster,
alternating, and reports medians and the ratio to the baseline: the disk's fsync rate dominates
both and varies from minute to minute, so only the ratio carries over between machines.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg

from app import migrate
from app.db import run_transaction
from app.ledger import service
from app.ledger.errors import LedgerError
from app.pgcluster import PORT, SUPERUSER, Cluster
from app.tenancy import keys
from app.tenancy.context import act_for

DBNAME = "bench"
BENCH_TENANT = "bench"
ASSET = "USD"
FUNDING = Decimal("1000000.00")


@dataclass(frozen=True)
class Measurement:
    operations: int
    operations_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    refused: int
    retries: int


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def pgbench_tps(cluster: Cluster, connections: int, seconds: int) -> float:
    """TPC-B-like transactions per second of `pgbench` on the cluster's `postgres` database."""
    common = ["-h", str(cluster.socket_dir), "-p", str(PORT), "-U", SUPERUSER, "postgres"]
    pgbench = str(cluster.bindir / "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", "1", *common], check=True, capture_output=True)
    result = subprocess.run(
        [pgbench, "-c", str(connections), "-j", str(connections), "-T", str(seconds), *common],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}")
    return float(match.group(1))


def _fresh_database(cluster: Cluster, dbname: str) -> None:
    """An empty database of that name (dropping an earlier run's), migrated to head."""
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    migrate.upgrade(cluster.url(dbname))


def _create_bench_tenant(conn: psycopg.Connection) -> None:
    """The broker that owns every benchmark customer; `conn` acts for it from now on."""
    act_for(conn, keys.create_tenant(conn, BENCH_TENANT), transaction_only=False)


def _bench_tenant_id(cluster: Cluster, dbname: str) -> int:
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        row = conn.execute("SELECT id FROM tenancy.tenant WHERE name = %s", (BENCH_TENANT,))
        found = row.fetchone()
    assert found is not None, "the benchmark database has no bench tenant"
    return int(found[0])


def prepare_ledger(cluster: Cluster, customers: int, dbname: str = DBNAME) -> list[int]:
    """A new migrated database with one asset and `customers` well-funded customers."""
    _fresh_database(cluster, dbname)
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        _create_bench_tenant(conn)
        service.create_asset(conn, ASSET, 2)
        ids = [service.create_customer(conn, f"bench-{n}") for n in range(customers)]
        for customer_id in ids:
            service.deposit(conn, customer_id, ASSET, FUNDING, "funding")
    return ids


def _run_clients(
    connections: int,
    seconds: float,
    client: Callable[[int, Callable[[], object], Callable[[], bool]], None],
) -> float:
    """Runs `client(number, ready, running)` in `connections` threads: each connects, calls
    `ready()`, and works while `running()`; the clock starts when all are ready. Returns the
    elapsed seconds."""
    barrier = threading.Barrier(connections + 1)
    deadline: list[float] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            client(number, barrier.wait, lambda: time.monotonic() < deadline[0])
        except BaseException as error:  # reported by the caller, not lost in a thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    deadline.append(time.monotonic() + seconds)
    started = time.monotonic()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: raised below
        barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def ledger_transfers(
    cluster: Cluster,
    customer_ids: list[int],
    connections: int,
    seconds: float,
    seed: int,
    dbname: str = DBNAME,
) -> Measurement:
    """Random transfers between customers, one per transaction, from `connections` threads."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    refused = [0] * connections
    retries = [0] * connections
    tenant_id = _bench_tenant_id(cluster, dbname)

    def worker(number: int, ready: Callable[[], object], running: Callable[[], bool]) -> None:
        rng = random.Random(seed * 1000 + number)

        def count_retry(attempt: int, error: Exception) -> None:
            retries[number] += 1

        with psycopg.connect(cluster.conninfo(dbname, "exchange_app"), autocommit=True) as conn:
            act_for(conn, tenant_id, transaction_only=False)
            ready()
            sequence = 0
            while running():
                source, target = rng.sample(customer_ids, 2)
                amount = Decimal(rng.randint(1, 10_000)).scaleb(-2)
                key = f"bench-{seed}-{number}-{sequence}"
                sequence += 1
                started = time.perf_counter()
                try:
                    run_transaction(
                        conn,
                        functools.partial(
                            service.transfer,
                            from_customer_id=source,
                            to_customer_id=target,
                            asset=ASSET,
                            amount=amount,
                            idempotency_key=key,
                        ),
                        isolation=service.POSTING_ISOLATION,
                        on_retry=count_retry,
                    )
                except LedgerError:
                    refused[number] += 1
                latencies[number].append((time.perf_counter() - started) * 1000)

    elapsed = _run_clients(connections, seconds, worker)
    everything = sorted(value for per_thread in latencies for value in per_thread)
    return Measurement(
        operations=len(everything),
        operations_per_second=len(everything) / elapsed,
        latency_p50_ms=_percentile(everything, 0.50),
        latency_p99_ms=_percentile(everything, 0.99),
        latency_max_ms=everything[-1],
        refused=sum(refused),
        retries=sum(retries),
    )


def bench_ledger(connections: int, seconds: int, runs: int, customers: int, seed: int) -> str:
    base = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster")  # PostgreSQL defaults: fsync and synchronous_commit on
    lines = [
        f"ledger transfers vs pgbench TPC-B, {connections} connections, {seconds} s x {runs} runs,"
        f" {customers} customers, seed {seed}, PostgreSQL at {cluster.bindir}"
    ]
    try:
        with cluster.session():
            customer_ids = prepare_ledger(cluster, customers)
            baselines, measurements = [], []
            for run in range(runs):
                baselines.append(pgbench_tps(cluster, connections, seconds))
                measurements.append(
                    ledger_transfers(cluster, customer_ids, connections, seconds, seed + run)
                )
                m = measurements[-1]
                lines.append(
                    f"run {run + 1}: pgbench {baselines[-1]:.0f} tps; transfers"
                    f" {m.operations_per_second:.0f}/s (p50 {m.latency_p50_ms:.1f} ms,"
                    f" p99 {m.latency_p99_ms:.1f} ms, max {m.latency_max_ms:.1f} ms,"
                    f" refused {m.refused}, retries {m.retries})"
                )
            ratios = [
                m.operations_per_second / b for m, b in zip(measurements, baselines, strict=True)
            ]
            lines.append(
                f"median: pgbench {statistics.median(baselines):.0f} tps; transfers"
                f" {statistics.median(m.operations_per_second for m in measurements):.0f}/s;"
                f" ratio {statistics.median(ratios):.2f}"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(lines)


# The matching engine -----------------------------------------------------------------------

ENGINE_ASSETS = (("BTC", 8), ("ETH", 8), ("SOL", 8), ("ADA", 8), ("USD", 6))
ENGINE_FUNDING = Decimal("1000000000")
ENGINE_MID_PRICE = 1000  # in ticks of 0.01: 10.00 USD


def prepare_engine(
    cluster: Cluster, instruments_count: int, accounts: int, dbname: str = DBNAME
) -> tuple[list[str], list[int]]:
    """A new migrated database with `instruments_count` markets X-USD and funded accounts."""
    from app.trading import instruments

    _fresh_database(cluster, dbname)
    bases = [code for code, _ in ENGINE_ASSETS[:-1]][:instruments_count]
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        _create_bench_tenant(conn)
        for code, scale in ENGINE_ASSETS:
            service.create_asset(conn, code, scale)
        symbols = [
            instruments.create_instrument(
                conn,
                base,
                "USD",
                tick_size=Decimal("0.01"),
                lot_size=Decimal("0.001"),
                maker_fee_rate=Decimal("0.001"),
                taker_fee_rate=Decimal("0.002"),
            ).symbol
            for base in bases
        ]
        ids = [service.create_customer(conn, f"bench-{n}") for n in range(accounts)]
        for account in ids:
            for code in [*bases, "USD"]:
                service.deposit(conn, account, code, ENGINE_FUNDING, f"funding-{code}")
    return symbols, ids


class OrderFlow:
    """A seeded stream of commands for one client: limit orders around a fixed mid so that about
    half of them cross, cancels of its own earlier orders, some IOC and market orders."""

    def __init__(self, rng: random.Random, client: str, accounts: list[int]) -> None:
        self.rng = rng
        self.client = client  # prefixes its client_order_ids, which must be unique
        self.accounts = accounts
        self.sequence = 0
        self.resting: list[tuple[int, str]] = []

    def next(self) -> object:
        from app.trading.commands import Cancel, Place

        rng = self.rng
        roll = rng.random()
        if roll < 0.25 and self.resting:
            account, client_order_id = self.resting.pop(rng.randrange(len(self.resting)))
            return Cancel(account, client_order_id)
        self.sequence += 1
        account = rng.choice(self.accounts)
        client_order_id = f"{self.client}-{self.sequence}"
        side = rng.choice(("buy", "sell"))
        quantity = Decimal(rng.randint(1, 1000)).scaleb(-3)
        if roll < 0.30:
            return Place(account, client_order_id, side, "market", quantity)
        ticks = ENGINE_MID_PRICE + rng.randint(-20, 20) * (1 if side == "sell" else -1)
        # A buy above the mid or a sell below it crosses: about half of the orders.
        ticks = ENGINE_MID_PRICE * 2 - ticks if rng.random() < 0.5 else ticks
        time_in_force = "IOC" if roll < 0.40 else "GTC"
        if time_in_force == "GTC":  # what a cancel may still find open
            self.resting.append((account, client_order_id))
            if len(self.resting) > 200:
                self.resting.pop(0)
        return Place(
            account,
            client_order_id,
            side,
            "limit",
            quantity,
            Decimal(ticks).scaleb(-2),
            time_in_force=time_in_force,
        )


@dataclass(frozen=True)
class EngineMeasurement:
    commands: int
    commands_per_second: float
    orders_per_second: float  # placements accepted
    fills_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    refused: int
    retries: int
    batches: int


def engine_orders(
    cluster: Cluster,
    symbols: list[str],
    account_ids: list[int],
    connections: int,
    batch_size: int,
    seconds: float,
    seed: int,
    dbname: str = DBNAME,
) -> EngineMeasurement:
    """`connections` clients, each sending batches of `batch_size` commands to the instruments in
    turn (client n starts at instrument n); each client trades its own slice of the accounts."""
    from app.trading import engine
    from app.trading.commands import Place

    latencies: list[list[float]] = [[] for _ in range(connections)]
    fills = [0] * connections
    placed = [0] * connections
    refused = [0] * connections
    retries = [0] * connections
    batches = [0] * connections
    tenant_id = _bench_tenant_id(cluster, dbname)

    def worker(number: int, ready: Callable[[], object], running: Callable[[], bool]) -> None:
        rng = random.Random(seed * 1000 + number)
        mine = account_ids[number::connections] or account_ids
        flow = OrderFlow(rng, f"s{seed}c{number}", mine)

        def count_retry(attempt: int, error: Exception) -> None:
            retries[number] += 1

        with psycopg.connect(cluster.conninfo(dbname, "exchange_app"), autocommit=True) as conn:
            act_for(conn, tenant_id, transaction_only=False)
            ready()
            turn = number
            while running():
                symbol = symbols[turn % len(symbols)]
                turn += 1
                commands = [flow.next() for _ in range(batch_size)]
                started = time.perf_counter()
                results = engine.execute(conn, symbol, commands, on_retry=count_retry)  # type: ignore[arg-type]
                elapsed_ms = (time.perf_counter() - started) * 1000
                batches[number] += 1
                latencies[number].extend([elapsed_ms] * len(results))
                for command, result in zip(commands, results, strict=True):
                    if result.code is not None:
                        refused[number] += 1
                    elif isinstance(command, Place):
                        placed[number] += 1
                    fills[number] += len(result.trades)

    elapsed = _run_clients(connections, seconds, worker)
    everything = sorted(value for per_thread in latencies for value in per_thread)
    return EngineMeasurement(
        commands=len(everything),
        commands_per_second=len(everything) / elapsed,
        orders_per_second=sum(placed) / elapsed,
        fills_per_second=sum(fills) / elapsed,
        latency_p50_ms=_percentile(everything, 0.50),
        latency_p99_ms=_percentile(everything, 0.99),
        latency_max_ms=everything[-1],
        refused=sum(refused),
        retries=sum(retries),
        batches=sum(batches),
    )


def warm_up(
    cluster: Cluster,
    symbols: list[str],
    account_ids: list[int],
    connections: int,
    batch_size: int,
    seed: int,
    dbname: str = DBNAME,
) -> None:
    """Trade for a few seconds, then ANALYZE: a live exchange's tables are not empty, and its
    planner statistics say so. (PL/pgSQL keeps a generic plan made from the statistics of the
    moment; made from empty tables, it scans them.)"""
    engine_orders(cluster, symbols, account_ids, connections, batch_size, 3, seed, dbname)
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        conn.execute("ANALYZE")


def bench_engine(
    connections: int,
    batch_size: int,
    instruments_count: int,
    seconds: int,
    runs: int,
    accounts: int,
    seed: int,
    deadlock_timeout: str = "20ms",
) -> str:
    base = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    base.chmod(0o755)
    # PostgreSQL defaults (fsync and synchronous_commit on) but for deadlock_timeout: two
    # instruments settling on the same accounts can deadlock, and the default 1 s before
    # PostgreSQL looks for a deadlock would be the latency of every one of them.
    cluster = Cluster(base / "cluster", settings={"deadlock_timeout": deadlock_timeout})
    lines = [
        f"engine vs pgbench TPC-B: {connections} connections, batch {batch_size},"
        f" {instruments_count} instrument(s), {accounts} accounts, {seconds} s x {runs} runs,"
        f" seed {seed}, deadlock_timeout {deadlock_timeout}, PostgreSQL at {cluster.bindir}"
    ]
    try:
        with cluster.session():
            baselines, measurements = [], []
            for run in range(runs):
                symbols, account_ids = prepare_engine(cluster, instruments_count, accounts)
                warm_up(cluster, symbols, account_ids, connections, batch_size, seed + 1000 + run)
                baselines.append(pgbench_tps(cluster, connections, seconds))
                m = engine_orders(
                    cluster, symbols, account_ids, connections, batch_size, seconds, seed + run
                )
                measurements.append(m)
                lines.append(
                    f"run {run + 1}: pgbench {baselines[-1]:.0f} tps; engine"
                    f" {m.commands_per_second:.0f} commands/s ({m.orders_per_second:.0f} orders"
                    f" placed/s), {m.fills_per_second:.0f} fills/s"
                    f" (p50 {m.latency_p50_ms:.1f} ms, p99 {m.latency_p99_ms:.1f} ms,"
                    f" max {m.latency_max_ms:.1f} ms; refused {m.refused},"
                    f" retries {m.retries} in {m.batches} batches)"
                )
            ratios = [
                m.commands_per_second / b for m, b in zip(measurements, baselines, strict=True)
            ]
            lines.append(
                f"median: pgbench {statistics.median(baselines):.0f} tps; engine"
                f" {statistics.median(m.commands_per_second for m in measurements):.0f}"
                f" commands/s, {statistics.median(m.orders_per_second for m in measurements):.0f}"
                f" orders placed/s,"
                f" {statistics.median(m.fills_per_second for m in measurements):.0f}"
                f" fills/s; ratio (commands) {statistics.median(ratios):.2f}"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(lines)
