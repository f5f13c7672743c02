-- Downgrade of sql/ledger/posted_at.v1.sql: the entry trigger's function of
-- sql/ledger/integrity.v1.sql, and no booking columns (their values are lost; upgrading again
-- leaves them NULL, and the reports then take those journals as booked at their created_at).
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
    RETURN NEW;
END
$$;

ALTER TABLE ledger.journal DROP COLUMN xact_id;
ALTER TABLE ledger.entry DROP COLUMN posted_at;
