"""`exchange bench api`: order entry over HTTP against the matching engine called directly.

Each run, on a throwaway durable cluster (as `exchange bench engine`): a fresh database with a
tenant, a broker key (scope trade), the instruments and funded accounts; a warm-up and ANALYZE;
then, in turn, the HTTP workload against `exchange serve --workers W` (a subprocess on
127.0.0.1, stopped after its phase, so that it takes no CPU in the others), the same order flow
through `trading.execute` directly from Python with as many commands in flight, and a pgbench
TPC-B baseline. Which of HTTP and engine goes first alternates from run to run (the second one
sees the first one's rows).

The load generator is bounded (C connections, each with one request in flight, for a fixed
time) and cheap: raw asyncio streams, HTTP/1.1 keep-alive, requests pre-formatted as bytes,
responses parsed only as far as needed (status line, Content-Length, and the order id of a
resting order, which a later cancel needs). It shares the two cores with the server and
PostgreSQL, so it measures its own CPU time, as it does the server's and PostgreSQL's (from
/proc), and reports the split.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg

from app.bench import (
    DBNAME,
    EngineMeasurement,
    OrderFlow,
    _bench_tenant_id,
    _percentile,
    engine_orders,
    pgbench_tps,
    prepare_engine,
    warm_up,
)
from app.pgcluster import Cluster
from app.tenancy import keys
from app.trading.commands import Cancel, Place

HOST = "127.0.0.1"
BATCH_SIZE_MAX = 100  # the gateway's default batch_size_max
PGBENCH_CONNECTIONS = 8  # as `exchange bench ledger`: a reference of the machine's state
SERVER_START_TIMEOUT_SECONDS = 60.0
SERVER_STOP_TIMEOUT_SECONDS = 20.0
REQUEST_TIMEOUT_SECONDS = 60.0
HTTP_WARM_UP_SECONDS = 2.0


# CPU time of process trees, from /proc -----------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU seconds of `root` and its live descendants, and of their reaped
    children. 0 when /proc cannot say (not Linux, or the process is gone)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _stat(int(entry))
            if fields is not None:
                stats[int(entry)] = fields
                children.setdefault(int(fields[1]), []).append(int(entry))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        fields = stats.get(pid)
        if fields is None:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        pending.extend(children.get(pid, ()))
    return total / _CLOCK_TICKS


def busy_cpu_seconds() -> float:
    """CPU seconds spent so far by the whole machine, all cores, outside idle and I/O wait."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    values = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / _CLOCK_TICKS


def postmaster_pid(cluster: Cluster, dbname: str) -> int:
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        fields = _stat(int(row[0]))  # while the backend lives
    return int(fields[1]) if fields is not None else 0


# Setup -------------------------------------------------------------------------------------


def prepare_api(
    cluster: Cluster, instruments_count: int, accounts: int, dbname: str = DBNAME
) -> tuple[list[str], list[int], str]:
    """prepare_engine's database (tenant 'bench', instruments, funded accounts) and an API key
    of that tenant with the scope trade."""
    symbols, account_ids = prepare_engine(cluster, instruments_count, accounts, dbname)
    tenant_id = _bench_tenant_id(cluster, dbname)
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        key = keys.create_key(conn, tenant_id, ["trade"])
    return symbols, account_ids, key.key


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int


