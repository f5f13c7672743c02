-- Cluster roles shared by every exchange database on the cluster.
--   exchange_owner: owns the schemas and their objects; nobody logs in as it.
--   exchange_app:   what the application connects as. Not the owner, not a superuser, no
--                   BYPASSRLS: it reads, and changes money only through the owner's functions.
-- Roles are cluster-wide, so creating them must tolerate a second database on the same cluster.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'exchange_owner') THEN
        CREATE ROLE exchange_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'exchange_app') THEN
        CREATE ROLE exchange_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
    END IF;
    -- The migrating user must be able to SET ROLE exchange_owner, even when not a superuser.
    IF NOT pg_catalog.pg_has_role(current_user, 'exchange_owner', 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT exchange_owner TO %I', current_user);
    END IF;
    EXECUTE pg_catalog.format('GRANT CREATE ON DATABASE %I TO exchange_owner', current_database());
END
$$;

-- PostgreSQL lets PUBLIC execute every new function. A SECURITY DEFINER function added by a
-- later migration must not become callable by the application before its grants say so.
ALTER DEFAULT PRIVILEGES FOR ROLE exchange_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
