"""How `exchange report` reads a psql report file: its variable blocks, and `:name` turned into
bind parameters. No database needed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.reporting import reports
from app.reporting.reports import ReportError, ReportResult

OPTIONAL_AS_OF = "\\if :{?as_of}\n\\else\n    \\set as_of NULL\n\\endif\n"
REQUIRED_CUSTOMER = (
    "\\if :{?customer}\n\\else\n    \\warn 'needs -v customer=ID'\n    \\quit\n\\endif\n"
)


def parse(text: str) -> reports.Report:
    return reports.parse("example", text)


@pytest.mark.parametrize("name", reports.report_names())
def test_every_report_file_parses_and_documents_each_variable_in_its_header(name: str) -> None:
    report = reports.load(name)
    header = report.path.read_text().split("\\if", 1)[0]

    assert report.variables
    for variable in report.variables:
        assert f"--   {variable} " in header, f"{name}.sql does not document {variable}"


def test_the_issue_reports_exist_and_take_as_of() -> None:
    issue = {"trial_balance", "statement", "fee_revenue", "daily_volume", "reconciliation"}

    assert issue <= set(reports.report_names())
    assert all("as_of" in reports.load(name).variables for name in issue)


def test_a_variable_becomes_a_named_bind_parameter_and_a_cast_stays() -> None:
    report = parse(OPTIONAL_AS_OF + "SELECT (:as_of)::timestamptz, :as_of::text;\n")

    assert report.query.strip() == "SELECT (%(as_of)s)::timestamptz, %(as_of)s::text;"


def test_colons_inside_literals_identifiers_and_comments_are_not_variables() -> None:
    text = OPTIONAL_AS_OF + (
        "SELECT ':as_of', \"a:as_of\", $$:as_of$$, $q$:as_of$q$ -- :as_of\n"
        "/* :as_of */ WHERE x < :as_of\n"
    )

    assert parse(text).query.strip() == (
        "SELECT ':as_of', \"a:as_of\", $$:as_of$$, $q$:as_of$q$ -- :as_of\n"
        "/* :as_of */ WHERE x < %(as_of)s"
    )


def test_percent_signs_are_doubled_for_psycopg_everywhere() -> None:
    report = parse(OPTIONAL_AS_OF + "SELECT format('%s', 5 % 3), :as_of -- 100%\n")

    assert report.query.strip() == "SELECT format('%%s', 5 %% 3), %(as_of)s -- 100%%"


def test_an_optional_variable_not_given_is_null() -> None:
    report = parse(OPTIONAL_AS_OF + "SELECT :as_of")

    assert reports.parameters(report, {}) == {"as_of": None}
    assert reports.parameters(report, {"as_of": "2026-11-01"}) == {"as_of": "2026-11-01"}


def test_a_required_variable_not_given_is_refused_with_the_files_message() -> None:
    report = parse(REQUIRED_CUSTOMER + "SELECT :customer")

    with pytest.raises(ReportError, match="report example: needs -v customer=ID"):
        reports.parameters(report, {})


def test_a_variable_the_report_does_not_declare_is_refused() -> None:
    report = parse(OPTIONAL_AS_OF + "SELECT :as_of")

    with pytest.raises(ReportError, match=r"does not take tenant \(it takes: as_of\)"):
        reports.parameters(report, {"tenant": "acme"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT :undeclared", "variable :undeclared is not declared"),
        (OPTIONAL_AS_OF + "SELECT 1", "declares variables it never uses: as_of"),
        (OPTIONAL_AS_OF + "SELECT :as_of; SELECT 2", "a report is one statement"),
        (OPTIONAL_AS_OF + "SELECT :'as_of'", "only :name variables"),
        ("\\set as_of NULL\nSELECT 1", r"\\set outside a variable block"),
        (
            "\\if :{?as_of}\n\\else\n\\set as_of now()\n\\endif\nSELECT :as_of",
            "not a variable block",
        ),
        ("\\if :{?as_of}\n\\else\n\\set as_of NULL\nSELECT :as_of", "SQL inside a"),
        ("\\if :{?as_of}\n\\else\n\\set as_of NULL\n", r"\\if without \\endif"),
        ("\\copy t to 'f'\nSELECT 1", r"\\copy outside a variable block"),
        (OPTIONAL_AS_OF + "SELECT E'\\n', :as_of", "E'' strings are not supported"),
        (OPTIONAL_AS_OF + "SELECT ':as_of", "unterminated ' quote"),
        (OPTIONAL_AS_OF + "SELECT :as_of \\gx", "a backslash outside a literal"),
    ],
)
def test_a_file_psql_could_read_differently_is_refused(text: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        parse(text)


def test_a_trailing_semicolon_and_comment_are_one_statement() -> None:
    parse(OPTIONAL_AS_OF + "SELECT :as_of;\n-- the end\n")


def test_csv_prints_decimals_exactly_as_plain_numbers_and_null_as_empty() -> None:
    result = ReportResult(
        ["a", "b", "c", "d", "e"],
        [(Decimal("0E-8"), Decimal("1E+3"), Decimal("-0.000001"), None, "x,y")],
    )

    assert reports.as_csv(result) == 'a,b,c,d,e\n0.00000000,1000,-0.000001,,"x,y"\n'


def test_csv_prints_days_and_times_in_iso_8601() -> None:
    result = ReportResult(
        ["day", "at"], [(date(2026, 11, 1), datetime(2026, 11, 1, 12, 30, tzinfo=UTC))]
    )

    assert reports.as_csv(result) == "day,at\n2026-11-01,2026-11-01T12:30:00+00:00\n"


def test_table_aligns_numbers_right_and_text_left() -> None:
    result = ReportResult(["asset", "total"], [("BTC", Decimal("1.5")), ("USDT", Decimal("-20"))])

    assert reports.as_table(result) == (
        "asset | total\n------+------\nBTC   |   1.5\nUSDT  |   -20\n(2 rows)\n"
    )
