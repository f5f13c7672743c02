"""Trading invariants as named queries returning the rows that violate them (`exchange verify`).

The engine keeps these true as it writes; re-checking them on a live database also catches what
no trigger sees: a disabled trigger, a widened privilege, a hand-edited restore.
"""

from __future__ import annotations

from app.ledger.invariants import Invariant, app_role_write_privileges
from app.tenancy.schema import TENANCY_TRIGGERS

# (table in schema trading, trigger, function in schema trading) as sql/trading/integrity.v1.sql
# defines them.
TRADING_TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("trade", "trade_immutable", "reject_change"),
    ("trade", "trade_no_truncate", "reject_change"),
    ("event", "event_immutable", "reject_change"),
    ("event", "event_no_truncate", "reject_change"),
    ("orders", "orders_no_delete", "reject_change"),
    ("orders", "orders_no_truncate", "reject_change"),
    ("orders", "orders_check_update", "check_order_update"),
    ("instrument", "instrument_no_delete", "reject_change"),
    ("instrument", "instrument_no_truncate", "reject_change"),
    ("instrument", "instrument_parameters_immutable", "check_instrument_update"),
    ("instrument", "instrument_copy_scales", "instrument_copy_scales"),
)

# Triggers that tenancy and market data add to trading tables (checked by tenancy's invariants).
_TENANCY_TRIGGERS = (
    "(VALUES "
    + ", ".join(f"('{table}', '{name}')" for table, name, _ in TENANCY_TRIGGERS)
    + ") AS tenancy(tbl, name)"
)

_EXPECTED_TRIGGERS = (
    "(VALUES "
    + ", ".join(
        f"('{table}', '{name}', '{function}')" for table, name, function in TRADING_TRIGGERS
    )
    + ") AS expected(tbl, name, function)"
)

# Named constraints of sql/trading/tables.v1.sql: (table in schema trading, constraint).
TRADING_CONSTRAINTS: tuple[tuple[str, str], ...] = (
    ("instrument", "instrument_symbol_key"),
    ("instrument", "instrument_symbol_format"),
    ("instrument", "instrument_assets_differ"),
    ("instrument", "instrument_status_valid"),
    ("instrument", "instrument_sizes_positive"),
    ("instrument", "instrument_lot_exact"),
    ("instrument", "instrument_notional_exact"),
    ("instrument", "instrument_fee_rates_valid"),
    ("instrument", "instrument_seq_non_negative"),
    ("orders", "orders_customer_client_order_id_key"),
    ("orders", "orders_valid"),  # trading.order_row_valid: sql/trading/orders_check.v1.sql
    ("trade", "trade_instrument_seq_match_key"),
    ("trade", "trade_journal_id_key"),
    ("trade", "trade_taker_side_valid"),
    ("trade", "trade_amounts_valid"),
    ("trade", "trade_two_orders"),
    ("event", "event_pkey"),
    ("event", "event_kind_valid"),
    ("event", "event_seq_positive"),
)

_EXPECTED_CONSTRAINTS = (
    "(VALUES "
    + ", ".join(f"('{table}', '{name}')" for table, name in TRADING_CONSTRAINTS)
    + ") AS expected(tbl, name)"
)

