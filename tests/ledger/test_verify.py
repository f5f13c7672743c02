"""`exchange verify` reports each way of tampering with the ledger, by the right invariant.

Each test tampers as the superuser (or as exchange_owner, through SET ROLE) and checks which
invariants the verifying connection (a superuser, as `exchange verify` uses) then finds broken.
Roles and parameter privileges are cluster-wide: tests that change exchange_app, its settings or
a parameter's grants use restore_app_role, so later tests see them clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from app.ledger import invariants, service
from app.pgcluster import Cluster
from tests.conftest import ScratchDatabase
from tests.ledger.helpers import (
    account_id,
    assert_invariants_hold,
    create_asset,
    funded_customer,
)


def broken(conn: psycopg.Connection) -> dict[str, list[str]]:
    """The violated invariants, by name, with their details (as the superuser sees them)."""
    conn.execute("RESET ROLE")
    return {v.invariant.name: v.details for v in invariants.violations(conn)}


def all_details(conn: psycopg.Connection, name: str) -> list[str]:
    """Every violation of one invariant, not only the first few that verify shows."""
    (invariant,) = [i for i in invariants.INVARIANTS if i.name == name]
    return [row[0] for row in conn.execute(invariant.query).fetchall()]


@pytest.fixture
def owner(admin: psycopg.Connection) -> psycopg.Connection:
    """The superuser connection acting as exchange_owner, as migrations do."""
    admin.execute("SET ROLE exchange_owner")
    return admin


@pytest.fixture
def restore_app_role(pg_cluster: Cluster, db: ScratchDatabase) -> Iterator[None]:
    """Puts the cluster-wide role exchange_app back as sql/roles.v1.sql created it: its attributes,
    no role membership, no `ALTER ROLE exchange_app [IN DATABASE ...] SET` (pg_db_role_setting)
    and no privilege on any parameter (pg_parameter_acl), for exchange_app or PUBLIC.

    Through a fresh superuser connection: the test's own may be broken, in a failed transaction
    or acting as another role."""
    yield
    with psycopg.connect(pg_cluster.conninfo(db.name), autocommit=True) as conn:
        conn.execute(
            "ALTER ROLE exchange_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
            " NOINHERIT NOREPLICATION"
        )
        for (role,) in conn.execute(
            "SELECT roleid::regrole::text FROM pg_auth_members"
            " WHERE member = 'exchange_app'::regrole"
        ).fetchall():
            conn.execute(f"REVOKE {role} FROM exchange_app")
        for (database,) in conn.execute(
            "SELECT d.datname FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            " WHERE s.setrole = 'exchange_app'::regrole"
        ).fetchall():
            conn.execute(
                sql.SQL("ALTER ROLE exchange_app IN DATABASE {} RESET ALL").format(
                    sql.Identifier(database)
                )
            )
        conn.execute("ALTER ROLE exchange_app RESET ALL")
        for (parameter,) in conn.execute("SELECT parname FROM pg_parameter_acl").fetchall():
            name = sql.SQL(".").join(sql.Identifier(part) for part in parameter.split("."))
            conn.execute(
                sql.SQL("REVOKE ALL ON PARAMETER {} FROM exchange_app, PUBLIC").format(name)
            )
        cluster_wide = {
            "app_role_attributes",
            "app_role_no_memberships",
            "app_role_no_parameter_privileges",
        }
        assert {
            name: details for name, details in broken(conn).items() if name in cluster_wide
        } == {}
        assert conn.execute(
            "SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'exchange_app'::regrole"
        ).fetchone() == (0,)


@pytest.fixture
def activity(admin: psycopg.Connection, app_conn: psycopg.Connection) -> dict[str, int]:
    """Ordinary activity through the application role: deposits, a withdrawal, transfers."""
    create_asset(admin, "USD", 2)
    create_asset(admin, "BTC", 8)
    alice = funded_customer(app_conn, "USD", Decimal("100.00"), "alice")
    bob = funded_customer(app_conn, "USD", Decimal("20.00"), "bob")
    service.deposit(app_conn, alice, "BTC", Decimal("0.12345678"), "btc-1")
    service.withdraw(app_conn, alice, "USD", Decimal("30.50"), "w-1")
    service.transfer(app_conn, alice, bob, "USD", Decimal("9.99"), "t-1")
    service.transfer(app_conn, alice, bob, "BTC", Decimal("0.00000001"), "t-2", "gift")
    return {"alice": alice, "bob": bob}


# A clean ledger ---------------------------------------------------------------------------------


def test_a_freshly_migrated_database_has_no_violations(admin: psycopg.Connection) -> None:
    assert broken(admin) == {}


def test_ordinary_activity_leaves_no_violations(
    admin: psycopg.Connection, app_conn: psycopg.Connection, activity: dict[str, int]
) -> None:
    assert broken(admin) == {}
    assert_invariants_hold(app_conn)  # the application role can run every check too


def test_a_trigger_enabled_always_is_fine(owner: psycopg.Connection) -> None:
    owner.execute("ALTER TABLE ledger.entry ENABLE ALWAYS TRIGGER entry_immutable")

    assert broken(owner) == {}


def test_every_invariant_has_a_distinct_snake_case_name() -> None:
    names = [invariant.name for invariant in invariants.INVARIANTS]

    assert len(set(names)) == len(names)
    assert all(name.isidentifier() and name == name.lower() for name in names)


# 1. Triggers that do not fire ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "detail"),
    [
        (
            "ALTER TABLE ledger.entry ENABLE REPLICA TRIGGER entry_immutable",
            "trigger entry_immutable on ledger.entry fires only in replica sessions",
        ),
        (
            "ALTER TABLE ledger.entry DISABLE TRIGGER entry_immutable",
            "trigger entry_immutable on ledger.entry is disabled",
        ),
        (
            "ALTER TABLE ledger.account DISABLE TRIGGER account_changes_through_entries_only",
            "trigger account_changes_through_entries_only on ledger.account is disabled",
        ),
        (
            "ALTER TABLE ledger.asset DISABLE TRIGGER asset_scale_immutable",
            "trigger asset_scale_immutable on ledger.asset is disabled",
        ),
        (
            "DROP TRIGGER journal_no_truncate ON ledger.journal",
            "trigger journal_no_truncate on ledger.journal is missing",
        ),
    ],
)
def test_trigger_that_does_not_fire_is_reported(
    owner: psycopg.Connection, statement: str, detail: str
) -> None:
    owner.execute(statement)

    assert broken(owner) == {"integrity_triggers_enabled": [detail]}


def test_disabled_foreign_key_trigger_is_reported(admin: psycopg.Connection) -> None:
    # Only a superuser can disable the internal triggers that enforce foreign keys.
    admin.execute("ALTER TABLE ledger.entry DISABLE TRIGGER ALL")

    found = broken(admin)

    assert set(found) == {"integrity_triggers_enabled"}
    assert any(
        "(enforcing entry_account_asset_fkey) on ledger.entry is disabled" in detail
        for detail in all_details(admin, "integrity_triggers_enabled")
    )


def test_trigger_calling_another_function_is_reported(owner: psycopg.Connection) -> None:
    owner.execute(
        "CREATE FUNCTION ledger.allow_change() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN coalesce(NEW, OLD); END $$"
    )
    owner.execute("DROP TRIGGER entry_immutable ON ledger.entry")
    owner.execute(
        "CREATE TRIGGER entry_immutable BEFORE UPDATE OR DELETE ON ledger.entry"
        " FOR EACH ROW EXECUTE FUNCTION ledger.allow_change()"
    )

    assert broken(owner) == {
        "integrity_triggers_enabled": [
            "trigger entry_immutable on ledger.entry calls ledger.allow_change(),"
            " not ledger.reject_change()"
        ]
    }


# Each case re-creates one guarding trigger, as the owner, with its name and function unchanged.
@pytest.mark.parametrize(
    ("table", "trigger", "definition", "detail"),
    [
        (
            "entry",
            "entry_immutable",
            "BEFORE INSERT ON ledger.entry FOR EACH ROW WHEN (false)"
            " EXECUTE FUNCTION ledger.reject_change()",
            "trigger entry_immutable on ledger.entry is BEFORE INSERT FOR EACH ROW WHEN (false),"
            " expected BEFORE DELETE OR UPDATE FOR EACH ROW",
        ),
        (
            "account",
            "account_changes_through_entries_only",
            "BEFORE UPDATE ON ledger.account FOR EACH ROW WHEN (pg_trigger_depth() > 5)"
            " EXECUTE FUNCTION ledger.reject_direct_balance()",
            "trigger account_changes_through_entries_only on ledger.account is BEFORE UPDATE"
            " FOR EACH ROW WHEN ((pg_trigger_depth() > 5)), expected BEFORE UPDATE FOR EACH ROW"
            " WHEN ((pg_trigger_depth() = 0))",
        ),
        (
            "account",
            "account_changes_through_entries_only",
            "BEFORE UPDATE ON ledger.account FOR EACH ROW"
            " EXECUTE FUNCTION ledger.reject_direct_balance()",
            "trigger account_changes_through_entries_only on ledger.account is BEFORE UPDATE"
            " FOR EACH ROW, expected BEFORE UPDATE FOR EACH ROW WHEN ((pg_trigger_depth() = 0))",
        ),
        (
            "journal",
            "journal_immutable",
            "AFTER UPDATE OR DELETE ON ledger.journal FOR EACH ROW"
            " EXECUTE FUNCTION ledger.reject_change()",
            "trigger journal_immutable on ledger.journal is AFTER DELETE OR UPDATE FOR EACH ROW,"
            " expected BEFORE DELETE OR UPDATE FOR EACH ROW",
        ),
        (
            "account",
            "account_no_delete",
            "BEFORE DELETE ON ledger.account FOR EACH STATEMENT"
            " EXECUTE FUNCTION ledger.reject_change()",
            "trigger account_no_delete on ledger.account is BEFORE DELETE FOR EACH STATEMENT,"
            " expected BEFORE DELETE FOR EACH ROW",
        ),
        (
            "entry",
            "entry_immutable",
            "BEFORE UPDATE OF balance_after OR DELETE ON ledger.entry FOR EACH ROW"
            " EXECUTE FUNCTION ledger.reject_change()",
            "trigger entry_immutable on ledger.entry is BEFORE DELETE OR UPDATE OF balance_after"
            " FOR EACH ROW, expected BEFORE DELETE OR UPDATE FOR EACH ROW",
        ),
        (
            "asset",
            "asset_scale_immutable",
            "BEFORE UPDATE OF code ON ledger.asset FOR EACH ROW"
            " WHEN (OLD.scale <> NEW.scale OR OLD.code <> NEW.code)"
            " EXECUTE FUNCTION ledger.reject_asset_rescale()",
            "trigger asset_scale_immutable on ledger.asset is BEFORE UPDATE OF code FOR EACH ROW"
            " WHEN (((old.scale <> new.scale) OR (old.code <> new.code))), expected BEFORE UPDATE"
            " OF code, scale FOR EACH ROW"
            " WHEN (((old.scale <> new.scale) OR (old.code <> new.code)))",
        ),
        (
            # Conditions compare as PostgreSQL prints them: swapped operands are a change.
            "asset",
            "asset_scale_immutable",
            "BEFORE UPDATE OF scale, code ON ledger.asset FOR EACH ROW"
            " WHEN (OLD.code <> NEW.code OR OLD.scale <> NEW.scale)"
            " EXECUTE FUNCTION ledger.reject_asset_rescale()",
            "trigger asset_scale_immutable on ledger.asset is BEFORE UPDATE OF code, scale"
            " FOR EACH ROW WHEN (((old.code <> new.code) OR (old.scale <> new.scale))), expected"
            " BEFORE UPDATE OF code, scale FOR EACH ROW"
            " WHEN (((old.scale <> new.scale) OR (old.code <> new.code)))",
        ),
        (
            "entry",
            "entry_check_statement",
            "AFTER INSERT ON ledger.entry REFERENCING NEW TABLE AS new_entries"
            " FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION ledger.entry_check_statement()",
            "trigger entry_check_statement on ledger.entry is AFTER INSERT REFERENCING NEW TABLE"
            " AS new_entries FOR EACH STATEMENT WHEN (false), expected AFTER INSERT REFERENCING"
            " NEW TABLE AS new_entries FOR EACH STATEMENT",
        ),
        (
            # Without its transition table, the function would read any table named
            # new_entries on the search path (a temporary one, say): its checks would see nothing.
            "entry",
            "entry_check_statement",
            "AFTER INSERT ON ledger.entry FOR EACH STATEMENT"
            " EXECUTE FUNCTION ledger.entry_check_statement()",
            "trigger entry_check_statement on ledger.entry is AFTER INSERT FOR EACH STATEMENT,"
            " expected AFTER INSERT REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT",
        ),
        (
            # Arguments that repeat the text after a WHEN condition do not hide it: the condition
            # is read up to the last `) EXECUTE FUNCTION `, here with a piece of the call.
            "account",
            "account_changes_through_entries_only",
            "BEFORE UPDATE ON ledger.account FOR EACH ROW WHEN (false)"
            " EXECUTE FUNCTION ledger.reject_direct_balance(') EXECUTE FUNCTION ')",
            "trigger account_changes_through_entries_only on ledger.account is BEFORE UPDATE"
            " FOR EACH ROW WHEN (false) EXECUTE FUNCTION ledger.reject_direct_balance('),"
            " expected BEFORE UPDATE FOR EACH ROW WHEN ((pg_trigger_depth() = 0))",
        ),
    ],
)
def test_trigger_redefined_under_its_name_is_reported(
    owner: psycopg.Connection, table: str, trigger: str, definition: str, detail: str
) -> None:
    owner.execute(f"DROP TRIGGER {trigger} ON ledger.{table}")
    owner.execute(f"CREATE TRIGGER {trigger} {definition}")

    found = broken(owner)

    assert found == {"integrity_triggers_enabled": [detail]}


def test_trigger_recreated_as_defined_is_fine(owner: psycopg.Connection) -> None:
    # Other spellings of the same definitions: the catalog holds the same triggers.
    owner.execute("DROP TRIGGER account_balance_starts_at_zero ON ledger.account")
    owner.execute(
        "CREATE TRIGGER account_balance_starts_at_zero BEFORE INSERT ON ledger.account"
        " FOR EACH ROW WHEN (new.balance<>0   OR   NEW.entry_count <> 0)"
        " EXECUTE PROCEDURE ledger.reject_direct_balance()"
    )
    owner.execute("DROP TRIGGER asset_scale_immutable ON ledger.asset")
    owner.execute(
        "CREATE TRIGGER asset_scale_immutable BEFORE UPDATE OF code, scale ON ledger.asset"
        " FOR EACH ROW WHEN ((OLD.scale <> NEW.scale) OR (OLD.code <> NEW.code))"
        " EXECUTE FUNCTION ledger.reject_asset_rescale()"
    )

    assert broken(owner) == {}


def test_expected_trigger_types_match_the_bits_of_pg_trigger() -> None:
    by_name = {trigger.name: trigger for trigger in invariants.LEDGER_TRIGGERS}

    assert by_name["entry_immutable"].tgtype == 27  # ROW 1 | BEFORE 2 | DELETE 8 | UPDATE 16
    assert by_name["entry_check_statement"].tgtype == 4  # AFTER INSERT FOR EACH STATEMENT
    assert by_name["entry_no_truncate"].tgtype == 34  # BEFORE 2 | TRUNCATE 32, statement level
    assert len(by_name) == len(invariants.LEDGER_TRIGGERS)


def test_replica_mode_as_the_database_default_is_reported(
    admin: psycopg.Connection, db: ScratchDatabase
) -> None:
    admin.execute(f'ALTER DATABASE "{db.name}" SET session_replication_role = replica')

    with db.connect() as fresh:  # a new session starts in replica mode
        assert broken(fresh) == {
            "integrity_triggers_enabled": [
                "ALTER DATABASE sets session_replication_role=replica:"
                " no ordinary trigger or foreign key fires in those sessions",
                "sessions start with session_replication_role = replica (from database)",
            ]
        }


@pytest.mark.usefixtures("restore_app_role")
def test_replica_mode_as_the_app_role_default_is_reported(
    admin: psycopg.Connection, db: ScratchDatabase
) -> None:
    admin.execute(
        f'ALTER ROLE exchange_app IN DATABASE "{db.name}" SET session_replication_role = replica'
    )

    found = broken(admin)

    assert found == {
        "integrity_triggers_enabled": [
            "ALTER ROLE exchange_app sets session_replication_role=replica:"
            " no ordinary trigger or foreign key fires in those sessions"
        ]
    }


# 2. Constraints dropped, not validated or loosened ------------------------------------------


@pytest.mark.parametrize(
    ("statements", "detail"),
    [
        (
            ["ALTER TABLE ledger.account DROP CONSTRAINT account_balance_non_negative"],
            "check constraint account_balance_non_negative on ledger.account is missing",
        ),
        (
            [
                "ALTER TABLE ledger.account DROP CONSTRAINT account_balance_non_negative",
                "ALTER TABLE ledger.account ADD CONSTRAINT account_balance_non_negative"
                " CHECK (bucket = 'custody' OR balance >= 0) NOT VALID",
            ],
            "check constraint account_balance_non_negative on ledger.account"
            " is not validated (NOT VALID)",
        ),
        (
            [
                "ALTER TABLE ledger.entry DROP CONSTRAINT entry_account_asset_fkey",
                "ALTER TABLE ledger.entry ADD CONSTRAINT entry_account_asset_fkey"
                " FOREIGN KEY (account_id, asset) REFERENCES ledger.account (id, asset) NOT VALID",
            ],
            "foreign key constraint entry_account_asset_fkey on ledger.entry"
            " is not validated (NOT VALID)",
        ),
        (
            ["ALTER TABLE ledger.journal DROP CONSTRAINT journal_idempotency_key_key"],
            "unique constraint journal_idempotency_key_key on ledger.journal is missing",
        ),
        (
            ["ALTER TABLE ledger.entry DROP CONSTRAINT entry_amount_finite"],
            "check constraint entry_amount_finite on ledger.entry is missing",
        ),
        (
            ["ALTER TABLE ledger.entry DROP CONSTRAINT entry_amount_magnitude"],
            "check constraint entry_amount_magnitude on ledger.entry is missing",
        ),
        (
            [
                "ALTER TABLE ledger.asset DROP CONSTRAINT asset_scale_range",
                "ALTER TABLE ledger.asset ADD CONSTRAINT asset_scale_range UNIQUE (scale, code)",
            ],
            "check constraint asset_scale_range on ledger.asset has type u",
        ),
        (
            ["ALTER TABLE ledger.entry ALTER COLUMN amount DROP NOT NULL"],
            "column ledger.entry.amount allows NULL",
        ),
    ],
)
def test_weakened_constraint_is_reported(
    owner: psycopg.Connection, statements: list[str], detail: str
) -> None:
    for statement in statements:
        owner.execute(statement)

    assert broken(owner) == {"integrity_constraints_present": [detail]}


def test_dropping_a_primary_key_is_reported(owner: psycopg.Connection) -> None:
    # CASCADE drops what depends on it too: the foreign key of ledger.journal.kind.
    owner.execute("ALTER TABLE ledger.journal_kind DROP CONSTRAINT journal_kind_pkey CASCADE")

    found = broken(owner)

    assert set(found) == {"integrity_constraints_present"}
    assert sorted(found["integrity_constraints_present"]) == [
        "foreign key constraint journal_kind_fkey on ledger.journal is missing",
        "primary key constraint journal_kind_pkey on ledger.journal_kind is missing",
    ]


# 3. Role attributes and memberships of exchange_app --------------------------------------------


@pytest.mark.usefixtures("restore_app_role")
@pytest.mark.parametrize(
    ("grant", "detail"),
    [
        ("GRANT exchange_owner TO exchange_app", "exchange_app is a member of exchange_owner"),
        (
            "GRANT pg_write_all_data TO exchange_app WITH ADMIN OPTION",
            "exchange_app is a member of pg_write_all_data (with admin option)",
        ),
    ],
)
def test_app_role_membership_is_reported(
    admin: psycopg.Connection, grant: str, detail: str
) -> None:
    # exchange_app is NOINHERIT: has_table_privilege misses what it could do after SET ROLE.
    admin.execute(grant)

    assert broken(admin) == {"app_role_no_memberships": [detail]}


@pytest.mark.usefixtures("restore_app_role")
@pytest.mark.parametrize(
    ("attribute", "also_broken"),
    [
        ("BYPASSRLS", set()),
        ("CREATEROLE", set()),
        ("CREATEDB", set()),
        ("REPLICATION", set()),
        ("INHERIT", set()),
        # A superuser holds every privilege, so the privilege checks fail too.
        (
            "SUPERUSER",
            {
                "app_role_cannot_write_ledger",
                "app_role_executes_only_whitelisted_functions",
                "app_role_no_parameter_privileges",
            },
        ),
    ],
)
def test_app_role_attribute_is_reported(
    admin: psycopg.Connection, attribute: str, also_broken: set[str]
) -> None:
    admin.execute(f"ALTER ROLE exchange_app {attribute}")

    found = broken(admin)

    assert set(found) == {"app_role_attributes"} | also_broken
    assert found["app_role_attributes"] == [f"exchange_app has {attribute}"]


@pytest.mark.usefixtures("restore_app_role")
def test_app_role_is_restored_when_the_test_connection_is_gone(
    admin: psycopg.Connection, db: ScratchDatabase
) -> None:
    admin.execute("ALTER ROLE exchange_app SUPERUSER NOLOGIN")
    admin.execute("GRANT pg_signal_backend TO exchange_app")
    admin.execute("ALTER ROLE exchange_app SET statement_timeout = '1s'")
    admin.execute(f"ALTER ROLE exchange_app IN DATABASE \"{db.name}\" SET work_mem = '1MB'")
    admin.execute("GRANT SET ON PARAMETER session_replication_role TO exchange_app")
    admin.close()  # restore_app_role does not need it (and the db fixture checks the role)


def test_app_role_owning_a_ledger_table_is_reported(admin: psycopg.Connection) -> None:
    admin.execute("ALTER TABLE ledger.journal_kind OWNER TO exchange_app")

    found = broken(admin)

    # An owner holds every privilege on what it owns.
    assert set(found) == {"app_role_owns_nothing", "app_role_cannot_write_ledger"}
    assert found["app_role_owns_nothing"] == ["exchange_app owns table ledger.journal_kind"]


# 4. Write privileges, down to single columns ----------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "detail"),
    [
        (
            "GRANT UPDATE (balance) ON ledger.account TO exchange_app",
            "exchange_app can UPDATE columns (balance) of ledger.account",
        ),
        (
            "GRANT INSERT (journal_id, account_id, asset, amount) ON ledger.entry TO PUBLIC",
            "exchange_app can INSERT columns (journal_id, account_id, asset, amount)"
            " of ledger.entry",
        ),
        (
            "GRANT UPDATE ON ledger.journal TO exchange_app",
            "exchange_app can UPDATE ledger.journal",
        ),
        (
            "GRANT DELETE ON ledger.customer TO exchange_app",
            "exchange_app can DELETE ledger.customer",
        ),
        (
            "GRANT TRUNCATE ON ledger.asset TO exchange_app",
            "exchange_app can TRUNCATE ledger.asset",
        ),
        ("GRANT TRIGGER ON ledger.entry TO exchange_app", "exchange_app can TRIGGER ledger.entry"),
        (
            "GRANT UPDATE ON SEQUENCE ledger.journal_id_seq TO exchange_app",
            "exchange_app can UPDATE sequence ledger.journal_id_seq",
        ),
        (
            "GRANT CREATE ON SCHEMA ledger TO exchange_app",
            "exchange_app can CREATE in schema ledger",
        ),
    ],
)
def test_app_role_write_privilege_is_reported(
    owner: psycopg.Connection, grant: str, detail: str
) -> None:
    owner.execute(grant)

    assert broken(owner) == {"app_role_cannot_write_ledger": [detail]}


# 5. EXECUTE beyond the four business functions -------------------------------------------------


@pytest.mark.parametrize(
    ("function", "grantee", "suffix"),
    [
        ("ledger.check_customer_request(numeric, text, text)", "exchange_app", ""),
        (
            "ledger.post_journal(text, text, text, bigint[], text[], numeric[])",
            "exchange_app",
            " (SECURITY DEFINER)",
        ),
        ("ledger.account_id(bigint, text, text, text)", "PUBLIC", " (SECURITY DEFINER)"),
        ("ledger.reject_change()", "PUBLIC", ""),
    ],
)
def test_app_role_executing_a_function_beyond_the_whitelist_is_reported(
    owner: psycopg.Connection, function: str, grantee: str, suffix: str
) -> None:
    owner.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {grantee}")

    found = broken(owner)

    assert set(found) == {"app_role_executes_only_whitelisted_functions"}
    signature = owner.execute("SELECT %s::regprocedure::text", (function,)).fetchone()
    assert signature is not None
    assert found["app_role_executes_only_whitelisted_functions"] == [
        f"exchange_app can execute {signature[0]}{suffix}"
    ]


def test_security_definer_wrapper_in_another_schema_is_reported(
    owner: psycopg.Connection, app_conn: psycopg.Connection
) -> None:
    # Raw-leg posting again, through the owner's rights: a wrapper outside schema ledger.
    owner.execute("CREATE SCHEMA api")
    owner.execute(
        "CREATE FUNCTION api.post(p_account_ids bigint[], p_assets text[], p_amounts numeric[])"
        " RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
        " AS $$ SELECT ledger.post_journal('transfer', NULL, NULL, p_account_ids, p_assets,"
        " p_amounts) $$"
    )
    owner.execute("GRANT USAGE ON SCHEMA api TO exchange_app")
    owner.execute("GRANT EXECUTE ON FUNCTION api.post(bigint[], text[], numeric[]) TO exchange_app")
    # The application reaches post_journal now: refused for want of accounts, not of privilege.
    with pytest.raises(psycopg.Error, match="unknown ledger account") as refused:
        app_conn.execute("SELECT api.post(ARRAY[-1, -2], ARRAY['USD', 'USD'], ARRAY[1, -1])")
    assert refused.value.sqlstate == "EX007"

    found = broken(owner)

    assert found == {
        "app_role_executes_only_whitelisted_functions": [
            "exchange_app can execute api.post(bigint[],text[],numeric[]) (SECURITY DEFINER)"
        ]
    }


def test_security_definer_function_public_by_default_is_reported(
    admin: psycopg.Connection,
) -> None:
    # Created by the superuser, not exchange_owner: PUBLIC may execute it by default.
    admin.execute(
        "CREATE FUNCTION public.escalate() RETURNS void LANGUAGE sql SECURITY DEFINER"
        " AS $$ SELECT $$"
    )

    found = broken(admin)

    assert found == {
        "app_role_executes_only_whitelisted_functions": [
            "exchange_app can execute escalate() (SECURITY DEFINER)"
        ]
    }


def test_functions_outside_ledger_that_exchange_app_cannot_misuse_are_fine(
    owner: psycopg.Connection,
) -> None:
    owner.execute("CREATE SCHEMA api")
    owner.execute("GRANT USAGE ON SCHEMA api TO exchange_app")
    # Runs with the caller's rights: no more than exchange_app may do anyway.
    owner.execute(
        "CREATE FUNCTION api.invoker(p bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT p $$"
    )
    owner.execute("GRANT EXECUTE ON FUNCTION api.invoker(bigint) TO exchange_app")
    # Runs with the owner's rights, but exchange_app may not execute it.
    owner.execute(
        "CREATE FUNCTION api.definer(p bigint) RETURNS bigint LANGUAGE sql SECURITY DEFINER"
        " AS $$ SELECT p $$"
    )
    owner.execute("REVOKE EXECUTE ON FUNCTION api.definer(bigint) FROM PUBLIC")

    assert broken(owner) == {}


def test_whitelist_names_existing_functions(admin: psycopg.Connection) -> None:
    for signature in invariants.APP_ROLE_FUNCTIONS:
        row = admin.execute("SELECT to_regprocedure(%s)", (signature,)).fetchone()
        assert row is not None and row[0] is not None, signature


def test_app_role_can_execute_every_whitelisted_function(admin: psycopg.Connection) -> None:
    for signature in invariants.APP_ROLE_FUNCTIONS:
        row = admin.execute(
            "SELECT has_function_privilege('exchange_app', %s, 'EXECUTE')", (signature,)
        ).fetchone()
        assert row == (True,), signature


# 5b. Privileges on parameters (PostgreSQL 15+) --------------------------------------------------


@pytest.mark.usefixtures("restore_app_role")
@pytest.mark.parametrize(
    ("grant", "details"),
    [
        (
            "GRANT SET ON PARAMETER session_replication_role TO exchange_app",
            ["exchange_app can SET parameter session_replication_role"],
        ),
        (
            "GRANT ALTER SYSTEM ON PARAMETER session_replication_role TO exchange_app",
            ["exchange_app can ALTER SYSTEM parameter session_replication_role"],
        ),
        (
            "GRANT ALL ON PARAMETER session_replication_role TO PUBLIC",
            [
                "exchange_app can SET parameter session_replication_role",
                "exchange_app can ALTER SYSTEM parameter session_replication_role",
            ],
        ),
        (
            "GRANT SET ON PARAMETER log_statement TO exchange_app",
            ["exchange_app can SET parameter log_statement"],
        ),
        (
            "GRANT ALTER SYSTEM ON PARAMETER exchange.allow_data_loss TO exchange_app",
            ["exchange_app can ALTER SYSTEM parameter exchange.allow_data_loss"],
        ),
    ],
)
def test_app_role_parameter_privilege_is_reported(
    admin: psycopg.Connection, grant: str, details: list[str]
) -> None:
    admin.execute(grant)

    found = broken(admin)

    assert found == {"app_role_no_parameter_privileges": details}


@pytest.mark.usefixtures("restore_app_role")
def test_revoked_parameter_privilege_is_fine(admin: psycopg.Connection) -> None:
    # The pg_parameter_acl row outlives the grant.
    admin.execute("GRANT SET ON PARAMETER session_replication_role TO exchange_app")
    admin.execute("REVOKE SET ON PARAMETER session_replication_role FROM exchange_app")

    assert broken(admin) == {}


# 6. Rules, inheritance children and extra triggers (policies: tests/tenancy) ---------------


@pytest.mark.parametrize(
    ("statement", "detail"),
    [
        (
            "CREATE RULE sneaky AS ON INSERT TO ledger.customer DO ALSO NOTHING",
            "rule sneaky on ledger.customer",
        ),
        (
            "CREATE RULE skip_delete AS ON DELETE TO ledger.entry DO INSTEAD NOTHING",
            "rule skip_delete on ledger.entry",
        ),
    ],
)
def test_rule_on_a_ledger_table_is_reported(
    owner: psycopg.Connection, statement: str, detail: str
) -> None:
    owner.execute(statement)

    assert broken(owner) == {"ledger_tables_have_no_rules_or_children": [detail]}


def test_inheritance_child_of_a_ledger_table_is_reported(admin: psycopg.Connection) -> None:
    # Rows of a child show in every query on the parent, bypassing the parent's triggers.
    admin.execute("CREATE SCHEMA shadow")
    admin.execute("CREATE TABLE shadow.entry () INHERITS (ledger.entry)")

    assert broken(admin) == {
        "ledger_tables_have_no_rules_or_children": ["shadow.entry inherits from ledger.entry"]
    }


def test_unexpected_trigger_on_a_ledger_table_is_reported(owner: psycopg.Connection) -> None:
    owner.execute(
        "CREATE FUNCTION ledger.skim() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN NEW; END $$"
    )
    owner.execute(
        "CREATE TRIGGER skim BEFORE INSERT ON ledger.entry"
        " FOR EACH ROW EXECUTE FUNCTION ledger.skim()"
    )

    assert broken(owner) == {
        "ledger_tables_have_only_expected_triggers": [
            "unexpected trigger skim on ledger.entry calls ledger.skim()"
        ]
    }


# 7. The data: edits that no trigger saw -------------------------------------------------------


def test_balance_edited_behind_the_triggers_is_reported(
    admin: psycopg.Connection, activity: dict[str, int]
) -> None:
    account = account_id(admin, activity["alice"], "USD", "available")
    admin.execute("SET session_replication_role = replica")  # no ordinary trigger fires
    admin.execute("UPDATE ledger.account SET balance = balance + 1 WHERE id = %s", (account,))
    admin.execute("RESET session_replication_role")

    found = broken(admin)

    assert set(found) == {"cached_balance_matches_entries", "trial_balance_zero"}
    assert found["cached_balance_matches_entries"] == [
        f"account {account} caches 60.51 over 3 entries; its entries sum to 59.51 over 3"
    ]


def test_balance_changed_by_a_nested_trigger_is_reported(
    owner: psycopg.Connection, app_conn: psycopg.Connection, activity: dict[str, int]
) -> None:
    # An UPDATE at trigger depth 1 passes account_changes_through_entries_only, and a statement
    # trigger named after entry_apply_statement runs after it has checked the entries.
    owner.execute(
        "CREATE FUNCTION ledger.bump() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN UPDATE ledger.account SET balance = balance + 5"
        " WHERE id IN (SELECT account_id FROM new_entries);"
        " RETURN NULL; END $$"
    )
    owner.execute(
        "CREATE TRIGGER zz_bump AFTER INSERT ON ledger.entry REFERENCING NEW TABLE AS new_entries"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger.bump()"
    )
    service.deposit(app_conn, activity["bob"], "USD", Decimal("1.00"), "after-bump")

    found = broken(owner)

    assert "ledger_tables_have_only_expected_triggers" in found
    assert "cached_balance_matches_entries" in found


def test_entry_of_a_missing_account_is_reported(
    admin: psycopg.Connection, activity: dict[str, int]
) -> None:
    journal = admin.execute("SELECT min(id) FROM ledger.journal").fetchone()
    assert journal is not None
    admin.execute("SET session_replication_role = replica")  # foreign keys do not fire either
    admin.execute(
        "INSERT INTO ledger.entry (journal_id, account_id, account_seq, asset, amount,"
        " balance_after) VALUES (%s, -1, 1, 'USD', 1, 1), (%s, -2, 1, 'USD', -1, -1)",
        (journal[0], journal[0]),
    )
    admin.execute("RESET session_replication_role")

    found = broken(admin)

    assert "entry_asset_matches_account" in found
    assert set(found["entry_asset_matches_account"]) == {
        f"entry {entry} is in account {account}, which does not exist"
        for entry, account in admin.execute(
            "SELECT id, account_id FROM ledger.entry WHERE account_id < 0"
        ).fetchall()
    }
