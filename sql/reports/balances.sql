-- Balance of every ledger account as of a point in time, from the immutable entries (the sum of
-- the entries of transactions booked at or before as_of: docs/reporting.md, "As of"), with the
-- account's tenant and customer.
-- System accounts (custody per customer, fee per instrument) have neither. Accounts without
-- entries by then are left out.
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   as_of    timestamptz   default: now
--   tenant   text          only this tenant's customers' accounts (tenant name); default: all
--
--   psql -v as_of="'2026-11-01T00:00:00Z'" -v tenant="'acme'" -f sql/reports/balances.sql
--   exchange report balances --as-of 2026-11-01T00:00:00Z --tenant acme
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
)
SELECT s.tenant, s.customer_id, s.external_ref, s.account_id, s.asset, s.bucket, s.label,
       sum(s.amount) AS balance,
       count(*) AS entries
  FROM reporting.account_statement s
 CROSS JOIN p
 WHERE s.booked_at <= p.as_of
   AND (p.tenant IS NULL OR s.tenant = p.tenant)
 GROUP BY s.tenant, s.customer_id, s.external_ref, s.account_id, s.asset, s.bucket, s.label
 ORDER BY s.tenant NULLS LAST, s.customer_id NULLS LAST, s.asset, s.bucket, s.label;
