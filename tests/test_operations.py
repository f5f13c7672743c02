"""Operating the exchange: `exchange tenant|apikey|customer|db history|db set-app-password`, every
command's --help and failures, and the deployment files and guide staying true to the CLI."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from app import cli, migrate
from app.tenancy import keys
from tests.conftest import Exchange, ScratchDatabase
from tests.test_migrations import HEAD, REVISIONS

ROOT = migrate.ROOT
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
OPERATIONS_GUIDE = ROOT / "docs" / "operations.md"

# The commands an operator is promised (README, docs/operations.md).
OPERATOR_COMMANDS = [
    "db upgrade",
    "db downgrade",
    "db current",
    "db history",
    "db set-app-password",
    "tenant create",
    "tenant list",
    "apikey create",
    "apikey list",
    "apikey revoke",
    "asset create",
    "customer create",
    "instrument create",
    "instrument list",
    "instrument halt",
    "instrument resume",
    "verify",
    "serve",
]


def tenant_id(exchange: Exchange, name: str) -> int:
    code, out, err = exchange("tenant", "create", name)
    assert (code, err) == (0, ""), err
    return int(out)


def usage_error(exchange: Exchange, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Runs a command that argparse must refuse; returns its message (exit status 2)."""
    with pytest.raises(SystemExit) as exited:
        exchange(*args)
    assert exited.value.code == 2
    return capsys.readouterr().err


# --- tenants -------------------------------------------------------------------------------


def test_tenant_create_prints_the_new_tenants_id(exchange: Exchange, db: ScratchDatabase) -> None:
    code, out, err = exchange("tenant", "create", "acme")

    assert (code, err) == (0, "")
    with db.connect() as conn:
        rows = conn.execute("SELECT id, name FROM tenancy.tenant").fetchall()
    assert rows == [(int(out), "acme")]


def test_tenant_create_with_a_name_already_taken_fails_with_tenant_exists(
    exchange: Exchange,
) -> None:
    tenant_id(exchange, "acme")

    code, out, err = exchange("tenant", "create", "acme")

    assert (code, out) == (1, "")
    assert err.startswith("error [tenant_exists]: ")


def test_tenant_create_with_an_empty_name_fails_with_invalid_tenant_name(
    exchange: Exchange,
) -> None:
    code, _, err = exchange("tenant", "create", "")

    assert code == 1
    assert err.startswith("error [invalid_tenant_name]: ")


def test_tenant_list_shows_each_tenant_with_its_customers_and_active_keys(
    exchange: Exchange,
) -> None:
    acme = tenant_id(exchange, "acme")
    other = tenant_id(exchange, "other")
    exchange("customer", "create", "--tenant", str(acme), "--external-ref", "alice")
    exchange("apikey", "create", "--tenant", str(acme), "--scope", "read")

    code, out, _ = exchange("tenant", "list")

    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "name", "customers", "keys", "created"]
    assert [row.split()[:4] for row in rows] == [
        [str(acme), "acme", "1", "1"],
        [str(other), "other", "0", "0"],
    ]


# --- customers belong to a tenant ----------------------------------------------------------


def test_customer_create_gives_the_customer_to_the_named_tenant(
    exchange: Exchange, db: ScratchDatabase
) -> None:
    acme = tenant_id(exchange, "acme")

    code, out, _ = exchange("customer", "create", "--tenant", str(acme), "--external-ref", "bob")

    assert code == 0
    with db.connect() as conn:
        row = conn.execute(
            "SELECT tenant_id, external_ref FROM ledger.customer WHERE id = %s", (int(out),)
        ).fetchone()
    assert row == (acme, "bob")


def test_customer_create_for_an_unknown_tenant_fails_and_creates_nothing(
    exchange: Exchange, db: ScratchDatabase
) -> None:
    code, out, err = exchange("customer", "create", "--tenant", "999", "--external-ref", "bob")

    assert (code, out) == (1, "")
    assert err == "error [unknown_tenant]: no tenant 999\n"
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ledger.customer").fetchone() == (0,)


