-- Downgrade of sql/ledger/balances.v1.sql: the row trigger of sql/ledger/posted_at.v1.sql moves
-- each balance again, one entry at a time.
DROP FUNCTION ledger.insert_entries(bigint[], bigint[], text[], numeric[]);
DROP TRIGGER entry_apply_statement ON ledger.entry;
DROP FUNCTION ledger.entry_apply_statement();
DROP TRIGGER entry_stamp ON ledger.entry;
DROP FUNCTION ledger.entry_stamp();

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
    -- Under the row lock: later than every stamp of any transaction that touched this account
    -- before (it held the lock until it committed).
    NEW.posted_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER entry_apply_to_balance
    BEFORE INSERT ON ledger.entry
    FOR EACH ROW EXECUTE FUNCTION ledger.entry_apply_to_balance();

COMMENT ON COLUMN ledger.entry.posted_at IS
    'clock_timestamp() under the account''s row lock, set by the entry trigger; NULL before '
    'migration 0005. Non-decreasing along account_seq.';
