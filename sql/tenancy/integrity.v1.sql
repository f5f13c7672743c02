-- Rules on tenancy rows that hold for every role, the owner included.

-- A customer's tenant never changes: its orders, fills and ledger history would change broker.
CREATE FUNCTION tenancy.reject_customer_tenant_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'customer %: the tenant of a customer never changes', OLD.id
        USING ERRCODE = 'ET003';
END
$$;

CREATE TRIGGER customer_tenant_immutable
    BEFORE UPDATE OF tenant_id ON ledger.customer
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION tenancy.reject_customer_tenant_change();

-- A key is revoked once and otherwise never changes; keys and tenants are never deleted, so an
-- audit can always say which key did what.
CREATE FUNCTION tenancy.check_api_key_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.secret_sha256 <> OLD.secret_sha256 OR NEW.scopes <> OLD.scopes
       OR NEW.created_at <> OLD.created_at
       OR OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'api key %: only revoking an active key may change it', OLD.id
            USING ERRCODE = 'ET003';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER api_key_check_update
    BEFORE UPDATE ON tenancy.api_key
    FOR EACH ROW EXECUTE FUNCTION tenancy.check_api_key_update();

CREATE FUNCTION tenancy.reject_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME USING ERRCODE = 'ET003';
END
$$;

CREATE TRIGGER api_key_no_delete
    BEFORE DELETE OR TRUNCATE ON tenancy.api_key
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.reject_delete();

CREATE TRIGGER tenant_no_delete
    BEFORE DELETE OR TRUNCATE ON tenancy.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.reject_delete();

CREATE TRIGGER customer_no_delete
    BEFORE DELETE OR TRUNCATE ON ledger.customer
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.reject_delete();
