"""Every ledger invariant as a named query that returns the rows violating it.

The database enforces these rules as rows are written; `exchange verify` re-checks them on a live
database, which also catches what no trigger can see: a disabled trigger, a widened privilege,
a restored backup that was edited by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

VIOLATIONS_SHOWN_MAX = 5


@dataclass(frozen=True)
class Invariant:
    name: str
    description: str
    query: str  # selects one text column describing each violation


@dataclass(frozen=True)
class Violation:
    invariant: Invariant
    details: list[str]


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "journal_balanced",
        "every journal sums to zero per asset",
        """
        SELECT format('journal %s: %s legs sum to %s', journal_id, asset, sum(amount))
          FROM ledger.entry GROUP BY journal_id, asset HAVING sum(amount) <> 0
        """,
    ),
    Invariant(
        "journal_has_legs",
        "every journal has at least two entries",
        """
        SELECT format('journal %s has %s entries', j.id, count(e.id))
          FROM ledger.journal j LEFT JOIN ledger.entry e ON e.journal_id = j.id
         GROUP BY j.id HAVING count(e.id) < 2
        """,
    ),
    Invariant(
        "balance_non_negative",
        "no balance below zero outside custody",
        """
        SELECT format('account %s (%s %s) balance %s', id, asset, bucket, balance)
          FROM ledger.account WHERE bucket <> 'custody' AND balance < 0
        """,
    ),
    Invariant(
        "cached_balance_matches_entries",
        "each account's cached balance and entry count equal its entries",
        """
        SELECT format('account %s caches %s over %s entries; its entries sum to %s over %s',
                      a.id, a.balance, a.entry_count, coalesce(e.total, 0), coalesce(e.n, 0))
          FROM ledger.account a
          LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
                       FROM ledger.entry GROUP BY account_id) e ON e.account_id = a.id
         WHERE a.balance <> coalesce(e.total, 0) OR a.entry_count <> coalesce(e.n, 0)
        """,
    ),
    Invariant(
        "running_balance",
        "each entry's balance_after is its account's running sum, in account_seq order 1, 2, ...",
        """
        SELECT format('entry %s (account %s, seq %s): balance_after %s, running sum %s',
                      id, account_id, account_seq, balance_after, running)
          FROM (SELECT id, account_id, account_seq, balance_after,
                       sum(amount) OVER w AS running, row_number() OVER w AS position
                  FROM ledger.entry
                WINDOW w AS (PARTITION BY account_id ORDER BY account_seq)) e
         WHERE balance_after <> running OR account_seq <> position
        """,
    ),
    Invariant(
        "entry_asset_matches_account",
        "an entry's asset is its account's asset",
        """
        SELECT format('entry %s is in %s, account %s holds %s', e.id, e.asset, a.id, a.asset)
          FROM ledger.entry e JOIN ledger.account a ON a.id = e.account_id
         WHERE e.asset <> a.asset
        """,
    ),
    Invariant(
        "amount_exact",
        "every amount is non-zero and representable at its asset's scale",
        """
        SELECT format('entry %s: amount %s in %s (scale %s)', e.id, e.amount, e.asset, s.scale)
          FROM ledger.entry e JOIN ledger.asset s ON s.code = e.asset
         WHERE e.amount = 0 OR e.amount <> round(e.amount, s.scale)
        """,
    ),
    Invariant(
        "trial_balance_zero",
        "all accounts of an asset sum to zero",
        """
        SELECT format('%s accounts sum to %s', asset, sum(balance))
          FROM ledger.account GROUP BY asset HAVING sum(balance) <> 0
        """,
    ),
    Invariant(
        "integrity_triggers_enabled",
        "the triggers that guard the ledger exist and are enabled",
        """
        SELECT format('trigger %s on ledger.%s is %s', expected.name, expected.tbl,
                      CASE WHEN t.tgname IS NULL THEN 'missing' ELSE 'disabled' END)
          FROM (VALUES ('entry_apply_to_balance', 'entry'), ('entry_check_statement', 'entry'),
                       ('entry_immutable', 'entry'), ('entry_no_truncate', 'entry'),
                       ('journal_check_has_entries', 'journal'),
                       ('journal_immutable', 'journal'), ('journal_no_truncate', 'journal'),
                       ('account_changes_through_entries_only', 'account'),
                       ('account_balance_starts_at_zero', 'account'),
                       ('account_no_delete', 'account'), ('account_no_truncate', 'account'))
               AS expected(name, tbl)
          LEFT JOIN pg_trigger t
            ON t.tgname = expected.name
           AND t.tgrelid = format('ledger.%I', expected.tbl)::regclass
         WHERE t.tgname IS NULL OR t.tgenabled = 'D'
        """,
    ),
    Invariant(
        "app_role_least_privilege",
        "exchange_app is no superuser, bypasses no RLS, owns nothing and cannot write the ledger",
        """
        SELECT format('exchange_app is a superuser or bypasses RLS')
          FROM pg_roles WHERE rolname = 'exchange_app' AND (rolsuper OR rolbypassrls)
        UNION ALL
        SELECT format('exchange_app can %s ledger.%s', p.privilege, c.relname)
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'ledger'
         CROSS JOIN (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS p(privilege)
         WHERE c.relkind = 'r' AND has_table_privilege('exchange_app', c.oid, p.privilege)
        UNION ALL
        SELECT format('exchange_app owns %s', c.oid::regclass)
          FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner AND r.rolname = 'exchange_app'
        """,
    ),
)


def violations(conn: psycopg.Connection) -> Iterator[Violation]:
    """Yields each broken invariant, in the order of INVARIANTS, with a few example rows."""
    for invariant in INVARIANTS:
        rows = conn.execute(f"{invariant.query} LIMIT {VIOLATIONS_SHOWN_MAX}").fetchall()
        if rows:
            yield Violation(invariant, [row[0] for row in rows])