# What each open order still reserves, per customer and asset (docs/trading.md, "Holds").
_RESERVATIONS = """
        SELECT o.customer_id,
               CASE o.side WHEN 'buy' THEN i.quote ELSE i.base END AS asset,
               sum(CASE o.side WHEN 'buy' THEN o.price * (o.quantity - o.filled_quantity)
                               ELSE o.quantity - o.filled_quantity END) AS reserved
          FROM trading.orders o JOIN trading.instrument i ON i.id = o.instrument_id
         WHERE o.status IN ('new', 'partially_filled')
         GROUP BY 1, 2
"""


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "held_matches_open_orders",
        "per account and asset, the held balance equals what the account's open orders reserve"
        " (buy: price x remaining of the quote asset; sell: remaining of the base asset)",
        f"""
        SELECT format('account %s %s: held %s, open orders reserve %s',
                      coalesce(h.customer_id, r.customer_id), coalesce(h.asset, r.asset),
                      coalesce(h.held, 0), coalesce(r.reserved, 0))
          FROM (SELECT customer_id, asset, sum(balance) AS held FROM ledger.account
                 WHERE bucket = 'held' GROUP BY 1, 2) h
          FULL JOIN ({_RESERVATIONS}) r ON r.customer_id = h.customer_id AND r.asset = h.asset
         WHERE coalesce(h.held, 0) <> coalesce(r.reserved, 0)
        """,
    ),
    Invariant(
        "book_not_crossed",
        "on every instrument the best bid is below the best ask",
        """
        SELECT format('%s: best bid %s >= best ask %s', i.symbol, b.price, a.price)
          FROM trading.instrument i
          JOIN LATERAL (SELECT max(price) AS price FROM trading.orders
                         WHERE instrument_id = i.id AND side = 'buy'
                           AND status IN ('new', 'partially_filled')) b ON true
          JOIN LATERAL (SELECT min(price) AS price FROM trading.orders
                         WHERE instrument_id = i.id AND side = 'sell'
                           AND status IN ('new', 'partially_filled')) a ON true
         WHERE b.price >= a.price
        """,
    ),
    Invariant(
        "filled_quantity_matches_trades",
        "every order's filled quantity is the sum of its trades",
        """
        SELECT format('order %s: filled %s, trades sum to %s', o.id, o.filled_quantity,
                      coalesce(t.total, 0))
          FROM trading.orders o
          LEFT JOIN (SELECT order_id, sum(quantity) AS total
                       FROM (SELECT maker_order_id AS order_id, quantity FROM trading.trade
                             UNION ALL
                             SELECT taker_order_id, quantity FROM trading.trade) legs
                      GROUP BY order_id) t ON t.order_id = o.id
         WHERE o.filled_quantity <> coalesce(t.total, 0)
        """,
    ),
    Invariant(
        "trade_settled_by_its_journal",
        "every trade has a trade journal on its instrument's assets, and every trade journal a"
        " trade",
        """
        SELECT format('trade %s: journal %s is a %s journal', t.id, j.id, j.kind)
          FROM trading.trade t JOIN ledger.journal j ON j.id = t.journal_id
         WHERE j.kind <> 'trade'
        UNION ALL
        SELECT format('trade journal %s settles no trade', j.id)
          FROM ledger.journal j
         WHERE j.kind = 'trade'
           AND NOT EXISTS (SELECT FROM trading.trade t WHERE t.journal_id = j.id)
        UNION ALL
        SELECT DISTINCT format('trade %s of %s is settled by journal %s, which moves %s',
                               t.id, i.symbol, t.journal_id, e.asset)
          FROM trading.trade t
          JOIN trading.instrument i ON i.id = t.instrument_id
          JOIN ledger.entry e ON e.journal_id = t.journal_id
         WHERE e.asset NOT IN (i.base, i.quote)
        """,
    ),
    Invariant(
        "event_sequence_gap_free",
        "each instrument's events are numbered 1, 2, ... up to its seq, without a gap",
        """
        SELECT format('%s: seq %s, %s events numbered up to %s', i.symbol, i.seq,
                      count(e.seq), coalesce(max(e.seq), 0))
          FROM trading.instrument i LEFT JOIN trading.event e ON e.instrument_id = i.id
         GROUP BY i.id, i.symbol, i.seq
        HAVING count(e.seq) <> i.seq OR coalesce(max(e.seq), 0) <> i.seq
        """,
    ),
    Invariant(
        "trading_triggers_enabled",
        "the triggers that guard trading history exist, call their functions and fire in every"
        " session",
        f"""
        SELECT format('trigger %s on trading.%s %s', expected.name, expected.tbl,
                      CASE WHEN t.oid IS NULL THEN 'is missing'
                           WHEN t.tgenabled NOT IN ('O', 'A') THEN 'is not enabled'
                           ELSE format('calls %s', t.tgfoid::regprocedure) END)
          FROM {_EXPECTED_TRIGGERS}
          LEFT JOIN pg_trigger t
            ON t.tgrelid = to_regclass(format('trading.%I', expected.tbl))
           AND t.tgname = expected.name
         WHERE t.oid IS NULL OR t.tgenabled NOT IN ('O', 'A')
            OR t.tgfoid IS DISTINCT FROM to_regprocedure(format('trading.%I()', expected.function))
        """,
    ),
    Invariant(
        "trading_schema_intact",
        "the trading tables' named constraints exist and are validated, and no rewrite rule,"
        " inheritance child or trigger besides the guarding ones sits on a trading table",
        f"""
        SELECT format('constraint %s on trading.%s %s', expected.name, expected.tbl,
                      CASE WHEN c.oid IS NULL THEN 'is missing' ELSE 'is not validated' END)
          FROM {_EXPECTED_CONSTRAINTS}
          LEFT JOIN pg_constraint c
            ON c.conrelid = to_regclass(format('trading.%I', expected.tbl))
           AND c.conname = expected.name
         WHERE c.oid IS NULL OR NOT c.convalidated
        UNION ALL
        SELECT format('rule %s on trading.%s', w.rulename, c.relname)
          FROM pg_rewrite w JOIN pg_class c ON c.oid = w.ev_class
         WHERE c.relnamespace = 'trading'::regnamespace AND w.rulename <> '_RETURN'
        UNION ALL
        SELECT format('%s inherits from %s', i.inhrelid::regclass, i.inhparent::regclass)
          FROM pg_inherits i JOIN pg_class c ON c.oid IN (i.inhrelid, i.inhparent)
         WHERE c.relnamespace = 'trading'::regnamespace
        UNION ALL
        SELECT format('unexpected trigger %s on trading.%s', t.tgname, c.relname)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'trading'::regnamespace AND NOT t.tgisinternal
           AND NOT EXISTS (SELECT FROM {_EXPECTED_TRIGGERS}
                            WHERE expected.tbl = c.relname AND expected.name = t.tgname)
           AND NOT EXISTS (SELECT FROM {_TENANCY_TRIGGERS}
                            WHERE to_regclass(tenancy.tbl) = t.tgrelid
                              AND tenancy.name = t.tgname)
        """,
    ),
    Invariant(
        "app_role_cannot_write_trading",
        "exchange_app cannot write any trading table, use its sequences, create objects in"
        " schema trading or execute any trading function but trading.execute, trading.await_turn"
        " (the order gateway's wait for an instrument) and the operators' create_instrument and"
        " set_instrument_status (the admin API's)",
        app_role_write_privileges("trading")
        + """
        UNION ALL
        SELECT format('exchange_app can execute %s', p.oid::regprocedure)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'trading'
           AND has_function_privilege('exchange_app', p.oid, 'EXECUTE')
           AND p.oid NOT IN (
               'trading.execute(text, jsonb)'::regprocedure,
               'trading.create_instrument(text, text, numeric, numeric, numeric, numeric,'
               ' numeric, numeric)'::regprocedure,
               'trading.set_instrument_status(text, text)'::regprocedure)
           -- Since migration 0009; absent before it.
           AND p.oid IS DISTINCT FROM to_regprocedure('trading.await_turn(text)')
        """,
    ),
)