def _health(port: int) -> int | None:
    """The status of GET /health, or None when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = conn.recv(64)
    except OSError:
        return None
    return int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else None


@contextlib.contextmanager
def api_server(
    cluster: Cluster, dbname: str, workers: int, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`exchange serve --workers N` on a free port of 127.0.0.1, connected as exchange_app, its
    order rate limit out of the way; stopped (SIGTERM, then SIGKILL of its process group) when
    the block ends, however it ends."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": cluster.url(dbname, "exchange_app"),
        "ADMIN_DATABASE_URL": cluster.url(dbname),
        "EXCHANGE_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "EXCHANGE_ORDER_RATE_PER_SECOND": "1000000000",
        "EXCHANGE_ORDER_BURST": "1000000000",
        **(extra_env or {}),
    }
    command = [
        sys.executable, "-m", "app.cli", "serve",
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
            while _health(port) != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"exchange serve did not become healthy:\n{output}")
                time.sleep(0.1)
            yield Server(process, port)
        except BaseException as error:  # the server's own account of it, if it had one
            log.seek(0)
            output = log.read().decode(errors="replace")[-3000:]
            if output.strip():
                error.add_note(f"exchange serve's output (last 3000 characters):\n{output}")
            raise
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(SERVER_STOP_TIMEOUT_SECONDS)
            with contextlib.suppress(ProcessLookupError):  # workers left behind, if any
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# The load generator ------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiMeasurement:
    requests: int  # answered, whatever the status
    requests_per_second: float
    orders_per_second: float  # POST /v1/orders answered 2xx
    cancels_per_second: float  # DELETE /v1/orders/{id} answered 2xx
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    statuses: dict[int, int]  # every answer by HTTP status
    elapsed_seconds: float
    generator_cpu_seconds: float  # this process, over the measured interval


def _place_body(command: Place, symbol: str) -> bytes:
    body: dict[str, object] = {
        "account_id": command.account,
        "symbol": symbol,
        "side": command.side,
        "type": command.type,
        "quantity": str(command.quantity),
        "client_order_id": command.client_order_id,
    }
    if command.price is not None:
        body["price"] = str(command.price)
    if command.time_in_force is not None:
        body["time_in_force"] = command.time_in_force
    return orjson.dumps(body)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server will close the connection) of one HTTP/1.1 answer."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    closing = b"\r\nconnection: close\r\n" in head
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        return status, await reader.readexactly(length), closing
    if b"\r\ntransfer-encoding: chunked\r\n" not in head:
        raise RuntimeError(f"an HTTP answer with no length: {head[:200]!r}")
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(chunks), closing
        chunks.append(chunk[:-2])


async def _load(
    port: int,
    key: str,
    symbols: list[str],
    account_ids: list[int],
    connections: int,
    seconds: float,
    seed: int,
    prefix: str,
) -> ApiMeasurement:
    host = f"{HOST}:{port}".encode()
    authorization = f"Bearer {key}".encode()
    post_head = (
        b"POST /v1/orders HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: " + authorization
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
    )  # fmt: skip
    delete_tail = (
        b" HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: " + authorization + b"\r\n\r\n"
    )
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counts = Counter[str]()
    opened = [await asyncio.open_connection(HOST, port) for _ in range(connections)]
    deadline = time.monotonic() + seconds

    async def client(number: int) -> None:
        reader, writer = opened[number]
        mine = account_ids[number::connections] or account_ids
        flow = OrderFlow(random.Random(seed * 1000 + number), f"{prefix}c{number}", mine)
        order_ids: dict[str, int] = {}  # client_order_id -> id, for the orders still resting
        turn = number
        try:
            while time.monotonic() < deadline:
                command = flow.next()
                if isinstance(command, Cancel):
                    order_id = order_ids.pop(command.client_order_id, None)
                    if order_id is None:  # its placement was refused: nothing to cancel
                        continue
                    request = b"DELETE /v1/orders/" + str(order_id).encode() + delete_tail
                    kind = "cancel"
                else:
                    assert isinstance(command, Place)
                    body = _place_body(command, symbols[turn % len(symbols)])
                    turn += 1
                    request = post_head + str(len(body)).encode() + b"\r\n\r\n" + body
                    kind = "order"
                started = time.perf_counter()
                writer.write(request)
                status, answer, closing = await asyncio.wait_for(
                    _read_response(reader), REQUEST_TIMEOUT_SECONDS
                )
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] += 1
                if 200 <= status < 300:
                    counts[kind] += 1
                    if kind == "order" and command.time_in_force in (None, "GTC"):
                        order = orjson.loads(answer)
                        if order["status"] in ("new", "partially_filled"):
                            order_ids[command.client_order_id] = int(order["id"])
                if closing:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
        finally:
            writer.close()

    cpu_before, started = time.process_time(), time.monotonic()
    await asyncio.gather(*(client(n) for n in range(connections)))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    everything = sorted(latencies)
    if not everything:
        raise RuntimeError("no request was answered")
    return ApiMeasurement(
        requests=len(everything),
        requests_per_second=len(everything) / elapsed,
        orders_per_second=counts["order"] / elapsed,
        cancels_per_second=counts["cancel"] / elapsed,
        latency_p50_ms=_percentile(everything, 0.50),
        latency_p99_ms=_percentile(everything, 0.99),
        latency_max_ms=everything[-1],
        statuses=dict(sorted(statuses.items())),
        elapsed_seconds=elapsed,
        generator_cpu_seconds=cpu,
    )


def http_orders(
    port: int,
    key: str,
    symbols: list[str],
    account_ids: list[int],
    connections: int,
    seconds: float,
    seed: int,
    prefix: str | None = None,
) -> ApiMeasurement:
    """`connections` keep-alive connections, each sending OrderFlow's commands one at a time
    for `seconds` (placements as POST /v1/orders to the instruments in turn, cancels as DELETE
    /v1/orders/{id} of its own orders still resting when placed); client n trades its own slice
    of the accounts. `prefix` makes the client_order_ids unique across calls."""
    return asyncio.run(
        _load(port, key, symbols, account_ids, connections, seconds, seed, prefix or f"h{seed}")
    )


# The benchmark -----------------------------------------------------------------------------


def _batches(cluster: Cluster, dbname: str) -> tuple[int, int]:
    """(events, engine transactions that wrote them) so far: the commands of one batch share
    their transaction's now()."""
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (instrument_id, created_at)) FROM trading.event"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@dataclass(frozen=True)
class ApiRun:
    http: ApiMeasurement
    engine: EngineMeasurement
    pgbench_tps: float
    http_batch_mean: float  # commands per engine transaction during the HTTP phase
    server_cpu_seconds: float
    postgres_cpu_seconds: float  # during the HTTP phase
    engine_client_cpu_seconds: float  # this process during the engine phase
    engine_postgres_cpu_seconds: float
    # The rest of the machine's busy CPU time (other processes, the kernel's own work): what
    # this benchmark did not have for itself.
    other_cpu_seconds: float  # during the HTTP phase
    engine_other_cpu_seconds: float


