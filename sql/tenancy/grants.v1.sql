-- The application reads its tenant's rows (row security decides which) and acts through the
-- owner's functions. It cannot read API keys: authentication looks a key up by id.
REVOKE ALL ON ALL TABLES IN SCHEMA tenancy FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenancy FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO exchange_app;
GRANT SELECT ON tenancy.tenant TO exchange_app;
-- Row security policies call it as the querying role.
GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id() TO exchange_app;
GRANT EXECUTE ON FUNCTION
    tenancy.create_tenant(text),
    tenancy.create_api_key(bigint, bytea, text[]),
    tenancy.revoke_api_key(bigint),
    tenancy.api_key_for(bigint)
    TO exchange_app;

-- Market events carry every broker's orders; streams read them through the owner's functions.
REVOKE SELECT ON trading.event FROM exchange_app;

REVOKE ALL ON ALL TABLES IN SCHEMA marketdata FROM PUBLIC;
GRANT USAGE ON SCHEMA marketdata TO exchange_app;
GRANT SELECT ON ALL TABLES IN SCHEMA marketdata TO exchange_app;
