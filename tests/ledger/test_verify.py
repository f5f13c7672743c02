"""`exchange verify` reports each way of tampering with the ledger, by the right invariant.

Each test tampers as the superuser (or as exchange_owner, through SET ROLE) and checks which
invariants the verifying connection (a superuser, as `exchange verify` uses) then finds broken.
Roles are cluster-wide: tests that change exchange_app restore it, so later tests see it clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from app.ledger import invariants, service
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
def restore_app_role(admin: psycopg.Connection) -> Iterator[None]:
    """Puts the cluster-wide role exchange_app back as sql/roles.v1.sql created it."""
    yield
    admin.execute("RESET ROLE")
    admin.execute(
        "ALTER ROLE exchange_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT"
        " NOREPLICATION"
    )
    for (role,) in admin.execute(
        "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = 'exchange_app'::regrole"
    ).fetchall():
        admin.execute(f"REVOKE {role} FROM exchange_app")


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

    found = broken(owner)

    assert set(found) == {"integrity_triggers_enabled"}
    assert found["integrity_triggers_enabled"] == [detail]


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

    found = broken(owner)

    assert set(found) == {"integrity_triggers_enabled"}
    assert found["integrity_triggers_enabled"] == [
        "trigger entry_immutable on ledger.entry calls ledger.allow_change(),"
        " not ledger.reject_change()"
    ]


def test_replica_mode_as_the_database_default_is_reported(
    admin: psycopg.Connection, db: ScratchDatabase
) -> None:
    admin.execute(f'ALTER DATABASE "{db.name}" SET session_replication_role = replica')

    with db.connect() as fresh:  # a new session starts in replica mode
        found = broken(fresh)

    assert set(found) == {"integrity_triggers_enabled"}
    assert found["integrity_triggers_enabled"] == [
        "ALTER DATABASE sets session_replication_role=replica:"
        " no ordinary trigger or foreign key fires in those sessions",
        "sessions start with session_replication_role = replica (from database)",
    ]


def test_replica_mode_as_the_app_role_default_is_reported(
    admin: psycopg.Connection, db: ScratchDatabase
) -> None:
    admin.execute(
        f'ALTER ROLE exchange_app IN DATABASE "{db.name}" SET session_replication_role = replica'
    )  # per database: dropped with the test database

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

    found = broken(owner)

    assert set(found) == {"integrity_constraints_present"}
    assert found["integrity_constraints_present"] == [detail]


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

    found = broken(admin)

    assert set(found) == {"app_role_no_memberships"}
    assert found["app_role_no_memberships"] == [detail]


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
            {"app_role_cannot_write_ledger", "app_role_executes_only_whitelisted_functions"},
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

    found = broken(owner)

    assert set(found) == {"app_role_cannot_write_ledger"}
    assert found["app_role_cannot_write_ledger"] == [detail]


# 5. EXECUTE beyond the four business functions -------------------------------------------------


@pytest.mark.parametrize(
    ("function", "grantee"),
    [
        ("ledger.check_customer_request(numeric, text, text)", "exchange_app"),
        ("ledger.post_journal(text, text, text, bigint[], text[], numeric[])", "exchange_app"),
        ("ledger.account_id(bigint, text, text, text)", "PUBLIC"),
        ("ledger.reject_change()", "PUBLIC"),
    ],
)
def test_app_role_executing_a_function_beyond_the_whitelist_is_reported(
    owner: psycopg.Connection, function: str, grantee: str
) -> None:
    owner.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {grantee}")

    found = broken(owner)

    assert set(found) == {"app_role_executes_only_whitelisted_functions"}
    signature = owner.execute("SELECT %s::regprocedure::text", (function,)).fetchone()
    assert signature is not None
    assert found["app_role_executes_only_whitelisted_functions"] == [
        f"exchange_app can execute {signature[0]}"
    ]


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


# 6. Rules, policies, inheritance children and extra triggers --------------------------------


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
        (
            "CREATE POLICY hide ON ledger.entry USING (amount > 0)",
            "row-level security policy hide on ledger.entry",
        ),
    ],
)
def test_rule_or_policy_on_a_ledger_table_is_reported(
    owner: psycopg.Connection, statement: str, detail: str
) -> None:
    owner.execute(statement)

    found = broken(owner)

    assert set(found) == {"ledger_tables_have_no_rules_policies_or_children"}
    assert found["ledger_tables_have_no_rules_policies_or_children"] == [detail]


def test_inheritance_child_of_a_ledger_table_is_reported(admin: psycopg.Connection) -> None:
    # Rows of a child show in every query on the parent, bypassing the parent's triggers.
    admin.execute("CREATE SCHEMA shadow")
    admin.execute("CREATE TABLE shadow.entry () INHERITS (ledger.entry)")

    found = broken(admin)

    assert set(found) == {"ledger_tables_have_no_rules_policies_or_children"}
    assert found["ledger_tables_have_no_rules_policies_or_children"] == [
        "shadow.entry inherits from ledger.entry"
    ]


def test_unexpected_trigger_on_a_ledger_table_is_reported(owner: psycopg.Connection) -> None:
    owner.execute(
        "CREATE FUNCTION ledger.skim() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN NEW; END $$"
    )
    owner.execute(
        "CREATE TRIGGER skim BEFORE INSERT ON ledger.entry"
        " FOR EACH ROW EXECUTE FUNCTION ledger.skim()"
    )

    found = broken(owner)

    assert set(found) == {"ledger_tables_have_only_expected_triggers"}
    assert found["ledger_tables_have_only_expected_triggers"] == [
        "unexpected trigger skim on ledger.entry calls ledger.skim()"
    ]


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
    # An UPDATE at trigger depth 1 passes account_changes_through_entries_only.
    owner.execute(
        "CREATE FUNCTION ledger.bump() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN UPDATE ledger.account SET balance = balance + 5 WHERE id = NEW.account_id;"
        " RETURN NULL; END $$"
    )
    owner.execute(
        "CREATE TRIGGER bump AFTER INSERT ON ledger.entry"
        " FOR EACH ROW EXECUTE FUNCTION ledger.bump()"
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