def _cpu_share(seconds: float, elapsed: float) -> str:
    return f"{100 * seconds / elapsed:.0f}%"


def _per_order_ms(cpu_seconds: float, orders: float) -> str:
    return f"{1000 * cpu_seconds / orders:.2f} ms" if orders else "-"


def api_run(
    cluster: Cluster,
    *,
    connections: int,
    workers: int,
    instruments_count: int,
    seconds: float,
    accounts: int,
    seed: int,
    http_first: bool = True,
    pgbench: bool = True,
    warm: bool = True,
    dbname: str = DBNAME,
) -> ApiRun:
    """One run: a fresh database, warm-up, then HTTP and engine (in the order asked), pgbench."""
    symbols, account_ids, key = prepare_api(cluster, instruments_count, accounts, dbname)
    # The engine with as many commands in flight as the HTTP clients: one client per order lane
    # (each API worker has one per instrument), each batch as large as a lane's share.
    engine_clients = workers * instruments_count
    batch_size = max(1, min(BATCH_SIZE_MAX, round(connections / engine_clients)))
    if warm:
        warm_up(cluster, symbols, account_ids, engine_clients, batch_size, seed + 1000, dbname)
    postgres = postmaster_pid(cluster, dbname)

    def http_phase() -> tuple[ApiMeasurement, float, float, float]:
        with api_server(cluster, dbname, workers) as server:
            http_orders(
                server.port, key, symbols, account_ids, connections, HTTP_WARM_UP_SECONDS,
                seed + 1000, prefix=f"w{seed}",
            )  # fmt: skip
            events_before, batches_before = _batches(cluster, dbname)
            server_before = tree_cpu_seconds(server.process.pid)
            postgres_before = tree_cpu_seconds(postgres)
            busy_before = busy_cpu_seconds()
            measured = http_orders(
                server.port, key, symbols, account_ids, connections, seconds, seed
            )
            busy = busy_cpu_seconds() - busy_before
            server_cpu = tree_cpu_seconds(server.process.pid) - server_before
            postgres_cpu = tree_cpu_seconds(postgres) - postgres_before
        events_after, batches_after = _batches(cluster, dbname)
        batch_mean = (events_after - events_before) / max(1, batches_after - batches_before)
        others = busy - measured.generator_cpu_seconds - server_cpu - postgres_cpu
        return measured, batch_mean, server_cpu, postgres_cpu, others

    def engine_phase() -> tuple[EngineMeasurement, float, float, float]:
        client_before, postgres_before = time.process_time(), tree_cpu_seconds(postgres)
        busy_before = busy_cpu_seconds()
        measured = engine_orders(
            cluster, symbols, account_ids, engine_clients, batch_size, seconds, seed, dbname
        )
        busy = busy_cpu_seconds() - busy_before
        client_cpu = time.process_time() - client_before
        postgres_cpu = tree_cpu_seconds(postgres) - postgres_before
        return measured, client_cpu, postgres_cpu, busy - client_cpu - postgres_cpu

    if http_first:
        http, batch_mean, server_cpu, postgres_cpu, others = http_phase()
        engine, client_cpu, engine_postgres_cpu, engine_others = engine_phase()
    else:
        engine, client_cpu, engine_postgres_cpu, engine_others = engine_phase()
        http, batch_mean, server_cpu, postgres_cpu, others = http_phase()
    baseline = pgbench_tps(cluster, PGBENCH_CONNECTIONS, round(seconds)) if pgbench else 0.0
    return ApiRun(
        http=http,
        engine=engine,
        pgbench_tps=baseline,
        http_batch_mean=batch_mean,
        server_cpu_seconds=server_cpu,
        postgres_cpu_seconds=postgres_cpu,
        engine_client_cpu_seconds=client_cpu,
        engine_postgres_cpu_seconds=engine_postgres_cpu,
        other_cpu_seconds=others,
        engine_other_cpu_seconds=engine_others,
    )


