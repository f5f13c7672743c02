-- Tenants (brokers), their API keys, and which tenant owns each customer.
-- Runs as exchange_owner. Constraint names follow <table>_<what>, so errors name the rule.
CREATE SCHEMA tenancy;

CREATE TABLE tenancy.tenant (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT tenant_name_key UNIQUE (name)
);

-- Only the SHA-256 of a key's secret is kept. The secret is 256 random bits, so a fast hash is
-- as strong as a slow one here: there is no dictionary to try. An operator key has the scope
-- 'admin' and no tenant; a broker key has a tenant and never 'admin'.
CREATE TABLE tenancy.api_key (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint REFERENCES tenancy.tenant (id),
    secret_sha256 bytea NOT NULL,
    scopes text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT api_key_secret_sha256_length CHECK (octet_length(secret_sha256) = 32),
    CONSTRAINT api_key_scopes_valid CHECK (
        cardinality(scopes) BETWEEN 1 AND 4
        AND scopes <@ ARRAY['read', 'trade', 'transfer', 'admin']
        AND array_position(scopes, NULL) IS NULL
    ),
    CONSTRAINT api_key_admin_has_no_tenant CHECK (('admin' = ANY (scopes)) = (tenant_id IS NULL)),
    CONSTRAINT api_key_admin_scope_alone CHECK (NOT 'admin' = ANY (scopes) OR scopes = '{admin}'),
    CONSTRAINT api_key_revoked_after_created CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX api_key_tenant_id_idx ON tenancy.api_key (tenant_id);

ALTER TABLE ledger.customer ADD COLUMN tenant_id bigint REFERENCES tenancy.tenant (id);

-- Customers created before tenancy existed are given to one tenant made for them, so an
-- upgrade keeps every account and its money.
WITH adopted AS (
    INSERT INTO tenancy.tenant (name)
    SELECT 'default' WHERE EXISTS (SELECT FROM ledger.customer)
    RETURNING id
)
UPDATE ledger.customer SET tenant_id = (SELECT id FROM adopted);

ALTER TABLE ledger.customer ALTER COLUMN tenant_id SET NOT NULL;
CREATE INDEX customer_tenant_id_idx ON ledger.customer (tenant_id);

COMMENT ON TABLE tenancy.tenant IS 'A broker: owns customers (accounts), their orders and API keys.';
COMMENT ON TABLE tenancy.api_key IS
    'API keys, stored as the SHA-256 of their secret. Only revoked_at ever changes, once.';
COMMENT ON COLUMN ledger.customer.tenant_id IS 'The broker that owns this customer; never changes.';
