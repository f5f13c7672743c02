"""The HTTP order-entry benchmark drives a real `exchange serve` (its figures live in
docs/benchmarks.md)."""

from __future__ import annotations

import socket

import psycopg
import pytest

from app import cli, verify
from app.bench_api import api_server, http_orders, prepare_api, tree_cpu_seconds
from app.pgcluster import Cluster

DBNAME = "bench_api_smoke"


def test_api_benchmark_counts_answered_orders_and_keeps_every_invariant(
    pg_cluster: Cluster,
) -> None:
    symbols, accounts, key = prepare_api(pg_cluster, 1, accounts=8, dbname=DBNAME)

    with api_server(pg_cluster, DBNAME, workers=1) as server:
        measured = http_orders(
            server.port, key, symbols, accounts, connections=4, seconds=1.5, seed=3
        )
        assert tree_cpu_seconds(server.process.pid) > 0
    assert server.process.poll() is not None  # stopped with the block

    assert measured.orders_per_second > 0
    assert measured.latency_p50_ms <= measured.latency_p99_ms <= measured.latency_max_ms
    assert sum(measured.statuses.values()) == measured.requests
    # Only the cancels of orders that filled meanwhile may be refused (409 order_not_open).
    assert set(measured.statuses) <= {200, 201, 409}, measured.statuses
    with psycopg.connect(pg_cluster.conninfo(DBNAME)) as conn:
        row = conn.execute("SELECT count(*) FROM trading.orders").fetchone()
        assert row is not None
        assert row[0] >= round(measured.orders_per_second * measured.elapsed_seconds)
        assert list(verify.violations(conn)) == []


def test_serve_with_workers_gives_accepted_connections_tcp_nodelay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without it, each keep-alive answer of `exchange serve --workers N` waited ~40 ms for the
    client's delayed ACK (the benchmark measured 48 ms per request instead of 5)."""
    from uvicorn.config import Config

    monkeypatch.setattr(Config, "bind_socket", Config.bind_socket)  # undone after the test
    cli._listen_without_nagle()
    listener = Config("app.api.main:app_from_environment", host="127.0.0.1", port=0).bind_socket()
    listener.listen()  # as uvicorn's server does with it
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
