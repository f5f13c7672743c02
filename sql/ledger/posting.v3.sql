-- ledger.post_journal of sql/ledger/posting.v1.sql, writing its legs through
-- ledger.insert_entries (sql/ledger/balances.v1.sql, migration 0007) instead of a plain INSERT
-- whose row trigger moved the balances. Otherwise unchanged. And ledger.account_id, by index.
CREATE OR REPLACE FUNCTION ledger.post_journal(
    p_kind text,
    p_reference text,
    p_idempotency_key text,
    p_account_ids bigint[],
    p_assets text[],
    p_amounts numeric[]
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_journal_id bigint;
    v_existing ledger.journal;
    v_leg record;
    v_leg_count integer := coalesce(cardinality(p_account_ids), 0);
BEGIN
    IF v_leg_count NOT BETWEEN 2 AND 64
       OR coalesce(cardinality(p_assets), 0) <> v_leg_count
       OR coalesce(cardinality(p_amounts), 0) <> v_leg_count THEN
        RAISE EXCEPTION 'a journal needs 2 to 64 legs, each with an account, an asset and an amount'
            USING ERRCODE = 'EX010';
    END IF;
    IF (SELECT count(DISTINCT a) FROM unnest(p_account_ids) AS a) <> v_leg_count THEN
        RAISE EXCEPTION 'each account may appear in one leg of a journal (with its net amount)'
            USING ERRCODE = 'EX010';
    END IF;
    IF NOT EXISTS (SELECT FROM ledger.journal_kind WHERE kind = p_kind) THEN
        RAISE EXCEPTION 'unknown journal kind %', p_kind USING ERRCODE = 'EX010';
    END IF;

    -- The triggers enforce these rules too; checking first gives the caller the leg's number
    -- and reports a malformed request before any question of funds.
    SELECT l.ord, l.account_id, l.asset, l.amount, a.id AS found_id, a.asset AS account_asset,
           s.scale
      INTO v_leg
      FROM unnest(p_account_ids, p_assets, p_amounts) WITH ORDINALITY
           AS l(account_id, asset, amount, ord)
      LEFT JOIN ledger.account a ON a.id = l.account_id
      LEFT JOIN ledger.asset s ON s.code = a.asset
     WHERE a.id IS NULL OR a.asset IS DISTINCT FROM l.asset
        OR l.amount IS NULL OR l.amount = 0 OR NOT (l.amount > -1e24 AND l.amount < 1e24)
        OR l.amount <> round(l.amount, s.scale)
     ORDER BY l.ord
     LIMIT 1;
    IF FOUND THEN
        IF v_leg.found_id IS NULL THEN
            RAISE EXCEPTION 'leg %: unknown ledger account %', v_leg.ord, v_leg.account_id
                USING ERRCODE = 'EX007';
        ELSIF v_leg.account_asset IS DISTINCT FROM v_leg.asset THEN
            RAISE EXCEPTION 'leg %: account % holds %, not %',
                v_leg.ord, v_leg.account_id, v_leg.account_asset, v_leg.asset
                USING ERRCODE = 'EX003';
        ELSIF v_leg.amount IS NULL OR v_leg.amount = 0 THEN
            RAISE EXCEPTION 'leg %: amount must be non-zero, got %',
                v_leg.ord, coalesce(v_leg.amount::text, 'null')
                USING ERRCODE = 'EX005';
        ELSIF NOT (v_leg.amount > -1e24 AND v_leg.amount < 1e24) THEN
            RAISE EXCEPTION 'leg %: amount must be a finite number below 10^24 in magnitude, got %',
                v_leg.ord, left(v_leg.amount::text, 40)
                USING ERRCODE = 'EX010';
        ELSE
            RAISE EXCEPTION 'leg %: amount % is not representable in % (scale %)',
                v_leg.ord, v_leg.amount, v_leg.asset, v_leg.scale
                USING ERRCODE = 'EX004';
        END IF;
    END IF;

    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO ledger.journal (kind, reference, idempotency_key)
        VALUES (p_kind, p_reference, p_idempotency_key)
        ON CONFLICT ON CONSTRAINT journal_idempotency_key_key DO NOTHING
        RETURNING id INTO v_journal_id;
        IF v_journal_id IS NULL THEN
            SELECT * INTO v_existing FROM ledger.journal WHERE idempotency_key = p_idempotency_key;
            IF v_existing.kind <> p_kind
               OR v_existing.reference IS DISTINCT FROM p_reference
               OR EXISTS (
                   (SELECT account_id, asset, amount FROM ledger.entry WHERE journal_id = v_existing.id
                    EXCEPT ALL
                    SELECT * FROM unnest(p_account_ids, p_assets, p_amounts))
                   UNION ALL
                   (SELECT * FROM unnest(p_account_ids, p_assets, p_amounts)
                    EXCEPT ALL
                    SELECT account_id, asset, amount FROM ledger.entry WHERE journal_id = v_existing.id)
               ) THEN
                RAISE EXCEPTION 'idempotency key % was already used for a different journal (%)',
                    p_idempotency_key, v_existing.id
                    USING ERRCODE = 'EX006';
            END IF;
            RETURN v_existing.id;
        END IF;
    ELSE
        INSERT INTO ledger.journal (kind, reference)
        VALUES (p_kind, p_reference)
        RETURNING id INTO v_journal_id;
    END IF;

    -- Amounts are exact at this point; rounding only normalises their written scale (10.0000 USD
    -- is stored as 10.00), so balances read back in the asset's scale.
    PERFORM ledger.insert_entries(
        array_agg(v_journal_id ORDER BY l.account_id), array_agg(l.account_id ORDER BY l.account_id),
        array_agg(l.asset ORDER BY l.account_id),
        array_agg(round(l.amount, s.scale) ORDER BY l.account_id))
      FROM unnest(p_account_ids, p_assets, p_amounts) AS l(account_id, asset, amount)
      JOIN ledger.asset s ON s.code = l.asset;
    RETURN v_journal_id;
END
$$;

-- Returns the id of an account, creating it on first use. (Version 1 compared customer_id with
-- IS NOT DISTINCT FROM, which no index serves: every call scanned the accounts.) Concurrent first uses agree on one row.
CREATE OR REPLACE FUNCTION ledger.account_id(
    p_customer_id bigint, p_asset text, p_bucket text, p_label text DEFAULT ''
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    LOOP
        IF p_customer_id IS NULL THEN
            SELECT id INTO v_id FROM ledger.account
             WHERE customer_id IS NULL AND asset = p_asset AND bucket = p_bucket AND label = p_label;
        ELSE
            SELECT id INTO v_id FROM ledger.account
             WHERE customer_id = p_customer_id AND asset = p_asset AND bucket = p_bucket
               AND label = p_label;
        END IF;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        IF NOT EXISTS (SELECT FROM ledger.asset WHERE code = p_asset) THEN
            RAISE EXCEPTION 'unknown asset %', p_asset USING ERRCODE = 'EX010';
        END IF;
        IF p_customer_id IS NOT NULL
           AND NOT EXISTS (SELECT FROM ledger.customer WHERE id = p_customer_id) THEN
            RAISE EXCEPTION 'unknown customer %', p_customer_id USING ERRCODE = 'EX010';
        END IF;
        INSERT INTO ledger.account (customer_id, asset, bucket, label)
        VALUES (p_customer_id, p_asset, p_bucket, p_label)
        ON CONFLICT ON CONSTRAINT account_owner_asset_bucket_key DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- A concurrent first use created it since the look-up: look it up again.
    END LOOP;
END
$$;
