-- Finance reporting: read-only views over the ledger and trading. Runs as exchange_owner.
-- A view reads its tables with its owner's rights, so these views see every tenant's rows (row
-- security's owner_all policy), while finance_reader, which may read only these views, cannot
-- read any table itself. Nothing here shows an API key.
-- Amounts are numeric and exact; sums are shown at the asset's scale, at which every amount is
-- exact, so nothing is ever rounded away. Days are UTC calendar days of the row's booked_at.
-- The reports in sql/reports/ read only these views.
--
-- Booking time (docs/reporting.md, "As of"). "As of T" means: every transaction booked at or
-- before T, whole. A transaction is booked at the latest ledger.entry.posted_at of its entries,
-- each stamped under its account's row lock (sql/ledger/posted_at.v1.sql); its journals are those
-- with its xact_id and created_at (the transaction's start, which all its rows share). A
-- transaction that touched an account after another one did is booked after it, so a cut at any
-- T keeps, of each account, a prefix of its history in account_seq order, with every journal that
-- it depended on, and never part of a transaction. Rows written before migration 0005 have no
-- stamps: they count as booked at their journal's created_at, as before (they all committed
-- before any stamped row).
CREATE SCHEMA reporting;

-- Every amount of an asset is exact at its scale. A sum of nothing but a CASE's ELSE 0 would print
-- as 0 whatever the asset, so the views round sums to the asset's scale: exact, it only sets the
-- digits shown.
CREATE VIEW reporting.asset AS
SELECT code, scale, created_at
  FROM ledger.asset;

-- Every journal with the time its transaction was booked: the latest posted_at of the entries
-- of every journal of that transaction (without stamps: the journal's created_at).
CREATE VIEW reporting.journals AS
WITH posted AS (
    SELECT journal_id, max(posted_at) AS posted_at
      FROM ledger.entry
     GROUP BY journal_id
)
SELECT j.id AS journal_id,
       j.kind,
       j.reference,
       j.created_at,
       coalesce(max(p.posted_at) OVER (PARTITION BY j.xact_id, j.created_at), j.created_at)
           AS booked_at
  FROM ledger.journal j
  JOIN posted p ON p.journal_id = j.id;

-- Every entry with its journal and its account's owner: the base of the "as of" reports, which
-- keep the entries of transactions booked at or before a point in time.
CREATE VIEW reporting.account_statement AS
SELECT e.id AS entry_id,
       e.journal_id,
       j.created_at,
       j.booked_at,
       j.kind,
       j.reference,
       c.tenant_id,
       tn.name AS tenant,
       a.customer_id,
       c.external_ref,
       e.account_id,
       e.asset,
       a.bucket,
       a.label,
       e.account_seq,
       e.amount,
       e.balance_after AS running_balance
  FROM ledger.entry e
  JOIN reporting.journals j ON j.journal_id = e.journal_id
  JOIN ledger.account a ON a.id = e.account_id
  LEFT JOIN ledger.customer c ON c.id = a.customer_id
  LEFT JOIN tenancy.tenant tn ON tn.id = c.tenant_id;

CREATE VIEW reporting.trial_balance AS
SELECT e.asset,
       round(sum(CASE a.bucket WHEN 'available' THEN e.amount ELSE 0 END), s.scale) AS available,
       round(sum(CASE a.bucket WHEN 'held' THEN e.amount ELSE 0 END), s.scale) AS held,
       round(sum(CASE a.bucket WHEN 'fee' THEN e.amount ELSE 0 END), s.scale) AS fee,
       round(sum(CASE a.bucket WHEN 'custody' THEN e.amount ELSE 0 END), s.scale) AS custody,
       round(sum(e.amount), s.scale) AS total
  FROM ledger.entry e
  JOIN ledger.account a ON a.id = e.account_id
  JOIN ledger.asset s ON s.code = e.asset
 GROUP BY e.asset, s.scale;

CREATE VIEW reporting.balances AS
SELECT c.tenant_id,
       tn.name AS tenant,
       a.customer_id,
       c.external_ref,
       a.id AS account_id,
       a.asset,
       a.bucket,
       a.label,
       a.balance,
       a.entry_count
  FROM ledger.account a
  LEFT JOIN ledger.customer c ON c.id = a.customer_id
  LEFT JOIN tenancy.tenant tn ON tn.id = c.tenant_id;

-- The maker receives the base when the taker sells, the quote when the taker buys; each side's
-- fee is in the asset it receives (docs/trading.md, "Fills"). Quantity and notional are shown at
-- the base and quote scales: exactly, since the instrument's lot fits the base scale and
-- tick x lot the quote scale.
CREATE VIEW reporting.trades AS
SELECT t.id AS trade_id,
       t.created_at,
       j.booked_at,
       i.symbol AS instrument,
       i.base,
       i.quote,
       i.base_scale,
       i.quote_scale,
       t.seq,
       t.match_number,
       t.taker_side,
       t.price,
       round(t.quantity, i.base_scale) AS quantity,
       round(t.price * t.quantity, i.quote_scale) AS notional,
       t.maker_order_id,
       mo.customer_id AS maker_customer_id,
       mc.tenant_id AS maker_tenant_id,
       mt.name AS maker_tenant,
       t.maker_fee,
       CASE t.taker_side WHEN 'sell' THEN i.base ELSE i.quote END AS maker_fee_asset,
       t.taker_order_id,
       ko.customer_id AS taker_customer_id,
       kc.tenant_id AS taker_tenant_id,
       kt.name AS taker_tenant,
       t.taker_fee,
       CASE t.taker_side WHEN 'buy' THEN i.base ELSE i.quote END AS taker_fee_asset,
       t.journal_id
  FROM trading.trade t
  JOIN reporting.journals j ON j.journal_id = t.journal_id
  JOIN trading.instrument i ON i.id = t.instrument_id
  JOIN trading.orders mo ON mo.id = t.maker_order_id
  JOIN ledger.customer mc ON mc.id = mo.customer_id
  JOIN tenancy.tenant mt ON mt.id = mc.tenant_id
  JOIN trading.orders ko ON ko.id = t.taker_order_id
  JOIN ledger.customer kc ON kc.id = ko.customer_id
  JOIN tenancy.tenant kt ON kt.id = kc.tenant_id;

-- One row per side of a trade (maker and taker), so that fees and volumes group by the tenant
-- of the side that paid or traded.
CREATE VIEW reporting.trade_side AS
SELECT t.trade_id,
       t.created_at,
       t.booked_at,
       (t.booked_at AT TIME ZONE 'UTC')::date AS day,
       t.instrument,
       t.base,
       t.quote,
       t.base_scale,
       t.quote_scale,
       s.role,
       s.side,
       s.order_id,
       s.customer_id,
       s.tenant_id,
       s.tenant,
       t.price,
       t.quantity,
       t.notional,
       s.fee,
       s.fee_asset,
       CASE s.side WHEN 'buy' THEN t.base_scale ELSE t.quote_scale END AS fee_scale
  FROM reporting.trades t
 CROSS JOIN LATERAL (
       VALUES ('maker', CASE t.taker_side WHEN 'buy' THEN 'sell' ELSE 'buy' END,
               t.maker_order_id, t.maker_customer_id, t.maker_tenant_id, t.maker_tenant,
               t.maker_fee, t.maker_fee_asset),
              ('taker', t.taker_side,
               t.taker_order_id, t.taker_customer_id, t.taker_tenant_id, t.taker_tenant,
               t.taker_fee, t.taker_fee_asset)
       ) AS s (role, side, order_id, customer_id, tenant_id, tenant, fee, fee_asset);

CREATE VIEW reporting.fee_revenue AS
SELECT day,
       tenant_id,
       tenant,
       instrument,
       fee_asset AS asset,
       round(sum(CASE role WHEN 'maker' THEN fee ELSE 0 END), fee_scale) AS maker_fees,
       round(sum(CASE role WHEN 'taker' THEN fee ELSE 0 END), fee_scale) AS taker_fees,
       round(sum(fee), fee_scale) AS fees
  FROM reporting.trade_side
 WHERE fee <> 0
 GROUP BY day, tenant_id, tenant, instrument, fee_asset, fee_scale;

CREATE VIEW reporting.traded_volume AS
SELECT day,
       instrument,
       base,
       quote,
       tenant_id,
       tenant,
       count(DISTINCT trade_id) AS trades,
       round(sum(CASE side WHEN 'buy' THEN quantity ELSE 0 END), base_scale) AS bought,
       round(sum(CASE side WHEN 'sell' THEN quantity ELSE 0 END), base_scale) AS sold,
       round(sum(quantity), base_scale) AS volume,
       round(sum(CASE side WHEN 'buy' THEN notional ELSE 0 END), quote_scale) AS bought_notional,
       round(sum(CASE side WHEN 'sell' THEN notional ELSE 0 END), quote_scale) AS sold_notional,
       round(sum(notional), quote_scale) AS notional
  FROM reporting.trade_side
 GROUP BY day, instrument, base, quote, base_scale, quote_scale, tenant_id, tenant;

-- What each open order reserves: the rule of docs/trading.md ("Holds") and of `exchange verify`
-- (held_matches_open_orders): a buy price x remaining of the quote, a sell its remaining base.
CREATE VIEW reporting.open_order_exposure AS
WITH held AS (
    SELECT id AS account_id, customer_id, asset, balance AS held
      FROM ledger.account
     WHERE bucket = 'held'
), reserved AS (
    SELECT o.customer_id,
           CASE o.side WHEN 'buy' THEN i.quote ELSE i.base END AS asset,
           count(*) AS open_orders,
           sum(CASE o.side WHEN 'buy' THEN o.price * (o.quantity - o.filled_quantity)
                           ELSE o.quantity - o.filled_quantity END) AS reserved
      FROM trading.orders o
      JOIN trading.instrument i ON i.id = o.instrument_id
     WHERE o.status IN ('new', 'partially_filled')
     GROUP BY 1, 2
)
SELECT c.tenant_id,
       tn.name AS tenant,
       c.id AS customer_id,
       c.external_ref,
       h.account_id,
       coalesce(h.asset, r.asset) AS asset,
       coalesce(h.held, 0) AS held,
       coalesce(r.open_orders, 0) AS open_orders,
       round(coalesce(r.reserved, 0), s.scale) AS reserved
  FROM held h
  FULL JOIN reserved r ON r.customer_id = h.customer_id AND r.asset = h.asset
  JOIN ledger.asset s ON s.code = coalesce(h.asset, r.asset)
  JOIN ledger.customer c ON c.id = coalesce(h.customer_id, r.customer_id)
  JOIN tenancy.tenant tn ON tn.id = c.tenant_id
 WHERE h.held <> 0 OR r.customer_id IS NOT NULL;

-- Every order's state after each command that changed it, from the immutable market events
-- (trading.event), with what that state reserved: the as-of reports rebuild the open orders of
-- any past moment from it.
-- An event is booked with its transaction: the journals of the engine's transaction on the
-- instrument (trades; holds and releases, referenced order/<id>) share its created_at. An event
-- whose transaction posted none takes its created_at. Either way no earlier than the event
-- before it on the instrument (running maximum in seq order), so a cut keeps a prefix of each
-- instrument's events, with the journals of the same transactions.
CREATE VIEW reporting.order_history AS
WITH engine_journal AS (
    SELECT t.instrument_id, j.created_at, j.booked_at
      FROM trading.trade t
      JOIN reporting.journals j ON j.journal_id = t.journal_id
    UNION ALL
    SELECT o.instrument_id, j.created_at, j.booked_at
      FROM reporting.journals j
      JOIN trading.orders o ON j.reference = 'order/' || o.id
     WHERE j.kind IN ('hold', 'release')
), batch AS (
    SELECT instrument_id, created_at, max(booked_at) AS booked_at
      FROM engine_journal
     GROUP BY instrument_id, created_at
), booked_event AS (
    SELECT ev.instrument_id, ev.seq, ev.kind, ev.payload, ev.created_at,
           max(coalesce(b.booked_at, ev.created_at))
               OVER (PARTITION BY ev.instrument_id ORDER BY ev.seq) AS booked_at
      FROM trading.event ev
      LEFT JOIN batch b ON b.instrument_id = ev.instrument_id AND b.created_at = ev.created_at
)
SELECT ev.created_at,
       ev.booked_at,
       i.symbol AS instrument,
       ev.seq,
       ev.kind AS command,
       o.id AS order_id,
       c.tenant_id,
       tn.name AS tenant,
       o.account AS customer_id,
       o.client_order_id,
       o.side,
       o.type,
       o.price,
       o.quantity,
       o.filled_quantity,
       o.status,
       o.reason,
       CASE o.side WHEN 'buy' THEN i.quote ELSE i.base END AS reserved_asset,
       round(CASE WHEN o.status NOT IN ('new', 'partially_filled') THEN 0
                  WHEN o.side = 'buy' THEN o.price * (o.quantity - o.filled_quantity)
                  ELSE o.quantity - o.filled_quantity END,
             CASE o.side WHEN 'buy' THEN i.quote_scale ELSE i.base_scale END) AS reserved
  FROM booked_event ev
  JOIN trading.instrument i ON i.id = ev.instrument_id
 CROSS JOIN LATERAL jsonb_to_recordset(ev.payload -> 'orders') AS o (
       id bigint, account bigint, client_order_id text, side text, type text, price numeric,
       quantity numeric, filled_quantity numeric, status text, reason text)
  LEFT JOIN ledger.customer c ON c.id = o.account
  LEFT JOIN tenancy.tenant tn ON tn.id = c.tenant_id;

-- The ledger's own checks, for finance: each row is ok or shows its difference (actual minus
-- expected). What `exchange verify` checks in full, here per account.
CREATE VIEW reporting.reconciliation AS
WITH per_account AS (
    SELECT account_id,
           sum(amount) AS total,
           (array_agg(balance_after ORDER BY account_seq DESC))[1] AS last_balance_after
      FROM ledger.entry
     GROUP BY account_id
), checks AS (
    SELECT 'account_balance' AS check_name, b.tenant_id, b.tenant, b.customer_id, b.account_id,
           b.asset, b.bucket, b.label, coalesce(s.total, 0) AS expected, b.balance AS actual
      FROM reporting.balances b
      LEFT JOIN per_account s ON s.account_id = b.account_id
    UNION ALL
    SELECT 'running_balance', b.tenant_id, b.tenant, b.customer_id, b.account_id,
           b.asset, b.bucket, b.label, s.total, s.last_balance_after
      FROM reporting.balances b
      JOIN per_account s ON s.account_id = b.account_id
    UNION ALL
    SELECT 'held_reservation', x.tenant_id, x.tenant, x.customer_id, x.account_id,
           x.asset, 'held', '', x.reserved, x.held
      FROM reporting.open_order_exposure x
    UNION ALL
    SELECT 'trial_balance', NULL, NULL, NULL, NULL, t.asset, NULL, NULL, 0, t.total
      FROM reporting.trial_balance t
)
SELECT check_name, tenant_id, tenant, customer_id, account_id, asset, bucket, label,
       expected, actual, actual - expected AS difference,
       CASE WHEN actual = expected THEN 'ok' ELSE 'difference' END AS status
  FROM checks;

COMMENT ON SCHEMA reporting IS
    'Finance reporting views (read by finance_reader); reports in sql/reports/ read only these.';

COMMENT ON VIEW reporting.asset IS
    'Assets and their scales: every amount of an asset is exact at its scale (decimal places).';

COMMENT ON VIEW reporting.journals IS
    'Every journal with the time its transaction was booked: "as of T" reports keep the '
    'transactions booked at or before T, whole.';
COMMENT ON COLUMN reporting.journals.created_at IS
    'Start of the posting transaction (now()); not the order of bookings: do not cut by it.';
COMMENT ON COLUMN reporting.journals.booked_at IS
    'When the journal''s transaction was booked: the latest posted_at (taken under each account''s '
    'row lock) of the entries of all its journals; created_at for journals from before these '
    'stamps. A transaction that used an account after another is booked after it.';

COMMENT ON VIEW reporting.account_statement IS
    'Account statement: every ledger entry with its journal (time, kind, reference), its account '
    '(bucket, label) and owner (customer, tenant), and the running balance after it. System '
    'accounts (custody, fee) have no customer and no tenant.';
COMMENT ON COLUMN reporting.account_statement.created_at IS
    'Start of the journal''s transaction (now()); not the order of bookings: do not cut by it.';
COMMENT ON COLUMN reporting.account_statement.booked_at IS
    'When the journal''s transaction was booked (reporting.journals); "as of" reports cut here.';
COMMENT ON COLUMN reporting.account_statement.account_seq IS
    'Position of the entry in its account''s history: 1, 2, 3, ...';
COMMENT ON COLUMN reporting.account_statement.amount IS 'Signed: positive credits the account.';
COMMENT ON COLUMN reporting.account_statement.running_balance IS
    'The account''s balance after this entry (ledger.entry.balance_after).';

COMMENT ON VIEW reporting.trial_balance IS
    'Trial balance per asset, from the entries: the sum of each bucket; total is always zero '
    '(custody is minus what customers and fee accounts hold).';
COMMENT ON COLUMN reporting.trial_balance.total IS 'Sum of every entry of the asset: always 0.';

COMMENT ON VIEW reporting.balances IS
    'Current (cached) balance of every ledger account, with its tenant and customer; system '
    'accounts (custody per customer, fee per instrument) have none.';
COMMENT ON COLUMN reporting.balances.bucket IS
    'available, held (reserved by open orders), custody (outside world, negative) or fee.';
COMMENT ON COLUMN reporting.balances.label IS
    'System accounts only: customer/<id> for custody, the instrument symbol for fees.';

COMMENT ON VIEW reporting.trades IS
    'Every fill with both sides: orders, customers, tenants, and the fee each side paid.';
COMMENT ON COLUMN reporting.trades.notional IS 'price x quantity, in the quote asset.';
COMMENT ON COLUMN reporting.trades.booked_at IS
    'When the trade''s journal was booked (reporting.journals); "as of" reports cut here.';
COMMENT ON COLUMN reporting.trades.maker_fee IS
    'Paid by the maker, in maker_fee_asset (the asset the maker received).';
COMMENT ON COLUMN reporting.trades.taker_fee IS
    'Paid by the taker, in taker_fee_asset (the asset the taker received).';

COMMENT ON VIEW reporting.trade_side IS
    'One row per side (maker, taker) of every trade: who bought or sold, and the fee they paid.';
COMMENT ON COLUMN reporting.trade_side.day IS 'UTC calendar day of the trade''s booked_at.';

COMMENT ON VIEW reporting.fee_revenue IS
    'Fee revenue per UTC day, paying tenant, instrument and fee asset (fees are taken in the '
    'asset each side receives). Sides that paid no fee are left out.';

COMMENT ON VIEW reporting.traded_volume IS
    'Traded quantity (base asset) and notional (quote asset) per UTC day, instrument and tenant. '
    'A tenant''s volume is what it bought plus what it sold; an instrument''s market volume is '
    'the sum of bought over its tenants (each trade has one buyer).';
COMMENT ON COLUMN reporting.traded_volume.trades IS
    'Trades in which the tenant was on one side or both.';

COMMENT ON VIEW reporting.open_order_exposure IS
    'Funds held for open orders, per customer and asset: the held balance, the number of open '
    'orders and what they reserve (buy: price x remaining of the quote; sell: remaining base).';

COMMENT ON VIEW reporting.order_history IS
    'Each order''s state after every command that changed it, from the market events, and what '
    'that state reserved (0 unless open).';
COMMENT ON COLUMN reporting.order_history.booked_at IS
    'When the event''s transaction was booked, with its journals; "as of" reports cut here.';

COMMENT ON VIEW reporting.reconciliation IS
    'Reconciliation checks, one row each, status ok or difference (= actual - expected): '
    'account_balance (cached balance vs sum of entries), running_balance (last balance_after vs '
    'sum of entries), held_reservation (held balance vs open-order reservations), '
    'trial_balance (sum of an asset''s entries vs zero).';
