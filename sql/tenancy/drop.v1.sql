-- Downgrade of tenancy: refused while tenants exist, unless the operator allowed data loss for
-- this session (which broker owns each customer would be lost).
DO $$
BEGIN
    IF EXISTS (SELECT FROM tenancy.tenant)
       AND coalesce(current_setting('exchange.allow_data_loss', true), '') <> 'on' THEN
        RAISE EXCEPTION 'tenancy holds % tenant(s): downgrading would forget which broker owns '
            'each account; back up first, then downgrade with --allow-data-loss '
            '(alembic: -x allow_data_loss=true)',
            (SELECT count(*) FROM tenancy.tenant)
            USING ERRCODE = 'EX010';
    END IF;
END
$$;
DROP SCHEMA marketdata CASCADE;
GRANT SELECT ON trading.event TO exchange_app;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenancy.tenant', 'tenancy.api_key', 'ledger.customer',
                             'ledger.account', 'ledger.journal', 'ledger.entry', 'trading.orders',
                             'trading.trade', 'trading.event'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS owner_all ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_rows ON %s', t);
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
DROP TRIGGER customer_tenant_immutable ON ledger.customer;
DROP TRIGGER customer_no_delete ON ledger.customer;
ALTER TABLE ledger.customer DROP COLUMN tenant_id;
DROP SCHEMA tenancy CASCADE;
