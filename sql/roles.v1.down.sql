-- Undo sql/roles.v1.sql for this database. The roles themselves are dropped only when no other
-- database on the cluster still depends on them.
DO $$
DECLARE
    v_role text;
BEGIN
    ALTER DEFAULT PRIVILEGES FOR ROLE exchange_owner GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
    EXECUTE pg_catalog.format('REVOKE CREATE ON DATABASE %I FROM exchange_owner', current_database());
    FOREACH v_role IN ARRAY ARRAY['exchange_app', 'exchange_owner'] LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP ROLE IF EXISTS %I', v_role);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % is still used by another database; kept', v_role;
        END;
    END LOOP;
END
$$;
