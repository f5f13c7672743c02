-- Fee revenue per UTC day, paying tenant, instrument and fee asset, from the trades booked after
-- since and at or before as_of (their journals' booked_at, which also gives the UTC day:
-- docs/reporting.md, "As of"). Each side of a fill pays its fee in the asset it receives (a
-- buyer in the base asset, a seller in the quote asset), at the maker or the taker rate.
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   since    timestamptz   only trades booked after it; default: from the first
--   as_of    timestamptz   default: now
--   tenant   text          only fees paid by this tenant's customers (tenant name); default: all
--
--   psql -v since="'2026-10-01T00:00:00Z'" -v as_of="'2026-11-01T00:00:00Z'" -f sql/reports/fee_revenue.sql
--   exchange report fee_revenue -v since=2026-10-01T00:00:00Z --as-of 2026-11-01T00:00:00Z
\if :{?since}
\else
    \set since NULL
\endif
\if :{?as_of}
\else
    \set as_of NULL
\endif
\if :{?tenant}
\else
    \set tenant NULL
\endif
WITH p AS (
    SELECT coalesce((:since)::timestamptz, '-infinity') AS since,
           coalesce((:as_of)::timestamptz, now()) AS as_of,
           (:tenant)::text AS tenant
)
SELECT s.day, s.tenant, s.instrument, s.fee_asset AS asset,
       round(sum(CASE s.role WHEN 'maker' THEN s.fee ELSE 0 END), s.fee_scale) AS maker_fees,
       round(sum(CASE s.role WHEN 'taker' THEN s.fee ELSE 0 END), s.fee_scale) AS taker_fees,
       round(sum(s.fee), s.fee_scale) AS fees
  FROM reporting.trade_side s
 CROSS JOIN p
 WHERE s.booked_at > p.since
   AND s.booked_at <= p.as_of
   AND (p.tenant IS NULL OR s.tenant = p.tenant)
   AND s.fee <> 0
 GROUP BY s.day, s.tenant, s.instrument, s.fee_asset, s.fee_scale
 ORDER BY s.day, s.tenant, s.instrument, s.fee_asset;
