"""The `exchange` command line, for operators."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import psycopg
import sqlalchemy.exc

from app import migrate, verify
from app.db import run_transaction
from app.ledger import service
from app.ledger.errors import LedgerError
from app.pgcluster import ClusterError, PostgresNotFound
from app.reporting import cli as reporting_cli
from app.runtime import database
from app.tenancy import keys
from app.tenancy.context import act_for
from app.tenancy.errors import TenancyError
from app.trading import instruments
from app.trading.commands import Instrument
from app.trading.errors import TradingError

T = TypeVar("T")

EXIT_FAILURE = 1


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _in_transaction(url: str, work: Callable[[psycopg.Connection], T]) -> T:
    with psycopg.connect(migrate.libpq_url(url)) as conn:
        return run_transaction(conn, work, isolation=service.POSTING_ISOLATION)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    with database(migrate_embedded=False) as urls:
        migrate.upgrade(urls.admin, args.revision)
        print(f"database at {migrate.current_revision(urls.admin)}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    with database(migrate_embedded=False) as urls:
        migrate.downgrade(urls.admin, args.revision, allow_data_loss=args.allow_data_loss)
        print(f"database at {migrate.current_revision(urls.admin) or 'base'}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    with database(migrate_embedded=False) as urls:
        print(migrate.current_revision(urls.admin) or "base")
    return 0


def cmd_db_history(args: argparse.Namespace) -> int:
    with database(migrate_embedded=False) as urls:
        current = migrate.current_revision(urls.admin)
    for revision, title in migrate.revisions():
        marker = "*" if revision == current else " "
        print(f"{marker} {revision}  {title}")
    if current is None:
        print("(the database is at base: no migration applied)")
    return 0


APP_PASSWORD_VARIABLE = "EXCHANGE_APP_PASSWORD"


def cmd_db_set_app_password(args: argparse.Namespace) -> int:
    password = os.environ.get(APP_PASSWORD_VARIABLE, "")
    if not password:
        print(f"error: set {APP_PASSWORD_VARIABLE} to the password", file=sys.stderr)
        return EXIT_FAILURE
    with database(migrate_embedded=False) as urls:
        migrate.set_app_password(urls.admin, password)
    print(f"password of {migrate.APP_ROLE} set")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with database() as urls, psycopg.connect(migrate.libpq_url(urls.admin)) as conn:
        found = list(verify.violations(conn))
    broken = {violation.invariant.name for violation in found}
    for invariant in verify.INVARIANTS:
        status = "FAIL" if invariant.name in broken else "ok"
        print(f"{status:4} {invariant.name}: {invariant.description}")
    if not found:
        return 0
    first = found[0]
    print(f"\nfirst violation: {first.invariant.name}", file=sys.stderr)
    for detail in first.details:
        print(f"  {detail}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_asset_create(args: argparse.Namespace) -> int:
    with database() as urls:
        _in_transaction(urls.admin, lambda conn: service.create_asset(conn, args.code, args.scale))
    print(f"asset {args.code} (scale {args.scale}) created")
    return 0


def _require_tenant(conn: psycopg.Connection, tenant_id: int) -> None:
    if conn.execute("SELECT FROM tenancy.tenant WHERE id = %s", (tenant_id,)).fetchone() is None:
        raise TenancyError("unknown_tenant", f"no tenant {tenant_id}")


def cmd_customer_create(args: argparse.Namespace) -> int:
    def create(conn: psycopg.Connection) -> int:
        _require_tenant(conn, args.tenant)
        # ledger.create_customer gives the customer to the tenant this transaction acts for.
        act_for(conn, args.tenant)
        return service.create_customer(conn, args.external_ref)

    with database() as urls:
        customer_id = _in_transaction(urls.admin, create)
    print(customer_id)
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    with database() as urls:
        tenant_id = _in_transaction(urls.admin, lambda conn: keys.create_tenant(conn, args.name))
    print(tenant_id)
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    query = """
        SELECT t.id, t.name,
               (SELECT count(*) FROM ledger.customer c WHERE c.tenant_id = t.id),
               (SELECT count(*) FROM tenancy.api_key k
                 WHERE k.tenant_id = t.id AND k.revoked_at IS NULL),
               to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
          FROM tenancy.tenant t ORDER BY t.id
    """
    with database() as urls:
        rows = _in_transaction(urls.admin, lambda conn: conn.execute(query).fetchall())
    print(f"{'id':>6}  {'name':<30} {'customers':>9} {'keys':>5}  created")
    for tenant_id, name, customers, active_keys, created in rows:
        print(f"{tenant_id:>6}  {name:<30} {customers:>9} {active_keys:>5}  {created}")
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    tenant_id = None if args.admin else args.tenant
    scopes = [keys.ADMIN_SCOPE] if args.admin and not args.scope else list(args.scope or [])
    with database() as urls:
        key = _in_transaction(urls.admin, lambda conn: keys.create_key(conn, tenant_id, scopes))
    owner = "operator" if key.tenant_id is None else f"tenant {key.tenant_id}"
    print(key.key)  # alone on stdout, so that a script can capture it
    print(
        f"api key {key.id} for {owner}, scopes {','.join(key.scopes)}. This is the only time the"
        " key is shown: only its SHA-256 is kept. Store it now.",
        file=sys.stderr,
    )
    return 0


def cmd_apikey_list(args: argparse.Namespace) -> int:
    query = """
        SELECT id, tenant_id, array_to_string(scopes, ','),
               to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
          FROM tenancy.api_key
         WHERE %(tenant)s::bigint IS NULL OR tenant_id = %(tenant)s
         ORDER BY id
    """
    with database() as urls:
        rows = _in_transaction(
            urls.admin, lambda conn: conn.execute(query, {"tenant": args.tenant}).fetchall()
        )
    print(f"{'id':>6}  {'tenant':>8}  {'scopes':<20} {'created':<20}  revoked")
    for key_id, tenant_id, scopes, created, revoked in rows:
        owner = "operator" if tenant_id is None else tenant_id
        print(f"{key_id:>6}  {owner:>8}  {scopes:<20} {created:<20}  {revoked or '-'}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    with database() as urls:
        _in_transaction(urls.admin, lambda conn: keys.revoke_key(conn, args.key_id))
    print(f"api key {args.key_id} revoked")
    return 0


def _cmd_movement(operation: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with database() as urls:
            journal_id = _in_transaction(
                urls.admin,
                lambda conn: operation(
                    conn,
                    args.customer,
                    args.asset,
                    args.amount,
                    args.idempotency_key,
                    args.reference,
                ),
            )
        print(f"journal {journal_id}")
        return 0

    return run


def cmd_balances(args: argparse.Namespace) -> int:
    with database() as urls:
        rows = _in_transaction(urls.admin, lambda conn: service.balances(conn, args.customer))
    print(f"{'asset':<8} {'available':>24} {'held':>24} {'total':>24}")
    for balance in rows:
        print(f"{balance.asset:<8} {balance.available:>24} {balance.held:>24} {balance.total:>24}")
    return 0


def _print_instruments(rows: Sequence[Instrument]) -> None:
    print(
        f"{'symbol':<14} {'status':<8} {'tick':>12} {'lot':>12} {'min qty':>12}"
        f" {'min notional':>14} {'maker':>8} {'taker':>8}"
    )
    for i in rows:
        print(
            f"{i.symbol:<14} {i.status:<8} {i.tick_size:>12} {i.lot_size:>12}"
            f" {i.min_quantity:>12} {i.min_notional:>14} {i.maker_fee_rate:>8}"
            f" {i.taker_fee_rate:>8}"
        )


def cmd_instrument_create(args: argparse.Namespace) -> int:
    with database() as urls:
        instrument = _in_transaction(
            urls.admin,
            lambda conn: instruments.create_instrument(
                conn,
                args.base,
                args.quote,
                tick_size=args.tick_size,
                lot_size=args.lot_size,
                min_quantity=args.min_quantity,
                min_notional=args.min_notional,
                maker_fee_rate=args.maker_fee_rate,
                taker_fee_rate=args.taker_fee_rate,
            ),
        )
    _print_instruments([instrument])
    return 0


def cmd_instrument_list(args: argparse.Namespace) -> int:
    with database() as urls:
        rows = _in_transaction(urls.admin, instruments.list_instruments)
    _print_instruments(rows)
    return 0


def _cmd_instrument_status(status: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with database() as urls:
            instrument = _in_transaction(
                urls.admin, lambda conn: instruments.set_status(conn, args.symbol, status)
            )
        print(f"{instrument.symbol} {instrument.status}")
        return 0

    return run


def _listen_without_nagle() -> None:
    """With --workers N, uvicorn binds the listening socket itself with proto 0, and asyncio
    sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP: every keep-alive
    response (headers and body are two writes) then waits ~40 ms for the client's delayed ACK
    (uvicorn issue #3149). Accepted sockets inherit the listener's TCP_NODELAY on Linux."""
    import socket

    from uvicorn.config import Config

    bind_socket = Config.bind_socket

    def bind_socket_without_nagle(self: Config) -> socket.socket:
        sock = bind_socket(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    Config.bind_socket = bind_socket_without_nagle  # type: ignore[method-assign]


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.main import DATABASE_URL_VARIABLE

    _listen_without_nagle()
    with database() as urls:
        os.environ[DATABASE_URL_VARIABLE] = migrate.libpq_url(urls.app)
        print(f"exchange listening on http://{args.host}:{args.port}", flush=True)
        uvicorn.run(
            "app.api.main:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            # Named, not "auto": a missing one fails at start instead of running slower.
            loop="uvloop",
            http="httptools",
        )
    return 0


def cmd_bench_ledger(args: argparse.Namespace) -> int:
    from app.bench import bench_ledger

    print(bench_ledger(args.connections, args.seconds, args.runs, args.customers, args.seed))
    return 0


def cmd_bench_engine(args: argparse.Namespace) -> int:
    from app.bench import bench_engine

    print(
        bench_engine(
            args.connections,
            args.batch_size,
            args.instruments,
            args.seconds,
            args.runs,
            args.accounts,
            args.seed,
            args.deadlock_timeout,
        )
    )
    return 0


def cmd_bench_api(args: argparse.Namespace) -> int:
    from app.bench_api import bench_api

    print(
        bench_api(
            args.connections,
            args.workers,
            args.instruments,
            args.seconds,
            args.runs,
            args.accounts,
            args.seed,
            args.deadlock_timeout,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange",
        description="Operate the exchange. Without DATABASE_URL, commands use the embedded "
        "PostgreSQL cluster in EXCHANGE_HOME (default ./.exchange), starting it when needed.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="schema migrations").add_subparsers(
        dest="db_command", required=True
    )
    upgrade = db.add_parser("upgrade", help="migrate up (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    downgrade = db.add_parser("downgrade", help="migrate down to REVISION ('base' for empty)")
    downgrade.add_argument("revision")
    downgrade.add_argument(
        "--allow-data-loss",
        action="store_true",
        help="let a step drop tables that hold booked money (back up first)",
    )
    downgrade.set_defaults(handler=cmd_db_downgrade)
    db.add_parser("current", help="print the current revision").set_defaults(handler=cmd_db_current)
    db.add_parser(
        "history", help="list the revisions, oldest first; '*' marks the database's"
    ).set_defaults(handler=cmd_db_history)
    db.add_parser(
        "set-app-password",
        help=f"give the {migrate.APP_ROLE} role the password in ${APP_PASSWORD_VARIABLE}"
        " (hashed before it is sent)",
    ).set_defaults(handler=cmd_db_set_app_password)
    reporting_cli.add_grant_finance_parser(db)

    reporting_cli.add_report_parser(commands)

    commands.add_parser(
        "verify",
        help="check every invariant (ledger, trading, tenancy, reporting); exit 1 naming the"
        " first violation",
    ).set_defaults(handler=cmd_verify)

    asset = commands.add_parser("asset", help="assets").add_subparsers(
        dest="asset_command", required=True
    )
    asset_create = asset.add_parser("create", help="create an asset")
    asset_create.add_argument("code", help="e.g. USD, BTC")
    asset_create.add_argument("--scale", type=int, required=True, help="decimal places")
    asset_create.set_defaults(handler=cmd_asset_create)

    customer = commands.add_parser("customer", help="customers").add_subparsers(
        dest="customer_command", required=True
    )
    customer_create = customer.add_parser("create", help="create a customer; prints its id")
    customer_create.add_argument(
        "--tenant", type=int, required=True, metavar="ID", help="the tenant (broker) that owns it"
    )
    customer_create.add_argument("--external-ref", required=True)
    customer_create.set_defaults(handler=cmd_customer_create)

    tenant = commands.add_parser("tenant", help="tenants (brokers)").add_subparsers(
        dest="tenant_command", required=True
    )
    tenant_create = tenant.add_parser("create", help="create a tenant; prints its id")
    tenant_create.add_argument("name", help="unique, 1 to 200 characters")
    tenant_create.set_defaults(handler=cmd_tenant_create)
    tenant.add_parser(
        "list", help="list tenants with their customers and active API keys"
    ).set_defaults(handler=cmd_tenant_list)

    apikey = commands.add_parser("apikey", help="API keys").add_subparsers(
        dest="apikey_command", required=True
    )
    apikey_create = apikey.add_parser(
        "create",
        help="create a key and print it, once: only its SHA-256 is kept",
        description="Create an API key: a broker's (--tenant ID with one or more --scope) or an"
        " operator's (--admin). The key is printed alone on stdout, this one time only.",
    )
    owner = apikey_create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", type=int, metavar="ID", help="the tenant the key acts for")
    owner.add_argument("--admin", action="store_true", help="an operator key (scope admin)")
    apikey_create.add_argument(
        "--scope",
        action="append",
        choices=keys.SCOPES,
        help="a broker key's scope; repeat for several",
    )
    apikey_create.set_defaults(handler=cmd_apikey_create)
    apikey_list = apikey.add_parser("list", help="list API keys (never their secrets)")
    apikey_list.add_argument("--tenant", type=int, metavar="ID", help="only this tenant's keys")
    apikey_list.set_defaults(handler=cmd_apikey_list)
    apikey_revoke = apikey.add_parser(
        "revoke", help="revoke a key at once (revoking it again changes nothing)"
    )
    apikey_revoke.add_argument("key_id", type=int, help="the key's id: xk_<id>_...")
    apikey_revoke.set_defaults(handler=cmd_apikey_revoke)

    for name, operation, text in (
        ("deposit", service.deposit, "credit a customer from custody"),
        ("withdraw", service.withdraw, "debit a customer to custody"),
    ):
        movement = commands.add_parser(name, help=text)
        movement.add_argument("--customer", type=int, required=True)
        movement.add_argument("--asset", required=True)
        movement.add_argument("--amount", type=_decimal, required=True)
        movement.add_argument("--idempotency-key", required=True)
        movement.add_argument("--reference")
        movement.set_defaults(handler=_cmd_movement(operation))

    balances = commands.add_parser("balances", help="a customer's balances")
    balances.add_argument("--customer", type=int, required=True)
    balances.set_defaults(handler=cmd_balances)

    instrument = commands.add_parser("instrument", help="instruments (markets)").add_subparsers(
        dest="instrument_command", required=True
    )
    instrument_create = instrument.add_parser(
        "create",
        help="create BASE-QUOTE; refuses sizes that would make a quantity or notional inexact",
    )
    instrument_create.add_argument("base", help="base asset, e.g. BTC")
    instrument_create.add_argument("quote", help="quote asset, e.g. USD")
    instrument_create.add_argument("--tick-size", type=_decimal, required=True)
    instrument_create.add_argument("--lot-size", type=_decimal, required=True)
    instrument_create.add_argument("--min-quantity", type=_decimal, default=Decimal(0))
    instrument_create.add_argument("--min-notional", type=_decimal, default=Decimal(0))
    instrument_create.add_argument("--maker-fee-rate", type=_decimal, default=Decimal(0))
    instrument_create.add_argument("--taker-fee-rate", type=_decimal, default=Decimal(0))
    instrument_create.set_defaults(handler=cmd_instrument_create)
    instrument.add_parser("list", help="list instruments").set_defaults(
        handler=cmd_instrument_list
    )
    for name, status, text in (
        ("halt", "halted", "stop new orders and amends (cancels go on)"),
        ("resume", "trading", "accept orders again"),
    ):
        change = instrument.add_parser(name, help=text)
        change.add_argument("symbol")
        change.set_defaults(handler=_cmd_instrument_status(status))

    bench = commands.add_parser(
        "bench", help="benchmarks on a throwaway durable cluster (not tests)"
    ).add_subparsers(dest="bench_command", required=True)
    bench_ledger = bench.add_parser(
        "ledger", help="concurrent transfers vs a pgbench baseline on the same cluster"
    )
    bench_ledger.add_argument("--connections", type=int, default=8)
    bench_ledger.add_argument("--seconds", type=int, default=10)
    bench_ledger.add_argument("--runs", type=int, default=3)
    bench_ledger.add_argument("--customers", type=int, default=64)
    bench_ledger.add_argument("--seed", type=int, default=1)
    bench_ledger.set_defaults(handler=cmd_bench_ledger)
    bench_engine = bench.add_parser(
        "engine", help="orders through the matching engine vs a pgbench baseline"
    )
    bench_engine.add_argument("--connections", type=int, default=4)
    bench_engine.add_argument("--batch-size", type=int, default=1)
    bench_engine.add_argument("--instruments", type=int, choices=range(1, 5), default=1)
    bench_engine.add_argument("--seconds", type=int, default=10)
    bench_engine.add_argument("--runs", type=int, default=3)
    bench_engine.add_argument("--accounts", type=int, default=1000)
    bench_engine.add_argument("--deadlock-timeout", default="20ms")
    bench_engine.add_argument("--seed", type=int, default=1)
    bench_engine.set_defaults(handler=cmd_bench_engine)
    bench_api = bench.add_parser(
        "api",
        help="order entry over HTTP (exchange serve on 127.0.0.1) vs the engine directly",
    )
    bench_api.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    bench_api.add_argument("--workers", type=int, default=2, help="API processes")
    bench_api.add_argument("--instruments", type=int, choices=range(1, 5), default=1)
    bench_api.add_argument("--seconds", type=int, default=10)
    bench_api.add_argument("--runs", type=int, default=3)
    bench_api.add_argument("--accounts", type=int, default=1000)
    bench_api.add_argument("--deadlock-timeout", default="20ms")
    bench_api.add_argument("--seed", type=int, default=1)
    bench_api.set_defaults(handler=cmd_bench_api)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API processes (uvicorn workers)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (LedgerError, TradingError, TenancyError) as error:
        print(f"error [{error.code}]: {error.message}", file=sys.stderr)
    except (PostgresNotFound, ClusterError, migrate.ConfigurationError) as error:
        print(f"error: {error}", file=sys.stderr)
    except psycopg.OperationalError as error:
        print(f"error: cannot reach the database: {error}", file=sys.stderr)
    except psycopg.Error as error:
        message = error.diag.message_primary or error
        print(f"error: the database refused: {message}", file=sys.stderr)
    except sqlalchemy.exc.DBAPIError as error:  # raised through Alembic
        print(f"error: the database refused: {error.orig}", file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
