-- Traded volume (base asset) and notional (quote asset) per UTC day, instrument and tenant, from
-- the trades booked after since and at or before as_of (their journals' booked_at, which also
-- gives the UTC day: docs/reporting.md, "As of"). A tenant's volume is what its customers
-- bought plus what they sold; an instrument's market volume is the sum of bought over all
-- tenants (every trade has one buyer). trades counts the fills the tenant was on a side of.
--
-- Variables (psql: -v NAME=VALUE, VALUE written as an SQL literal):
--   since    timestamptz   only trades booked after it; default: from the first
--   as_of    timestamptz   default: now
--   tenant   text          only this tenant (tenant name); default: all
--
--   psql -v as_of="'2026-11-01T00:00:00Z'" -f sql/reports/daily_volume.sql
--   exchange report daily_volume --as-of 2026-11-01T00:00:00Z --tenant acme
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
SELECT s.day, s.instrument, s.tenant,
       count(DISTINCT s.trade_id) AS trades,
       round(sum(CASE s.side WHEN 'buy' THEN s.quantity ELSE 0 END), s.base_scale) AS bought,
       round(sum(CASE s.side WHEN 'sell' THEN s.quantity ELSE 0 END), s.base_scale) AS sold,
       round(sum(s.quantity), s.base_scale) AS volume,
       round(sum(CASE s.side WHEN 'buy' THEN s.notional ELSE 0 END), s.quote_scale)
           AS bought_notional,
       round(sum(CASE s.side WHEN 'sell' THEN s.notional ELSE 0 END), s.quote_scale)
           AS sold_notional,
       round(sum(s.notional), s.quote_scale) AS notional
  FROM reporting.trade_side s
 CROSS JOIN p
 WHERE s.booked_at > p.since
   AND s.booked_at <= p.as_of
   AND (p.tenant IS NULL OR s.tenant = p.tenant)
 GROUP BY s.day, s.instrument, s.base_scale, s.quote_scale, s.tenant
 ORDER BY s.day, s.instrument, s.tenant;
