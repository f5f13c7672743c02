-- Downgrade of the ledger: its schema and everything in it. Dropping booked money is refused
-- unless the operator said so for this session (`exchange db downgrade REV --allow-data-loss`).
DO $$
BEGIN
    IF EXISTS (SELECT FROM ledger.journal)
       AND coalesce(current_setting('exchange.allow_data_loss', true), '') <> 'on' THEN
        RAISE EXCEPTION 'the ledger holds % journal(s): downgrading would destroy them; back up '
            'first, then downgrade with --allow-data-loss (alembic: -x allow_data_loss=true)',
            (SELECT count(*) FROM ledger.journal)
            USING ERRCODE = 'EX010';
    END IF;
END
$$;
DROP SCHEMA ledger CASCADE;
