-- Posting: the only ways money moves. SECURITY DEFINER functions owned by exchange_owner, so
-- the application role can call them without any write privilege on the ledger tables.

-- Posts one journal with all its legs (leg i = account_ids[i], assets[i], amounts[i]) and returns
-- its id. With an idempotency key, a retry returns the first journal; the same key with other
-- legs or another kind is an error. Each account appears in at most one leg (its net change),
-- so the outcome never depends on the order of the legs; legs are written in account order so
-- that concurrent journals lock accounts in one global order and cannot deadlock on each other.
--
-- Internal: only the owner's business functions (deposit, withdraw, transfer, and the trading
-- functions) call it, each deriving its accounts itself. With raw legs a caller could move money
-- out of any account into any other, so the application role may not execute it. Idempotency
-- keys are namespaced by those callers ('customer/<id>/<key>', ...).
CREATE FUNCTION ledger.post_journal(
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
    INSERT INTO ledger.entry (journal_id, account_id, asset, amount)
    SELECT v_journal_id, l.account_id, l.asset, round(l.amount, s.scale)
      FROM unnest(p_account_ids, p_assets, p_amounts) AS l(account_id, asset, amount)
      JOIN ledger.asset s ON s.code = l.asset
     ORDER BY l.account_id;
    RETURN v_journal_id;
END
$$;

CREATE FUNCTION ledger.create_customer(p_external_ref text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO ledger.customer (external_ref) VALUES (p_external_ref) RETURNING id;
$$;

-- Returns the id of an account, creating it on first use. Concurrent first uses agree on one row.
CREATE FUNCTION ledger.account_id(
    p_customer_id bigint, p_asset text, p_bucket text, p_label text DEFAULT ''
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM ledger.account
     WHERE customer_id IS NOT DISTINCT FROM p_customer_id
       AND asset = p_asset AND bucket = p_bucket AND label = p_label;
    IF FOUND THEN
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
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM ledger.account
         WHERE customer_id IS NOT DISTINCT FROM p_customer_id
           AND asset = p_asset AND bucket = p_bucket AND label = p_label;
    END IF;
    RETURN v_id;
END
$$;

CREATE FUNCTION ledger.check_customer_request(
    p_amount numeric, p_idempotency_key text, p_reference text
) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- NaN sorts above every number in PostgreSQL, so the upper bound refuses it too.
    IF p_amount IS NULL OR p_amount <= 0 OR p_amount >= 1e24 THEN
        RAISE EXCEPTION 'amount must be positive and below 10^24, got %',
            coalesce(left(p_amount::text, 40), 'null')
            USING ERRCODE = 'EX010';
    END IF;
    IF p_idempotency_key IS NULL OR length(p_idempotency_key) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'an idempotency key of 1 to 200 characters is required'
            USING ERRCODE = 'EX010';
    END IF;
    IF length(p_reference) NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION 'a reference, when given, has 1 to 500 characters' USING ERRCODE = 'EX010';
    END IF;
END
$$;

-- Idempotency keys of customer operations are scoped by customer, so two customers (or two
-- brokers) choosing the same key never collide. Custody is split per customer: one custody row
-- per asset would be a lock that every deposit and withdrawal of the asset queues on.
CREATE FUNCTION ledger.deposit(
    p_customer_id bigint, p_asset text, p_amount numeric, p_idempotency_key text,
    p_reference text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ledger.check_customer_request(p_amount, p_idempotency_key, p_reference);
    RETURN ledger.post_journal(
        'deposit', p_reference, 'customer/' || p_customer_id || '/' || p_idempotency_key,
        ARRAY[ledger.account_id(NULL, p_asset, 'custody', 'customer/' || p_customer_id),
              ledger.account_id(p_customer_id, p_asset, 'available')],
        ARRAY[p_asset, p_asset],
        ARRAY[-p_amount, p_amount]);
END
$$;

CREATE FUNCTION ledger.withdraw(
    p_customer_id bigint, p_asset text, p_amount numeric, p_idempotency_key text,
    p_reference text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ledger.check_customer_request(p_amount, p_idempotency_key, p_reference);
    RETURN ledger.post_journal(
        'withdrawal', p_reference, 'customer/' || p_customer_id || '/' || p_idempotency_key,
        ARRAY[ledger.account_id(p_customer_id, p_asset, 'available'),
              ledger.account_id(NULL, p_asset, 'custody', 'customer/' || p_customer_id)],
        ARRAY[p_asset, p_asset],
        ARRAY[-p_amount, p_amount]);
END
$$;

CREATE FUNCTION ledger.transfer(
    p_from_customer_id bigint, p_to_customer_id bigint, p_asset text, p_amount numeric,
    p_idempotency_key text, p_reference text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ledger.check_customer_request(p_amount, p_idempotency_key, p_reference);
    IF p_from_customer_id = p_to_customer_id THEN
        RAISE EXCEPTION 'a transfer needs two different customers' USING ERRCODE = 'EX010';
    END IF;
    RETURN ledger.post_journal(
        'transfer', p_reference, 'customer/' || p_from_customer_id || '/' || p_idempotency_key,
        ARRAY[ledger.account_id(p_from_customer_id, p_asset, 'available'),
              ledger.account_id(p_to_customer_id, p_asset, 'available')],
        ARRAY[p_asset, p_asset],
        ARRAY[-p_amount, p_amount]);
END
$$;
