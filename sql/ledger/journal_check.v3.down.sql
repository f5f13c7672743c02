-- Undo journal_check.v3.sql: the definition of sql/ledger/journal_check.v2.sql.
CREATE OR REPLACE FUNCTION ledger.journal_check_has_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER RESET search_path AS $$
BEGIN
    IF (SELECT count(*) FROM ledger.entry WHERE journal_id = NEW.id) = 0 THEN
        RAISE EXCEPTION 'journal % has no entries', NEW.id USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;
