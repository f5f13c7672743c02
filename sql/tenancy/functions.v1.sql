-- Who a session acts for. The API sets app.tenant_id with SET LOCAL in each transaction; row
-- security policies and the functions below read it. Operators (members of exchange_owner, such
-- as the migrating user and superusers) may act without a tenant.

CREATE FUNCTION tenancy.current_tenant_id() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::bigint;
$$;

CREATE FUNCTION tenancy.is_operator() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_has_role(session_user, 'exchange_owner', 'MEMBER');
$$;

-- The tenant a request acts for: the one it names, else the session's. NULL only for operators.
CREATE FUNCTION tenancy.acting_tenant(p_tenant_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant_id bigint := coalesce(p_tenant_id, tenancy.current_tenant_id());
BEGIN
    IF v_tenant_id IS NULL AND NOT tenancy.is_operator() THEN
        RAISE EXCEPTION 'this session acts for no tenant (set app.tenant_id)'
            USING ERRCODE = 'ET001';
    END IF;
    RETURN v_tenant_id;
END
$$;

-- Refuses a customer that is not the tenant's, with the same error as a customer that does not
-- exist: a broker must not learn which ids other brokers use. A NULL tenant is an operator's.
CREATE FUNCTION tenancy.check_customer(p_customer_id bigint, p_tenant_id bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_tenant_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM ledger.customer WHERE id = p_customer_id AND tenant_id = p_tenant_id
    ) THEN
        RAISE EXCEPTION 'unknown customer %', p_customer_id USING ERRCODE = 'EX007';
    END IF;
END
$$;

CREATE FUNCTION tenancy.create_tenant(p_name text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenancy.tenant (name) VALUES (p_name) RETURNING id;
$$;

CREATE FUNCTION tenancy.create_api_key(
    p_tenant_id bigint, p_secret_sha256 bytea, p_scopes text[]
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_tenant_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.tenant WHERE id = p_tenant_id) THEN
        RAISE EXCEPTION 'unknown tenant %', p_tenant_id USING ERRCODE = 'ET002';
    END IF;
    INSERT INTO tenancy.api_key (tenant_id, secret_sha256, scopes)
    VALUES (p_tenant_id, p_secret_sha256, p_scopes)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Revoking an already revoked key changes nothing. Returns false for an unknown key.
CREATE FUNCTION tenancy.revoke_api_key(p_key_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE tenancy.api_key SET revoked_at = now() WHERE id = p_key_id AND revoked_at IS NULL;
    RETURN EXISTS (SELECT FROM tenancy.api_key WHERE id = p_key_id);
END
$$;

-- What authentication needs to know of a key, found by its id. The caller compares the secret's
-- hash in constant time; the application role cannot list keys.
CREATE FUNCTION tenancy.api_key_for(p_key_id bigint)
RETURNS TABLE (tenant_id bigint, secret_sha256 bytea, scopes text[], revoked boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenant_id, secret_sha256, scopes, revoked_at IS NOT NULL
      FROM tenancy.api_key WHERE id = p_key_id;
$$;
