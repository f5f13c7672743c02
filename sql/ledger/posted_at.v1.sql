-- Booking times, for the "as of" reports (docs/reporting.md, "As of"). Runs as exchange_owner.
--
-- ledger.entry.posted_at: clock_timestamp() taken by the entry trigger once it holds the
-- account's row lock. A transaction that touches an account after another did waited for that
-- one's commit, and every stamp of that one was taken before it committed: so each stamp of the
-- later transaction on that account is later than every stamp of the earlier one.
-- ledger.journal.xact_id: the posting transaction (pg_current_xact_id(), 64 bits, never reused
-- while the cluster lives). A transaction is booked at the latest posted_at of its entries; "as
-- of T" keeps the transactions booked at or before T, whole (reporting.journals). Together with
-- created_at (the transaction's start, shared by its rows) it names the transaction even across
-- a dump and restore into a new cluster, which restarts transaction ids.
--
-- Both are NULL on rows written before this migration: those committed before it, and are taken
-- as booked at their journal's created_at, as the reports did until now. Entries are immutable
-- (entry_immutable), so posted_at is written once, at INSERT, by the trigger (which overrides
-- any value given); xact_id is a column default, set when the journal is inserted (only the
-- owner's functions insert journals).
-- Assumption: the server clock does not step backwards (NTP slewing is fine).
ALTER TABLE ledger.entry ADD COLUMN posted_at timestamptz;
ALTER TABLE ledger.journal ADD COLUMN xact_id xid8;
ALTER TABLE ledger.journal ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();

COMMENT ON COLUMN ledger.entry.posted_at IS
    'clock_timestamp() under the account''s row lock, set by the entry trigger; NULL before '
    'migration 0005. Non-decreasing along account_seq.';
COMMENT ON COLUMN ledger.journal.xact_id IS
    'The posting transaction (pg_current_xact_id()); NULL before migration 0005. With created_at '
    'it groups the journals of one transaction, booked together (reporting.journals).';

-- sql/ledger/integrity.v1.sql's function, stamping posted_at after the lock is taken.
CREATE OR REPLACE FUNCTION ledger.entry_apply_to_balance() RETURNS trigger
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
