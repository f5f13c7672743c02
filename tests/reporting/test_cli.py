"""`exchange report NAME` and `exchange db grant-finance USER`, and the same report files run by
psql as a finance login role."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from datetime import UTC

import pytest

from app.pgcluster import Cluster
from app.reporting import reports
from tests.conftest import Exchange
from tests.reporting.conftest import Seeded

# Trial balance at t1, as `exchange report trial_balance --as-of T1 --format csv` prints it:
# every figure exact, at its asset's scale.
TRIAL_BALANCE_AT_T1_CSV = """\
asset,available,held,fee,custody,total
BTC,8.99800000,1.00000000,0.00200000,-10.00000000,0.00000000
USD,99970.000000,0.000000,30.000000,-100000.000000,0.000000
"""


def test_report_as_csv_prints_exact_decimals_at_each_asset_scale(
    exchange_on_seeded: Exchange, seeded: Seeded
) -> None:
    code, out, err = exchange_on_seeded(
        "report", "trial_balance", "--as-of", seeded.t1.isoformat(), "--format", "csv"
    )

    assert (code, err) == (0, "")
    assert out == TRIAL_BALANCE_AT_T1_CSV


def test_report_prints_an_aligned_table_by_default(
    exchange_on_seeded: Exchange, seeded: Seeded
) -> None:
    code, out, _ = exchange_on_seeded(
        "report", "fee_revenue", "--as-of", seeded.t1.isoformat(), "--tenant", "globex"
    )

    assert code == 0
    assert out == (
        "   day     | tenant | instrument | asset | maker_fees | taker_fees |    fees\n"
        "-----------+--------+------------+-------+------------+------------+----------\n"
        f"{seeded.day} | globex | BTC-USD    | USD   |  30.000000 |   0.000000 | 30.000000\n"
        "(1 row)\n"
    )


def test_report_passes_its_other_variables_with_v(
    exchange_on_seeded: Exchange, seeded: Seeded
) -> None:
    code, out, _ = exchange_on_seeded(
        "report", "statement", "-v", f"customer={seeded.history.carol}", "-v", "asset=USD",
        "--format", "csv",
    )  # fmt: skip

    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["bucket"], r["amount"], r["running_balance"]) for r in rows] == [
        ("available", "5000.000000", "5000.000000"),
        ("available", "-2900.000000", "2100.000000"),
        ("held", "2900.000000", "2900.000000"),
    ]


def test_report_takes_a_time_without_a_zone_as_utc(
    exchange_on_seeded: Exchange, seeded: Seeded
) -> None:
    without_zone = seeded.t1.astimezone(UTC).replace(tzinfo=None).isoformat()

    code, out, _ = exchange_on_seeded(
        "report", "trial_balance", "--as-of", without_zone, "--format", "csv"
    )

    assert (code, out) == (0, TRIAL_BALANCE_AT_T1_CSV)


def test_report_of_an_unknown_name_fails_listing_the_reports(
    exchange_on_seeded: Exchange,
) -> None:
    code, out, err = exchange_on_seeded("report", "profit")

    assert (code, out) == (1, "")
    assert err == (
        "error: no report named 'profit'; reports: balances, daily_volume, fee_revenue,"
        " reconciliation, statement, trial_balance\n"
    )


def test_report_refuses_a_variable_the_report_does_not_take(
    exchange_on_seeded: Exchange,
) -> None:
    code, _, err = exchange_on_seeded("report", "trial_balance", "--tenant", "acme")

    assert code == 1
    assert err == "error: report trial_balance does not take tenant (it takes: as_of)\n"


def test_report_refuses_to_run_without_a_required_variable(exchange_on_seeded: Exchange) -> None:
    code, _, err = exchange_on_seeded("report", "statement")

    assert code == 1
    assert err == "error: report statement: statement.sql needs the customer: -v customer=ID\n"


def test_report_refuses_a_variable_given_twice(exchange_on_seeded: Exchange) -> None:
    code, _, err = exchange_on_seeded(
        "report", "trial_balance", "--as-of", "2026-01-01", "-v", "as_of=2026-02-01"
    )

    assert code == 1
    assert err == "error: as_of given twice (--as-of and -v)\n"


def test_report_values_are_bind_parameters_never_sql(
    exchange_on_seeded: Exchange,
) -> None:
    code, out, _ = exchange_on_seeded(
        "report", "balances", "--tenant", "acme' OR true --", "--format", "csv"
    )

    assert (code, out) == (0, "tenant,customer_id,external_ref,account_id,asset,bucket,label,"
                               "balance,entries\n")  # fmt: skip


def test_report_with_an_invalid_time_fails_with_the_database_message(
    exchange_on_seeded: Exchange,
) -> None:
    code, _, err = exchange_on_seeded("report", "trial_balance", "--as-of", "last month")

    assert code == 1
    assert "invalid input syntax for type timestamp with time zone" in err


# grant-finance ------------------------------------------------------------------------------


def test_grant_finance_lets_an_existing_login_role_read_the_reports(
    exchange_on_seeded: Exchange, seeded: Seeded, finance_login: str
) -> None:
    code, out, _ = exchange_on_seeded("db", "grant-finance", finance_login)

    assert code == 0
    assert (
        out == f"{finance_login} is a member of finance_reader: it may read the reporting views\n"
    )
    with seeded.db.connect(finance_login) as conn:
        result = reports.run(conn, reports.load("trial_balance"), {"as_of": seeded.t1.isoformat()})
    assert reports.as_csv(result) == TRIAL_BALANCE_AT_T1_CSV


def test_grant_finance_twice_changes_nothing(
    exchange_on_seeded: Exchange, finance_login: str
) -> None:
    assert exchange_on_seeded("db", "grant-finance", finance_login)[0] == 0
    assert exchange_on_seeded("db", "grant-finance", finance_login)[0] == 0


def test_grant_finance_to_a_role_that_does_not_exist_fails(exchange_on_seeded: Exchange) -> None:
    code, _, err = exchange_on_seeded("db", "grant-finance", "nobody_here")

    assert code == 1
    assert err == (
        "error: no role named 'nobody_here' on this cluster; create the login role first"
        " (CREATE ROLE \"nobody_here\" LOGIN PASSWORD '...')\n"
    )


def test_grant_finance_refuses_the_application_role(exchange_on_seeded: Exchange) -> None:
    code, _, err = exchange_on_seeded("db", "grant-finance", "exchange_app")

    assert code == 1
    assert err.startswith("error: exchange_app is one of the exchange's own roles")


# psql -f sql/reports/NAME.sql ---------------------------------------------------------------


def psql(cluster: Cluster) -> str:
    found = cluster.bindir / "psql"
    if found.exists():
        return str(found)
    path = shutil.which("psql")
    if path is None:
        pytest.skip("psql is not installed")
    return path


def psql_csv(
    cluster: Cluster, seeded: Seeded, user: str, name: str, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Runs the report file the way finance staff do: variables as SQL literals."""
    command = [psql(cluster), "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1"]
    for variable, literal in variables.items():
        command += ["-v", f"{variable}={literal}"]
    command += ["-d", seeded.db.conninfo(user), "-f", str(reports.REPORTS_DIR / f"{name}.sql")]
    environment = {**os.environ, "PGTZ": "UTC"}
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def test_psql_runs_the_trial_balance_as_the_issue_shows(
    pg_cluster: Cluster, seeded: Seeded, finance_member: str
) -> None:
    done = psql_csv(
        pg_cluster, seeded, finance_member, "trial_balance",
        {"as_of": sql_literal(seeded.t1.isoformat())},
    )  # fmt: skip

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == TRIAL_BALANCE_AT_T1_CSV


