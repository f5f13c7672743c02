-- Row-level security: the application role sees only the rows of the tenant its transaction
-- acts for (app.tenant_id, set with SET LOCAL), and no tenant's rows when it acts for none.
-- FORCE makes the owner subject to policies too; its own policy lets the engine and reports,
-- which run as the owner, see everything. Superusers bypass row security, as always.
-- Order books and instruments are shared (brokers trade anonymously): public market data is
-- read through the marketdata views, which show no customer, tenant or order of anyone.

ALTER TABLE tenancy.tenant ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.api_key ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE ledger.customer ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE ledger.account ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE ledger.journal ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE ledger.entry ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE trading.orders ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE trading.trade ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE trading.event ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

CREATE POLICY owner_all ON tenancy.tenant TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON tenancy.api_key TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON ledger.customer TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON ledger.account TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON ledger.journal TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON ledger.entry TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON trading.orders TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON trading.trade TO exchange_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON trading.event TO exchange_owner USING (true) WITH CHECK (true);

-- The application only reads these tables (its writes go through the owner's functions), so
-- its policies are FOR SELECT. API keys and market events have no application policy at all.
CREATE POLICY tenant_rows ON tenancy.tenant FOR SELECT TO exchange_app
    USING (id = tenancy.current_tenant_id());
CREATE POLICY tenant_rows ON ledger.customer FOR SELECT TO exchange_app
    USING (tenant_id = tenancy.current_tenant_id());
CREATE POLICY tenant_rows ON ledger.account FOR SELECT TO exchange_app
    USING (customer_id IN (SELECT id FROM ledger.customer));
CREATE POLICY tenant_rows ON ledger.entry FOR SELECT TO exchange_app
    USING (account_id IN (SELECT id FROM ledger.account));
CREATE POLICY tenant_rows ON ledger.journal FOR SELECT TO exchange_app
    USING (EXISTS (SELECT FROM ledger.entry e WHERE e.journal_id = journal.id));
CREATE POLICY tenant_rows ON trading.orders FOR SELECT TO exchange_app
    USING (customer_id IN (SELECT id FROM ledger.customer));
CREATE POLICY tenant_rows ON trading.trade FOR SELECT TO exchange_app
    USING (maker_order_id IN (SELECT id FROM trading.orders)
           OR taker_order_id IN (SELECT id FROM trading.orders));
