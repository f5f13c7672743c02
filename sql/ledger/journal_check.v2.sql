-- The deferred check that a journal has entries, rewritten so that it always uses the index on
-- entry(journal_id). PL/pgSQL caches a generic plan for `EXISTS (... WHERE journal_id = $1)`,
-- and the planner may choose a sequential scan for it (it expects to stop at the first match);
-- but a new journal's entries are the newest rows, so that scan reads the whole table. A count
-- over the journal's entries is planned as an index scan. Same rule, same error.
CREATE OR REPLACE FUNCTION ledger.journal_check_has_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM ledger.entry WHERE journal_id = NEW.id) = 0 THEN
        RAISE EXCEPTION 'journal % has no entries', NEW.id USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;
