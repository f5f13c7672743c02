-- Downgrade of trading: refused while orders exist, unless the operator allowed data loss for
-- this session. Ledger journals written by trading stay: they are the ledger's history.
DO $$
BEGIN
    IF EXISTS (SELECT FROM trading.orders)
       AND coalesce(current_setting('exchange.allow_data_loss', true), '') <> 'on' THEN
        RAISE EXCEPTION 'trading holds % order(s): downgrading would destroy them; back up '
            'first, then downgrade with --allow-data-loss (alembic: -x allow_data_loss=true)',
            (SELECT count(*) FROM trading.orders)
            USING ERRCODE = 'EX010';
    END IF;
END
$$;
DROP SCHEMA trading CASCADE;
DELETE FROM ledger.journal_kind k
 WHERE k.kind IN ('hold', 'release', 'trade')
   AND NOT EXISTS (SELECT FROM ledger.journal j WHERE j.kind = k.kind);
