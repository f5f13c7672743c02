-- The cluster role finance staff read reports through. Runs as the migrating user (roles are
-- cluster-wide, not owned by the schema owner), and tolerates a second database on the cluster.
--   finance_reader: NOLOGIN. SELECT on the views of schema reporting and nothing else. A finance
--                   login role is made a member of it (`exchange db grant-finance USER`).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'finance_reader') THEN
        CREATE ROLE finance_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;
