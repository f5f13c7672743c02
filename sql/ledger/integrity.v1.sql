-- Triggers that make a wrong ledger state impossible, whoever writes the rows.
-- Error codes (SQLSTATE class EX) are stable; the application maps them to its error codes:
--   EX001 unbalanced_journal   EX002 insufficient_funds    EX003 asset_mismatch
--   EX004 amount_scale         EX005 zero_amount           EX006 idempotency_key_reused
--   EX007 unknown_account      EX008 ledger_immutable      EX009 journal_incomplete
--   EX010 invalid_request

-- Cached balance, running balance and per-account order: each entry moves its account's balance under the row
-- lock that the UPDATE takes, so concurrent postings on one account queue up (or fail with a
-- serialization error) instead of both passing the same balance check.
CREATE FUNCTION ledger.entry_apply_to_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_balance numeric;
    v_entry_count bigint;
BEGIN
    UPDATE ledger.account
       SET balance = balance + NEW.amount,
           entry_count = entry_count + 1
     WHERE id = NEW.account_id
       AND (bucket = 'custody' OR balance + NEW.amount >= 0)
    RETURNING balance, entry_count INTO v_balance, v_entry_count;
    IF NOT FOUND THEN
        SELECT balance INTO v_balance FROM ledger.account WHERE id = NEW.account_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown ledger account %', NEW.account_id
                USING ERRCODE = 'EX007';
        END IF;
        RAISE EXCEPTION 'insufficient funds: account % holds % %, the entry needs %',
            NEW.account_id, v_balance, NEW.asset, -NEW.amount
            USING ERRCODE = 'EX002';
    END IF;
    NEW.balance_after := v_balance;
    NEW.account_seq := v_entry_count;
    RETURN NEW;
END
$$;

CREATE TRIGGER entry_apply_to_balance
    BEFORE INSERT ON ledger.entry
    FOR EACH ROW EXECUTE FUNCTION ledger.entry_apply_to_balance();

-- Set-based checks over every journal an INSERT statement touched: amounts fit the asset's
-- scale, each journal sums to zero per asset, and a journal's legs all arrive in that one
-- statement (so a balanced journal cannot be extended later).
CREATE FUNCTION ledger.entry_check_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_row record;
BEGIN
    SELECT n.id, n.amount, n.asset, a.scale INTO v_row
      FROM new_entries n JOIN ledger.asset a ON a.code = n.asset
     WHERE n.amount <> round(n.amount, a.scale)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'amount % is not representable in % (scale %)',
            v_row.amount, v_row.asset, v_row.scale
            USING ERRCODE = 'EX004';
    END IF;

    SELECT n.journal_id, n.asset, sum(n.amount) AS total INTO v_row
      FROM new_entries n
     GROUP BY n.journal_id, n.asset
    HAVING sum(n.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal % does not balance: its % legs sum to %',
            v_row.journal_id, v_row.asset, v_row.total
            USING ERRCODE = 'EX001';
    END IF;

    SELECT t.journal_id INTO v_row
      FROM (SELECT journal_id, count(*) AS n FROM new_entries GROUP BY journal_id) t
     WHERE (SELECT count(*) FROM ledger.entry e WHERE e.journal_id = t.journal_id) <> t.n
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal % already has entries: a journal''s legs are posted in one statement',
            v_row.journal_id
            USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER entry_check_statement
    AFTER INSERT ON ledger.entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.entry_check_statement();

-- A journal without legs is an event that moved nothing: refuse it at commit.
CREATE FUNCTION ledger.journal_check_has_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ledger.entry WHERE journal_id = NEW.id) THEN
        RAISE EXCEPTION 'journal % has no entries', NEW.id USING ERRCODE = 'EX009';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER journal_check_has_entries
    AFTER INSERT ON ledger.journal
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger.journal_check_has_entries();

-- History is append-only, for the owner too (privileges already stop everyone else).
CREATE FUNCTION ledger.reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on ledger.% is not allowed: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'EX008';
END
$$;

CREATE TRIGGER entry_immutable
    BEFORE UPDATE OR DELETE ON ledger.entry
    FOR EACH ROW EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER entry_no_truncate
    BEFORE TRUNCATE ON ledger.entry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER journal_immutable
    BEFORE UPDATE OR DELETE ON ledger.journal
    FOR EACH ROW EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER journal_no_truncate
    BEFORE TRUNCATE ON ledger.journal
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER account_no_delete
    BEFORE DELETE ON ledger.account
    FOR EACH ROW EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER account_no_truncate
    BEFORE TRUNCATE ON ledger.account
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();

-- A cached balance starts at zero and moves only through entries. The entry trigger updates it
-- at trigger depth 1; any direct UPDATE of an account (depth 0) is refused, cheaply, by WHEN.
-- That also freezes an account's owner, asset and bucket once it exists.
CREATE FUNCTION ledger.reject_direct_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger account % changes only by posting entries', NEW.id
        USING ERRCODE = 'EX008';
END
$$;

CREATE TRIGGER account_changes_through_entries_only
    BEFORE UPDATE ON ledger.account
    FOR EACH ROW WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION ledger.reject_direct_balance();
CREATE TRIGGER account_balance_starts_at_zero
    BEFORE INSERT ON ledger.account
    FOR EACH ROW WHEN (NEW.balance <> 0 OR NEW.entry_count <> 0)
    EXECUTE FUNCTION ledger.reject_direct_balance();

-- Re-scaling an asset would silently change the meaning of every amount already booked.
CREATE FUNCTION ledger.reject_asset_rescale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the scale of asset % cannot change', OLD.code USING ERRCODE = 'EX008';
END
$$;

CREATE TRIGGER asset_scale_immutable
    BEFORE UPDATE OF scale, code ON ledger.asset
    FOR EACH ROW WHEN (OLD.scale <> NEW.scale OR OLD.code <> NEW.code)
    EXECUTE FUNCTION ledger.reject_asset_rescale();
