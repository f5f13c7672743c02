-- Undoes posting.v2.sql: the customer functions as posting.v1.sql defined them.

CREATE OR REPLACE FUNCTION ledger.create_customer(p_external_ref text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO ledger.customer (external_ref) VALUES (p_external_ref) RETURNING id;
$$;

CREATE OR REPLACE FUNCTION ledger.deposit(
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

CREATE OR REPLACE FUNCTION ledger.withdraw(
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

CREATE OR REPLACE FUNCTION ledger.transfer(
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