def bench_api(
    connections: int,
    workers: int,
    instruments_count: int,
    seconds: int,
    runs: int,
    accounts: int,
    seed: int,
    deadlock_timeout: str = "20ms",
) -> str:
    base = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    base.chmod(0o755)
    # PostgreSQL defaults (fsync and synchronous_commit on) but deadlock_timeout, as for the
    # engine benchmark: lanes of two instruments settling on one account can deadlock.
    cluster = Cluster(base / "cluster", settings={"deadlock_timeout": deadlock_timeout})
    engine_clients = workers * instruments_count
    batch_size = max(1, min(BATCH_SIZE_MAX, round(connections / engine_clients)))
    lines = [
        f"HTTP order entry vs the engine vs pgbench TPC-B: {connections} HTTP connections,"
        f" {workers} API worker(s), {instruments_count} instrument(s), {accounts} accounts,"
        f" {seconds} s x {runs} runs, seed {seed}; engine direct: {engine_clients} client(s),"
        f" batch {batch_size}; pgbench {PGBENCH_CONNECTIONS} clients;"
        f" deadlock_timeout {deadlock_timeout}, PostgreSQL at {cluster.bindir}"
    ]
    try:
        with cluster.session():
            measured: list[ApiRun] = []
            for run in range(runs):
                r = api_run(
                    cluster,
                    connections=connections,
                    workers=workers,
                    instruments_count=instruments_count,
                    seconds=seconds,
                    accounts=accounts,
                    seed=seed + run,
                    http_first=run % 2 == 0,
                )
                measured.append(r)
                lines.extend(_describe_run(run + 1, r, seconds, run % 2 == 0))
            lines.append(_describe_medians(measured))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(lines)