def test_customer_create_without_a_tenant_is_a_usage_error(
    exchange: Exchange, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(exchange, capsys, "customer", "create", "--external-ref", "bob")

    assert "the following arguments are required: --tenant" in err


# --- API keys ------------------------------------------------------------------------------


def authenticate(db: ScratchDatabase, key: str) -> keys.Principal | None:
    with db.connect() as conn:
        return keys.authenticate(conn, key)


def test_apikey_create_prints_the_key_alone_on_stdout_and_warns_it_is_shown_once(
    exchange: Exchange, db: ScratchDatabase
) -> None:
    acme = tenant_id(exchange, "acme")

    code, out, err = exchange(
        "apikey", "create", "--tenant", str(acme), "--scope", "read", "--scope", "trade"
    )

    assert code == 0
    key = out.strip()
    assert out == key + "\n"
    assert re.fullmatch(r"xk_\d+_\S+", key)
    assert "only time the key is shown" in err
    principal = authenticate(db, key)
    assert principal is not None
    assert (principal.tenant_id, principal.scopes) == (acme, frozenset({"read", "trade"}))


def test_apikey_create_admin_makes_an_operator_key(exchange: Exchange, db: ScratchDatabase) -> None:
    code, out, _ = exchange("apikey", "create", "--admin")

    assert code == 0
    principal = authenticate(db, out.strip())
    assert principal is not None
    assert principal.tenant_id is None
    assert principal.is_admin


def test_apikey_create_for_a_tenant_without_a_scope_fails_with_invalid_scopes(
    exchange: Exchange,
) -> None:
    acme = tenant_id(exchange, "acme")

    code, out, err = exchange("apikey", "create", "--tenant", str(acme))

    assert (code, out) == (1, "")
    assert err.startswith("error [invalid_scopes]: ")


def test_apikey_create_for_an_unknown_tenant_fails_with_unknown_tenant(
    exchange: Exchange,
) -> None:
    code, out, err = exchange("apikey", "create", "--tenant", "999", "--scope", "read")

    assert (code, out) == (1, "")
    assert err.startswith("error [unknown_tenant]: ")


def test_apikey_create_for_both_a_tenant_and_the_operator_is_a_usage_error(
    exchange: Exchange, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(exchange, capsys, "apikey", "create", "--tenant", "1", "--admin")

    assert "not allowed with argument" in err


def test_apikey_create_with_an_unknown_scope_is_a_usage_error(
    exchange: Exchange, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(exchange, capsys, "apikey", "create", "--tenant", "1", "--scope", "root")

    assert "invalid choice: 'root'" in err


def test_apikey_revoke_makes_the_key_stop_authenticating(
    exchange: Exchange, db: ScratchDatabase
) -> None:
    key = exchange("apikey", "create", "--admin")[1].strip()
    key_id = key.split("_")[1]

    code, out, err = exchange("apikey", "revoke", key_id)

    assert (code, out, err) == (0, f"api key {key_id} revoked\n", "")
    assert authenticate(db, key) is None


def test_apikey_revoke_of_a_revoked_key_succeeds_and_changes_nothing(
    exchange: Exchange,
) -> None:
    key_id = exchange("apikey", "create", "--admin")[1].split("_")[1]
    assert exchange("apikey", "revoke", key_id)[0] == 0

    assert exchange("apikey", "revoke", key_id)[0] == 0


def test_apikey_revoke_of_an_unknown_key_fails_with_unknown_api_key(exchange: Exchange) -> None:
    code, out, err = exchange("apikey", "revoke", "999")

    assert (code, out) == (1, "")
    assert err == "error [unknown_api_key]: no API key 999\n"


def test_apikey_list_shows_owners_scopes_and_revocations_but_never_a_secret(
    exchange: Exchange,
) -> None:
    acme = tenant_id(exchange, "acme")
    broker_key = exchange("apikey", "create", "--tenant", str(acme), "--scope", "read")[1]
    operator_key = exchange("apikey", "create", "--admin")[1]
    exchange("apikey", "revoke", operator_key.split("_")[1])

    code, out, _ = exchange("apikey", "list")

    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "tenant", "scopes", "created", "revoked"]
    broker, operator = (row.split() for row in rows)
    assert broker[:3] + broker[4:] == [broker_key.split("_")[1], str(acme), "read", "-"]
    assert operator[:3] == [operator_key.split("_")[1], "operator", "admin"]
    assert operator[4] != "-"
    for key in (broker_key, operator_key):
        assert key.strip().split("_", 2)[2] not in out


def test_apikey_list_for_a_tenant_shows_only_its_keys(exchange: Exchange) -> None:
    acme = tenant_id(exchange, "acme")
    other = tenant_id(exchange, "other")
    exchange("apikey", "create", "--tenant", str(acme), "--scope", "read")
    exchange("apikey", "create", "--tenant", str(other), "--scope", "read")

    code, out, _ = exchange("apikey", "list", "--tenant", str(other))

    assert code == 0
    assert [row.split()[1] for row in out.splitlines()[1:]] == [str(other)]


# --- schema migrations ---------------------------------------------------------------------


def test_db_history_lists_every_revision_oldest_first_and_stars_the_current_one(
    exchange: Exchange,
) -> None:
    code, out, _ = exchange("db", "history")

    assert code == 0
    lines = out.splitlines()
    assert [line[2:].split()[0] for line in lines] == REVISIONS
    assert [line[:2] for line in lines] == ["  "] * (len(REVISIONS) - 1) + ["* "]
    assert lines[-1].startswith(f"* {HEAD}  ")
    assert lines[0] == "  0001  Roles and the double-entry ledger."


def test_db_history_after_a_downgrade_stars_the_revision_the_database_is_at(
    exchange: Exchange,
) -> None:
    assert exchange("db", "downgrade", "0002")[0] == 0

    starred = [line for line in exchange("db", "history")[1].splitlines() if line[0] == "*"]

    assert [line.split()[1] for line in starred] == ["0002"]


def test_db_history_at_base_says_no_migration_is_applied(exchange: Exchange) -> None:
    assert exchange("db", "downgrade", "base")[0] == 0

    out = exchange("db", "history")[1]

    assert "*" not in out
    assert out.splitlines()[-1] == "(the database is at base: no migration applied)"


@pytest.fixture
def app_role_password_restored(db: ScratchDatabase) -> object:
    """The role is cluster-wide: take the password away again after the test."""
    yield
    with db.connect() as conn:
        conn.execute("ALTER ROLE exchange_app PASSWORD NULL")


def app_role_password(db: ScratchDatabase) -> str | None:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'exchange_app'"
        ).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.usefixtures("app_role_password_restored")
def test_db_set_app_password_stores_only_a_scram_hash_of_the_password(
    exchange: Exchange, db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_APP_PASSWORD", "correct-horse-battery")

    code, out, _ = exchange("db", "set-app-password")

    assert (code, out) == (0, "password of exchange_app set\n")
    stored = app_role_password(db)
    assert stored is not None
    assert stored.startswith("SCRAM-SHA-256$")
    assert "correct-horse-battery" not in stored


def test_db_set_app_password_without_the_variable_fails_and_changes_nothing(
    exchange: Exchange, db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXCHANGE_APP_PASSWORD", raising=False)

    code, out, err = exchange("db", "set-app-password")

    assert (code, out) == (1, "")
    assert err == "error: set EXCHANGE_APP_PASSWORD to the password\n"
    assert app_role_password(db) is None


# --- every command: --help, clear errors, non-zero exit ------------------------------------


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command, as 'db upgrade', 'verify', ..."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        return [" ".join(prefix)]
    return [
        path
        for name, child in subcommands[0].choices.items()
        for path in command_paths(child, (*prefix, name))
    ]


ALL_COMMANDS = command_paths(cli.build_parser())


def test_every_command_promised_to_operators_exists() -> None:
    assert [command for command in OPERATOR_COMMANDS if command not in ALL_COMMANDS] == []


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command.split(), "--help"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: exchange {command}")


def test_halting_an_unknown_instrument_fails_naming_it(exchange: Exchange) -> None:
    code, out, err = exchange("instrument", "halt", "NOPE-USD")

    assert (code, out) == (1, "")
    assert err.startswith("error [unknown_instrument]: ")
    assert "NOPE-USD" in err


def test_creating_an_asset_twice_fails_with_asset_exists(exchange: Exchange) -> None:
    assert exchange("asset", "create", "USD", "--scale", "2")[0] == 0

    code, _, err = exchange("asset", "create", "USD", "--scale", "2")

    assert code == 1
    assert err.startswith("error [asset_exists]: ")


def test_a_command_against_an_unreachable_database_fails_without_a_traceback(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nowhere = tmp_path / "no-server-here"
    monkeypatch.setenv("DATABASE_URL", f"postgresql:///exchange?host={nowhere}&connect_timeout=1")

    code, out, err = exchange("tenant", "list")

    assert (code, out) == (1, "")
    assert err.startswith("error: cannot reach the database: ")
    assert "Traceback" not in err


# --- deployment files and the operations guide --------------------------------------------


def parses(argv: list[str]) -> bool:
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def exchange_invocations(text: str) -> list[list[str]]:
    """The arguments of each `exchange ...` in shell lines (comments, pipes and && ignored)."""
    found = []
    for line in text.splitlines():
        line = re.sub(r"^-\s+", "", line.split("#", 1)[0].strip())  # also a YAML list item
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:  # an unbalanced quote: not a command line
                continue
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)  # VAR=value before the command
            if words[:1] == ["exchange"]:
                found.append(words[1:])
    return found


def test_the_image_runs_exchange_serve_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = DOCKERFILE.read_text()
    (user,) = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    (command,) = re.findall(r"^CMD\s+(\[.*\])$", dockerfile, re.MULTILINE)
    (exposed,) = re.findall(r"^EXPOSE\s+(\d+)", dockerfile, re.MULTILINE)
    argv = json.loads(command)

    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*/health", dockerfile, re.MULTILINE | re.DOTALL)
    assert argv[:2] == ["exchange", "serve"]
    assert parses(argv[1:])
    assert argv[argv.index("--port") + 1] == exposed


def test_the_compose_file_migrates_sets_the_app_password_then_starts_the_api() -> None:
    compose = COMPOSE.read_text()
    invocations = exchange_invocations(compose)

    assert ["db", "upgrade"] in invocations
    assert ["db", "set-app-password"] in invocations
    assert all(parses(argv) for argv in invocations), invocations
    assert "condition: service_completed_successfully" in compose
    assert "EXCHANGE_ADMIN_TOKEN" in compose
    assert "postgresql://exchange_app:" in compose  # the API is not the superuser


def test_the_operations_guide_covers_what_an_operator_does() -> None:
    headings = re.findall(r"^#+ (.+)$", OPERATIONS_GUIDE.read_text(), re.MULTILINE)

    for topic in ("Install", "Configur", "Upgrad", "Back up", "Restor", "Halt", "Rotat"):
        assert any(topic in heading for heading in headings), topic


def test_every_exchange_command_in_the_operations_guide_is_a_real_command() -> None:
    code_lines = [line for line in OPERATIONS_GUIDE.read_text().splitlines() if line[:4] == "    "]
    invocations = exchange_invocations("\n".join(code_lines))

    assert len(invocations) >= 10
    assert [argv for argv in invocations if not parses(argv)] == []