@pytest.mark.parametrize("name", reports.report_names())
def test_psql_and_exchange_report_give_the_same_rows_from_the_same_file(
    pg_cluster: Cluster,
    seeded: Seeded,
    finance_member: str,
    exchange_on_seeded: Exchange,
    name: str,
) -> None:
    t1 = seeded.t1.isoformat()
    variables = {"as_of": t1}
    if name == "statement":
        variables = {"customer": str(seeded.history.bob), "as_of": t1}
    elif name in ("balances", "daily_volume", "fee_revenue", "reconciliation"):
        variables["tenant"] = "globex"
    literals = {k: v if k == "customer" else sql_literal(v) for k, v in variables.items()}

    by_psql = psql_csv(pg_cluster, seeded, finance_member, name, literals)
    args = [arg for k, v in variables.items() for arg in ("-v", f"{k}={v}")]
    code, by_exchange, _ = exchange_on_seeded("report", name, *args, "--format", "csv")

    assert (by_psql.returncode, by_psql.stderr, code) == (0, "", 0)

    def table(text: str) -> list[dict[str, str]]:
        rows = list(csv.DictReader(io.StringIO(text)))
        for row in rows:  # psql prints times its own way; the values are compared above
            row.pop("created_at", None)
            row.pop("booked_at", None)
        return rows

    assert table(by_psql.stdout) == table(by_exchange)
    assert table(by_exchange)  # the history has rows for each report


def test_psql_without_a_required_variable_says_what_is_missing(
    pg_cluster: Cluster, seeded: Seeded, finance_member: str
) -> None:
    done = psql_csv(pg_cluster, seeded, finance_member, "statement", {})

    assert (done.stdout, done.stderr) == ("", "statement.sql needs the customer: -v customer=ID\n")
