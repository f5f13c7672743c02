-- The deferred check that a journal has entries runs at commit, as whoever commits: for the
-- application role that is outside the owner's functions, where row-level security hides the
-- entries of other tenants (and of the exchange's own accounts), so a trade journal could look
-- empty. The check runs as the owner, who sees every entry. Same rule, same error.
CREATE OR REPLACE FUNCTION ledger.journal_check_has_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT count(*) FROM ledger.entry WHERE journal_id = NEW.id) = 0 THEN
        RAISE EXCEPTION 'journal % has no entries', NEW.id USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;
