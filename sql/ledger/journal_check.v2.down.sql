-- Undo journal_check.v2.sql: the definition of sql/ledger/integrity.v1.sql.
CREATE OR REPLACE FUNCTION ledger.journal_check_has_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ledger.entry WHERE journal_id = NEW.id) THEN
        RAISE EXCEPTION 'journal % has no entries', NEW.id USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;
