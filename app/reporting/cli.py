"""`exchange report NAME` and `exchange db grant-finance USER` (registered by app/cli.py)."""

from __future__ import annotations

import argparse
import re
import sys

import psycopg

from app import migrate
from app.reporting import access, reports
from app.reporting.reports import ReportError
from app.runtime import database

EXIT_FAILURE = 1
FORMATS = {"table": reports.as_table, "csv": reports.as_csv}


def _variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or re.fullmatch(reports.NAME, name) is None:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _given(args: argparse.Namespace) -> dict[str, str]:
    given = dict(args.var)
    for name, value in (("as_of", args.as_of), ("tenant", args.tenant)):
        if value is not None:
            if name in given:
                raise ReportError(f"{name} given twice (--{name.replace('_', '-')} and -v)")
            given[name] = value
    return given


def cmd_report(args: argparse.Namespace) -> int:
    try:
        report = reports.load(args.name)
        given = _given(args)
        reports.parameters(report, given)  # refuse bad variables before connecting
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    with database() as urls, psycopg.connect(migrate.libpq_url(urls.admin)) as conn:
        # One snapshot for the whole report; days and printed times in UTC, and a time given
        # without a zone is UTC.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        result = reports.run(conn, report, given)
    sys.stdout.write(FORMATS[args.format](result))
    return 0


def cmd_grant_finance(args: argparse.Namespace) -> int:
    with database() as urls, psycopg.connect(migrate.libpq_url(urls.admin)) as conn:
        try:
            inherits = access.grant_finance(conn, args.user)
        except ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(f"{args.user} is a member of {access.FINANCE_ROLE}: it may read the reporting views")
    if not inherits:
        print(f"{args.user} is NOINHERIT: its sessions must SET ROLE {access.FINANCE_ROLE} first")
    return 0


def add_grant_finance_parser(db: argparse._SubParsersAction) -> None:
    grant = db.add_parser(
        "grant-finance",
        help="let an existing login role read the reporting views (member of finance_reader)",
    )
    grant.add_argument("user", help="an existing role, e.g. created with CREATE ROLE ... LOGIN")
    grant.set_defaults(handler=cmd_grant_finance)


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="run a finance report of sql/reports/ (" + ", ".join(reports.report_names()) + ")",
        description="Runs sql/reports/NAME.sql, the file finance staff run with psql -f, with"
        " its variables as bind parameters. Times without a zone are UTC.",
    )
    report.add_argument("name", metavar="NAME", help="the report: a file of sql/reports/")
    report.add_argument("--as-of", help="a point in time (default: now); e.g. 2026-11-01T00:00Z")
    report.add_argument("--tenant", help="only this tenant (its name), for reports that take one")
    report.add_argument(
        "-v",
        "--var",
        type=_variable,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable of the report (e.g. -v customer=42), its value as plain text",
    )
    report.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="table",
        help="table (default) or csv; decimals are printed exactly as stored",
    )
    report.set_defaults(handler=cmd_report)
