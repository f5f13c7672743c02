-- Account statement of one customer: every entry of its accounts (available and held, per
-- asset) with the running balance after it, from the immutable entries of transactions booked
-- after since and at or before as_of (docs/reporting.md, "As of"): of each account, a run of its
-- history without a gap, in its order (account_seq). booked_at is when each was booked.
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   customer   bigint        the customer's id; required
--   asset      text          only this asset; default: all
--   since      timestamptz   only transactions booked after it; default: from the first
--   as_of      timestamptz   default: now
--
--   psql -v customer=42 -v asset="'USD'" -v as_of="'2026-11-01T00:00:00Z'" -f sql/reports/statement.sql
--   exchange report statement -v customer=42 -v asset=USD --as-of 2026-11-01T00:00:00Z
\if :{?customer}
\else
    \warn 'statement.sql needs the customer: -v customer=ID'
    \quit
\endif
\if :{?asset}
\else
    \set asset NULL
\endif
\if :{?since}
\else
    \set since NULL
\endif
\if :{?as_of}
\else
    \set as_of NULL
\endif
WITH p AS (
    SELECT (:customer)::bigint AS customer,
           (:asset)::text AS asset,
           coalesce((:since)::timestamptz, '-infinity') AS since,
           coalesce((:as_of)::timestamptz, now()) AS as_of
)
SELECT s.booked_at, s.journal_id, s.kind, s.reference, s.asset, s.bucket, s.account_seq,
       s.amount, s.running_balance
  FROM reporting.account_statement s
 CROSS JOIN p
 WHERE s.customer_id = p.customer
   AND (p.asset IS NULL OR s.asset = p.asset)
   AND s.booked_at > p.since
   AND s.booked_at <= p.as_of
 ORDER BY s.asset, s.bucket, s.account_seq;
