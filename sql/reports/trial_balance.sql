-- Trial balance per asset, as of a point in time, from the immutable ledger entries: for each
-- asset, the sum of the entries of each bucket, counting only transactions booked at or before
-- as_of (docs/reporting.md, "As of"). total is zero for every asset (custody is minus what
-- customers and fee accounts hold).
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   as_of   timestamptz   default: now
--
--   psql -v as_of="'2026-11-01T00:00:00Z'" -f sql/reports/trial_balance.sql
--   exchange report trial_balance --as-of 2026-11-01T00:00:00Z [--format csv]
\if :{?as_of}
\else
    \set as_of NULL
\endif
WITH p AS (
    SELECT coalesce((:as_of)::timestamptz, now()) AS as_of
)
-- Rounding to the asset's scale is exact (every amount is); it shows 0 with the asset's digits.
SELECT s.asset,
       round(sum(CASE s.bucket WHEN 'available' THEN s.amount ELSE 0 END), a.scale) AS available,
       round(sum(CASE s.bucket WHEN 'held' THEN s.amount ELSE 0 END), a.scale) AS held,
       round(sum(CASE s.bucket WHEN 'fee' THEN s.amount ELSE 0 END), a.scale) AS fee,
       round(sum(CASE s.bucket WHEN 'custody' THEN s.amount ELSE 0 END), a.scale) AS custody,
       round(sum(s.amount), a.scale) AS total
  FROM reporting.account_statement s
  JOIN reporting.asset a ON a.code = s.asset
 CROSS JOIN p
 WHERE s.booked_at <= p.as_of
 GROUP BY s.asset, a.scale
 ORDER BY s.asset;
