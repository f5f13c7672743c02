"""The report files of `sql/reports/`, run with bind parameters: `exchange report NAME`.

A report file is written for psql (`psql -v as_of="'2026-11-01T00:00:00Z'" -f FILE`): one SQL
statement that reads only the views of schema `reporting`, whose psql variables (`:name`) are
declared at the top, each in a block that gives it a default or says it is required:

    \\if :{?as_of}            \\if :{?customer}
    \\else                    \\else
        \\set as_of NULL          \\warn 'statement needs -v customer=ID'
    \\endif                       \\quit
                              \\endif

psql interpolates a variable's value as SQL text (so its users write SQL literals). Here every
given value is a bind parameter instead, never SQL text, and an optional variable left out is
NULL; the statement gives NULL its meaning (`coalesce((:as_of)::timestamptz, now())`). Nothing
else of psql's syntax is accepted, so a file cannot mean one thing in psql and another here.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from app.migrate import SQL_DIR

REPORTS_DIR = SQL_DIR / "reports"

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_IF = re.compile(rf"\\if\s+:\{{\?({NAME})\}}\s*")
_SET_NULL = re.compile(rf"\\set\s+({NAME})\s+NULL\s*")
_WARN = re.compile(r"\\warn\s+'((?:[^'\\]|'')*)'\s*")
_BLOCK = (
    "a report's only psql commands are variable blocks: \\if :{?NAME} \\else, then"
    " \\set NAME NULL (optional) or \\warn '...' and \\quit (required), then \\endif"
)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


class ReportError(Exception):
    """A report that does not exist, a variable it does not take or lacks, a malformed file."""


@dataclass(frozen=True)
class Variable:
    name: str
    required_message: str | None  # None: optional (NULL when not given)


@dataclass(frozen=True)
class Report:
    name: str
    path: Path
    variables: dict[str, Variable]
    query: str  # for psycopg: %(name)s placeholders, every other % doubled


@dataclass(frozen=True)
class ReportResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def report_names() -> list[str]:
    return sorted(path.stem for path in REPORTS_DIR.glob("*.sql"))


def load(name: str) -> Report:
    if name not in report_names():
        raise ReportError(f"no report named {name!r}; reports: {', '.join(report_names())}")
    path = REPORTS_DIR / f"{name}.sql"
    return parse(name, path.read_text(), path)


def _declarations(name: str, lines: list[str]) -> tuple[dict[str, Variable], list[str]]:
    """The variable blocks (psql meta-commands) and the SQL lines left once they are removed."""
    variables: dict[str, Variable] = {}
    sql_lines: list[str] = []
    block: list[str] = []  # the meta-commands of the block being read
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped.startswith("\\"):
            if block:
                raise ReportError(f"{name}.sql:{number}: SQL inside a \\if block (no \\endif?)")
            sql_lines.append(line)
            continue
        if not block and _IF.fullmatch(stripped) is None:
            command = stripped.split()[0]
            raise ReportError(f"{name}.sql:{number}: {command} outside a variable block: {_BLOCK}")
        sql_lines.append("")  # keep line numbers for the server's error positions
        block.append(stripped)
        if stripped != "\\endif":
            continue
        variable = _variable_block(block)
        if variable is None:
            raise ReportError(f"{name}.sql:{number}: not a variable block: {_BLOCK}")
        variables[variable.name] = variable
        block = []
    if block:
        raise ReportError(f"{name}.sql: \\if without \\endif")
    return variables, sql_lines


def _variable_block(block: list[str]) -> Variable | None:
    if len(block) < 4 or block[1] != "\\else":
        return None
    start = _IF.fullmatch(block[0])
    if start is None:
        return None
    variable = start.group(1)
    body = block[2:-1]
    if len(body) == 1:
        default = _SET_NULL.fullmatch(body[0])
        if default is not None and default.group(1) == variable:
            return Variable(variable, None)
    if len(body) == 2 and body[1] == "\\quit":
        warning = _WARN.fullmatch(body[0])
        if warning is not None:
            return Variable(variable, warning.group(1).replace("''", "'"))
    return None


def _to_placeholders(name: str, sql: str, declared: dict[str, Variable]) -> tuple[str, set[str]]:
    """psql's `:name` outside literals, quoted identifiers and comments becomes `%(name)s`;
    every `%` is doubled for psycopg. Returns the query and the variables it uses."""
    out: list[str] = []
    used: set[str] = set()
    statement_ended = False  # a `;` was seen: only blanks and comments may follow
    i, n = 0, len(sql)

    def copy_until(end: int) -> None:
        out.append(sql[i:end].replace("%", "%%"))

    while i < n:
        char, pair = sql[i], sql[i : i + 2]
        if statement_ended and not char.isspace() and pair not in ("--", "/*"):
            raise ReportError(f"{name}.sql: a report is one statement")
        if pair == "--":
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif pair == "/*":
            end = sql.find("*/", i + 2)
            if end < 0:
                raise ReportError(f"{name}.sql: unterminated comment")
            end += 2
        elif char in "'\"":
            end = i + 1
            while True:
                end = sql.find(char, end)
                if end < 0:
                    raise ReportError(f"{name}.sql: unterminated {char} quote")
                if sql[end + 1 : end + 2] == char:  # a doubled quote stays inside
                    end += 2
                    continue
                end += 1
                break
            if char == "'" and re.search(r"(?<![\w$])[eE]$", sql[:i]):
                raise ReportError(f"{name}.sql: E'' strings are not supported in reports")
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)) is not None:
            close = sql.find(tag.group(), tag.end())
            if close < 0:
                raise ReportError(f"{name}.sql: unterminated {tag.group()} quote")
            end = close + len(tag.group())
        elif pair == "::":
            end = i + 2
        elif char == ":" and (variable := re.compile(NAME).match(sql, i + 1)) is not None:
            if variable.group() not in declared:
                raise ReportError(f"{name}.sql: variable :{variable.group()} is not declared")
            used.add(variable.group())
            out.append(f"%({variable.group()})s")
            i = variable.end()
            continue
        elif char == ":" and sql[i + 1 : i + 2] in ("'", '"', "{"):
            raise ReportError(f"{name}.sql: only :name variables are supported in reports")
        elif char == "\\":  # psql would take it for a command, PostgreSQL would not
            raise ReportError(f"{name}.sql: a backslash outside a literal (a psql command?)")
        else:
            statement_ended = statement_ended or char == ";"
            end = i + 1
        copy_until(end)
        i = end
    return "".join(out), used


def parse(name: str, text: str, path: Path | None = None) -> Report:
    variables, sql_lines = _declarations(name, text.splitlines())
    query, used = _to_placeholders(name, "\n".join(sql_lines), variables)
    unused = sorted(set(variables) - used)
    if unused:
        raise ReportError(f"{name}.sql declares variables it never uses: {', '.join(unused)}")
    return Report(name, path or REPORTS_DIR / f"{name}.sql", variables, query)


def parameters(report: Report, given: dict[str, str]) -> dict[str, str | None]:
    """The bind parameters: the given values, NULL for optional variables not given."""
    unknown = sorted(set(given) - set(report.variables))
    if unknown:
        takes = ", ".join(sorted(report.variables)) or "no variable"
        raise ReportError(
            f"report {report.name} does not take {', '.join(unknown)} (it takes: {takes})"
        )
    values: dict[str, str | None] = {}
    for variable in report.variables.values():
        if variable.name in given:
            values[variable.name] = given[variable.name]
        elif variable.required_message is not None:
            raise ReportError(f"report {report.name}: {variable.required_message}")
        else:
            values[variable.name] = None
    return values


def run(conn: psycopg.Connection, report: Report, given: dict[str, str]) -> ReportResult:
    """Runs the report on `conn` (in the caller's transaction) and returns all its rows."""
    values = parameters(report, given)
    cursor = conn.execute(report.query, values)
    assert cursor.description is not None, report.name
    return ReportResult([column.name for column in cursor.description], cursor.fetchall())


def _text(value: object) -> str:
    """A value as text: decimals exactly as stored (never floats, never exponents)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def as_csv(result: ReportResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([_text(value) for value in row] for row in result.rows)
    return out.getvalue()


def as_table(result: ReportResult) -> str:
    """Aligned columns, numbers to the right, as psql prints them."""
    cells = [[_text(value) for value in row] for row in result.rows]
    widths = [
        max([len(column), *(len(row[i]) for row in cells)])
        for i, column in enumerate(result.columns)
    ]
    numeric = [
        bool(result.rows) and all(isinstance(row[i], int | Decimal | None) for row in result.rows)
        for i in range(len(result.columns))
    ]
    lines = [
        " | ".join(
            column.center(width) for column, width in zip(result.columns, widths, strict=True)
        ).rstrip(),
        "-+-".join("-" * width for width in widths),
    ]
    for row in cells:
        lines.append(
            " | ".join(
                cell.rjust(width) if right else cell.ljust(width)
                for cell, width, right in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    count = len(cells)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines) + "\n"
