-- Reconciliation as of a point in time: one row per check, status ok or difference (= actual -
-- expected), differences first. From the immutable entries of transactions booked at or before
-- as_of, and the market events booked with them for the orders then open (docs/reporting.md,
-- "As of"):
--   running_balance    per account: balance_after of its last entry vs the sum of its entries
--   held_reservation   per customer and asset: held balance vs what its open orders reserved
--                      (buy: price x remaining of the quote; sell: remaining base)
--   trial_balance      per asset: the sum of its entries vs zero
--   account_balance    per account: cached balance vs the sum of its entries. Cached balances
--                      exist only for the present: these rows appear when as_of is not past.
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   as_of    timestamptz   default: now
--   tenant   text          only this tenant's customers (tenant name; no trial_balance rows);
--                          default: all
--
--   psql -v as_of="'2026-11-01T00:00:00Z'" -f sql/reports/reconciliation.sql
--   exchange report reconciliation --as-of 2026-11-01T00:00:00Z
\if :{?as_of}
\else
    \set as_of NULL
\endif
\if :{?tenant}
\else
    \set tenant NULL
\endif
WITH p AS (
    SELECT coalesce((:as_of)::timestamptz, now()) AS as_of, (:tenant)::text AS tenant
), accounts AS (
    SELECT s.account_id, s.tenant, s.customer_id, s.asset, s.bucket, s.label,
           sum(s.amount) AS total,
           (array_agg(s.running_balance ORDER BY s.account_seq DESC))[1] AS last_balance
      FROM reporting.account_statement s
     CROSS JOIN p
     WHERE s.booked_at <= p.as_of
     GROUP BY s.account_id, s.tenant, s.customer_id, s.asset, s.bucket, s.label
), orders AS (
    -- Each order's last state at as_of (an order's events are in its instrument's seq order).
    SELECT DISTINCT ON (h.order_id) h.tenant, h.customer_id, h.reserved_asset, h.reserved
      FROM reporting.order_history h
     CROSS JOIN p
     WHERE h.booked_at <= p.as_of
     ORDER BY h.order_id, h.seq DESC
), reserved AS (
    SELECT tenant, customer_id, reserved_asset AS asset, sum(reserved) AS reserved
      FROM orders
     WHERE reserved <> 0
     GROUP BY tenant, customer_id, reserved_asset
), held AS (
    SELECT account_id, tenant, customer_id, asset, total AS held
      FROM accounts
     WHERE bucket = 'held'
), checks AS (
    SELECT 'running_balance' AS check_name, tenant, customer_id, account_id, asset, bucket,
           label, total AS expected, last_balance AS actual
      FROM accounts
    UNION ALL
    SELECT 'held_reservation', coalesce(h.tenant, r.tenant), coalesce(h.customer_id, r.customer_id),
           h.account_id, coalesce(h.asset, r.asset), 'held', '', coalesce(r.reserved, 0),
           coalesce(h.held, 0)
      FROM held h
      FULL JOIN reserved r ON r.customer_id = h.customer_id AND r.asset = h.asset
     WHERE h.held <> 0 OR r.customer_id IS NOT NULL
    UNION ALL
    SELECT 'trial_balance', NULL, NULL, NULL, asset, NULL, NULL, 0, sum(total)
      FROM accounts
     GROUP BY asset
    UNION ALL
    SELECT 'account_balance', r.tenant, r.customer_id, r.account_id, r.asset, r.bucket, r.label,
           r.expected, r.actual
      FROM reporting.reconciliation r
     CROSS JOIN p
     WHERE r.check_name = 'account_balance' AND p.as_of >= now()
)
SELECT c.check_name, c.tenant, c.customer_id, c.account_id, c.asset, c.bucket, c.label,
       c.expected, c.actual, c.actual - c.expected AS difference,
       CASE WHEN c.actual = c.expected THEN 'ok' ELSE 'difference' END AS status
  FROM checks c
 CROSS JOIN p
 WHERE p.tenant IS NULL OR c.tenant = p.tenant
 ORDER BY c.actual = c.expected, c.check_name, c.asset, c.customer_id NULLS FIRST,
          c.account_id NULLS FIRST;
