-- Undo sql/reporting/roles.v1.sql. The role is dropped only when no other database on the
-- cluster still grants it anything (its reporting views); dropping it also ends the finance
-- login roles' membership in it.
DO $$
BEGIN
    DROP ROLE IF EXISTS finance_reader;
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'role finance_reader is still used by another database; kept';
END
$$;
