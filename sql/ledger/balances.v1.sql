-- Set-based balances (migration 0007). Until now a row trigger moved an account's cached balance
-- one entry at a time: one UPDATE of ledger.account per entry, which was most of the cost of a
-- posting (each UPDATE re-evaluates the account's constraints). Now the writer of the entries
-- says where each lands in its account's history (account_seq, balance_after), one statement
-- trigger checks every entry of the statement against its account under the account's row lock,
-- and moves each cached balance once. ledger.insert_entries computes those values; every posting
-- function writes entries through it, so a batch of journals costs one INSERT.
--
-- New error code: EX011 entry_out_of_sequence (an entry that does not continue its account's
-- history: a wrong account_seq or balance_after). EX002 insufficient_funds as before.

DROP TRIGGER entry_apply_to_balance ON ledger.entry;
DROP FUNCTION ledger.entry_apply_to_balance();

-- Booking stamp (docs/reporting.md, "As of"): whoever inserts, posted_at is the clock when the row
-- is written. ledger.insert_entries locks the accounts first, so the stamp is taken under the
-- accounts' row locks. A writer that did not lock them cannot get a stamp out of order either:
-- had another transaction touched the account after it read the account, the statement trigger
-- below (which takes the lock) would find the entry out of sequence.
CREATE FUNCTION ledger.entry_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.posted_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER entry_stamp
    BEFORE INSERT ON ledger.entry
    FOR EACH ROW EXECUTE FUNCTION ledger.entry_stamp();

-- Every entry of the statement must continue its account's history: account_seq is the next
-- number, balance_after the running balance, and only custody may go below zero. Then each
-- account's cached balance and entry count move once, by the statement's total.
CREATE FUNCTION ledger.entry_apply_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_account_ids bigint[];
    v_totals numeric[];
    v_counts bigint[];
    v_row record;
BEGIN
    SELECT array_agg(account_id ORDER BY account_id), array_agg(total ORDER BY account_id),
           array_agg(entries ORDER BY account_id)
      INTO v_account_ids, v_totals, v_counts
      FROM (SELECT account_id, sum(amount) AS total, count(*) AS entries
              FROM new_entries GROUP BY account_id) d;
    -- Lock before reading: nothing may change an account between this check and the UPDATE.
    -- (Every look-up of an account here goes by its id: the table may hold millions.)
    PERFORM FROM ledger.account WHERE id = ANY (v_account_ids) ORDER BY id FOR UPDATE;
    SELECT n.* INTO v_row
      FROM (SELECT e.id, e.account_id, e.asset, e.amount, e.account_seq, e.balance_after,
                   a.bucket,
                   a.entry_count + row_number() OVER w AS expected_seq,
                   a.balance + sum(e.amount) OVER w AS expected_balance
              FROM new_entries e
              JOIN (SELECT id, bucket, entry_count, balance FROM ledger.account
                     WHERE id = ANY (v_account_ids)) a ON a.id = e.account_id
            WINDOW w AS (PARTITION BY e.account_id ORDER BY e.account_seq)) n
     WHERE n.account_seq <> n.expected_seq
        OR n.balance_after <> n.expected_balance
        OR (n.bucket <> 'custody' AND n.expected_balance < 0)
     ORDER BY n.id
     LIMIT 1;
    IF FOUND THEN
        IF v_row.account_seq = v_row.expected_seq AND v_row.balance_after = v_row.expected_balance THEN
            RAISE EXCEPTION 'insufficient funds: account % holds % %, the entry needs %',
                v_row.account_id, v_row.expected_balance - v_row.amount, v_row.asset, -v_row.amount
                USING ERRCODE = 'EX002';
        END IF;
        RAISE EXCEPTION 'entry % does not continue the history of account %: account_seq % and '
            'balance_after % where % and % come next',
            v_row.id, v_row.account_id, v_row.account_seq, v_row.balance_after,
            v_row.expected_seq, v_row.expected_balance
            USING ERRCODE = 'EX011';
    END IF;
    UPDATE ledger.account a
       SET balance = a.balance + d.total,
           entry_count = a.entry_count + d.entries
      FROM unnest(v_account_ids, v_totals, v_counts) AS d(account_id, total, entries)
     WHERE a.id = d.account_id AND a.id = ANY (v_account_ids);
    RETURN NULL;
END
$$;

CREATE TRIGGER entry_apply_statement
    AFTER INSERT ON ledger.entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.entry_apply_statement();

-- Writes legs (leg i: journal_ids[i], account_ids[i], assets[i], amounts[i]) in the order given,
-- each continuing its account's history. The accounts are locked first, in id order, so that
-- concurrent postings queue on them in one order (a caller that locked some accounts earlier, as
-- the matching engine does when it checks funds, can still deadlock with another: PostgreSQL
-- aborts one, which retries); each leg then gets its account's next account_seq and running
-- balance. The statement trigger checks the result.
-- Internal: the owner's posting functions call it (the application role may not).
CREATE FUNCTION ledger.insert_entries(
    p_journal_ids bigint[], p_account_ids bigint[], p_assets text[], p_amounts numeric[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM ledger.account WHERE id = ANY (p_account_ids) ORDER BY id FOR UPDATE;
    INSERT INTO ledger.entry (journal_id, account_id, account_seq, asset, amount, balance_after)
    SELECT l.journal_id, l.account_id, coalesce(a.entry_count, 0) + row_number() OVER w, l.asset,
           l.amount, coalesce(a.balance, 0) + sum(l.amount) OVER w
      FROM unnest(p_journal_ids, p_account_ids, p_assets, p_amounts) WITH ORDINALITY
           AS l(journal_id, account_id, asset, amount, ord)
      LEFT JOIN (SELECT id, entry_count, balance FROM ledger.account
                  WHERE id = ANY (p_account_ids)) a ON a.id = l.account_id
    WINDOW w AS (PARTITION BY l.account_id ORDER BY l.ord)
     ORDER BY l.ord;
END
$$;

REVOKE ALL ON FUNCTION ledger.insert_entries(bigint[], bigint[], text[], numeric[]) FROM PUBLIC;

COMMENT ON COLUMN ledger.entry.posted_at IS
    'clock_timestamp() when the entry was written (trigger entry_stamp), under its account''s row '
    'lock; NULL before migration 0005. Non-decreasing along account_seq.';
