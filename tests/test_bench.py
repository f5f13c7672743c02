"""The ledger benchmark measures real postings (its figures live in docs/benchmarks.md)."""

from __future__ import annotations

import psycopg

from app.bench import ledger_transfers, prepare_ledger
from app.ledger import invariants
from app.pgcluster import Cluster


def test_ledger_benchmark_counts_committed_transfers_and_keeps_the_ledger_valid(
    pg_cluster: Cluster,
) -> None:
    customers = prepare_ledger(pg_cluster, customers=4, dbname="bench_smoke")

    measured = ledger_transfers(
        pg_cluster, customers, connections=2, seconds=0.5, seed=7, dbname="bench_smoke"
    )

    with psycopg.connect(pg_cluster.conninfo("bench_smoke")) as conn:
        row = conn.execute("SELECT count(*) FROM ledger.journal WHERE kind = 'transfer'").fetchone()
        assert row == (measured.operations - measured.refused,)
        assert list(invariants.violations(conn)) == []
    assert measured.operations > 0
    assert measured.latency_p50_ms <= measured.latency_p99_ms <= measured.latency_max_ms