def _describe_run(number: int, r: ApiRun, seconds: float, http_first: bool) -> list[str]:
    h, e = r.http, r.engine
    refused = ", ".join(f"{status}: {n}" for status, n in h.statuses.items() if status >= 300)
    elapsed = h.elapsed_seconds
    http_orders = h.orders_per_second * elapsed
    engine_orders_count = e.orders_per_second * seconds
    return [
        f"run {number} ({'HTTP' if http_first else 'engine'} first):"
        f" HTTP {h.orders_per_second:.0f} orders/s ({h.requests_per_second:.0f} requests/s,"
        f" {h.cancels_per_second:.0f} cancels/s; p50 {h.latency_p50_ms:.1f} ms,"
        f" p99 {h.latency_p99_ms:.1f} ms, max {h.latency_max_ms:.1f} ms; non-2xx {{{refused}}};"
        f" {r.http_batch_mean:.1f} commands per engine call);"
        f" engine {e.orders_per_second:.0f} orders/s ({e.commands_per_second:.0f} commands/s;"
        f" p50 {e.latency_p50_ms:.1f} ms, p99 {e.latency_p99_ms:.1f} ms;"
        f" refused {e.refused}, retries {e.retries});"
        f" HTTP/engine {h.orders_per_second / e.orders_per_second:.2f};"
        f" pgbench {r.pgbench_tps:.0f} tps",
        f"  CPU, % of one core, during HTTP: generator"
        f" {_cpu_share(h.generator_cpu_seconds, elapsed)}, API server"
        f" {_cpu_share(r.server_cpu_seconds, elapsed)}"
        f" ({1000 * r.server_cpu_seconds / h.requests:.2f} ms per request), PostgreSQL"
        f" {_cpu_share(r.postgres_cpu_seconds, elapsed)}"
        f" ({_per_order_ms(r.postgres_cpu_seconds, http_orders)} per order), rest of the"
        f" machine {_cpu_share(r.other_cpu_seconds, elapsed)};"
        f" during engine: Python clients {_cpu_share(r.engine_client_cpu_seconds, seconds)},"
        f" PostgreSQL {_cpu_share(r.engine_postgres_cpu_seconds, seconds)}"
        f" ({_per_order_ms(r.engine_postgres_cpu_seconds, engine_orders_count)} per order),"
        f" rest of the machine {_cpu_share(r.engine_other_cpu_seconds, seconds)}",
    ]


def _describe_medians(measured: list[ApiRun]) -> str:
    def median(values: Iterator[float]) -> float:
        return statistics.median(list(values))

    http_to_engine = median(r.http.orders_per_second / r.engine.orders_per_second for r in measured)
    http_to_pgbench = median(r.http.orders_per_second / r.pgbench_tps for r in measured)
    return (
        f"median: HTTP {median(r.http.orders_per_second for r in measured):.0f} orders/s"
        f" ({median(r.http.requests_per_second for r in measured):.0f} requests/s;"
        f" p50 {median(r.http.latency_p50_ms for r in measured):.1f} ms,"
        f" p99 {median(r.http.latency_p99_ms for r in measured):.1f} ms,"
        f" max {median(r.http.latency_max_ms for r in measured):.1f} ms);"
        f" engine {median(r.engine.orders_per_second for r in measured):.0f} orders/s;"
        f" ratio HTTP/engine {http_to_engine:.2f};"
        f" pgbench {median(r.pgbench_tps for r in measured):.0f} tps;"
        f" ratio HTTP/pgbench {http_to_pgbench:.2f}"
    )
