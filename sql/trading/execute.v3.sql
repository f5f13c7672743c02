-- trading.execute of sql/trading/execute.v2.sql (migration 0007), the same rules at a cost linear
-- in the batch: the accepted commands and the results are gathered in arrays and turned into JSON
-- once (appending to a JSON array copies it), and the statements keep one generic plan per
-- session (see trading.execute_commands in sql/trading/engine.v2.sql).
CREATE OR REPLACE FUNCTION trading.execute(p_symbol text, p_commands jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_session_tenant_id bigint := tenancy.current_tenant_id();
    v_operator boolean := tenancy.is_operator();
    c jsonb;
    v_tenant_text text;
    v_tenant_id bigint;
    v_account_text text;
    v_refusals jsonb[] := '{}';  -- per command: NULL when it goes to the engine
    v_tenants bigint[] := '{}';  -- per command: the tenant it acts for (NULL: an operator)
    v_accounts bigint[] := '{}';  -- per command: its account, when it goes to the engine
    v_refusal jsonb;
    v_accepted jsonb[] := '{}';
    v_results jsonb;
    v_merged jsonb[] := '{}';
    v_next integer := 0;
BEGIN
    IF jsonb_typeof(p_commands) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_commands) NOT BETWEEN 1 AND 1000 THEN
        RETURN trading.execute_commands(p_symbol, p_commands);  -- raises its batch error
    END IF;
    FOR c IN SELECT value FROM jsonb_array_elements(p_commands) LOOP
        v_refusal := NULL;
        v_tenant_id := NULL;
        v_tenant_text := CASE WHEN jsonb_typeof(c) = 'object' THEN c ->> 'tenant' END;
        v_account_text := CASE WHEN jsonb_typeof(c) = 'object' THEN c ->> 'account' END;
        IF v_tenant_text IS NOT NULL AND v_tenant_text !~ '^[0-9]{1,18}$' THEN
            v_refusal := jsonb_build_object(
                'code', 'invalid_order', 'message', 'tenant must be a positive integer');
        ELSE
            v_tenant_id := coalesce(v_tenant_text::bigint, v_session_tenant_id);
            IF v_tenant_id IS DISTINCT FROM coalesce(v_session_tenant_id, v_tenant_id) THEN
                v_refusal := jsonb_build_object(
                    'code', 'unknown_account',
                    'message', 'unknown account ' || coalesce(left(v_account_text, 40), 'nothing'));
            ELSIF v_tenant_id IS NULL AND NOT v_operator THEN
                v_refusal := jsonb_build_object(
                    'code', 'tenant_required',
                    'message', 'this command acts for no tenant (set app.tenant_id)');
            ELSIF v_tenant_id IS NOT NULL AND NOT EXISTS (
                SELECT FROM ledger.customer
                 WHERE v_account_text ~ '^[0-9]{1,18}$'
                   AND id = v_account_text::bigint AND tenant_id = v_tenant_id
            ) THEN
                v_refusal := jsonb_build_object(
                    'code', 'unknown_account',
                    'message', 'unknown account ' || coalesce(left(v_account_text, 40), 'nothing'));
            END IF;
        END IF;
        v_refusals := v_refusals || v_refusal;
        v_tenants := v_tenants || v_tenant_id;
        v_accounts := v_accounts
            || CASE WHEN v_refusal IS NULL AND v_account_text ~ '^[0-9]{1,18}$'
                    THEN v_account_text::bigint END;
        IF v_refusal IS NULL THEN
            v_accepted := v_accepted || c;
        END IF;
    END LOOP;
    IF cardinality(v_accepted) > 0 THEN
        v_results := trading.execute_commands(p_symbol, to_jsonb(v_accepted));
    ELSIF NOT EXISTS (SELECT FROM trading.instrument WHERE symbol = p_symbol) THEN
        RAISE EXCEPTION 'unknown instrument %', p_symbol USING ERRCODE = 'EY001';
    END IF;
    FOR i IN 1 .. cardinality(v_refusals) LOOP
        IF v_refusals[i] IS NULL THEN
            v_merged := v_merged
                || trading.tenant_view(v_results -> v_next, v_tenants[i], v_accounts[i]);
            v_next := v_next + 1;
        ELSE
            v_merged := v_merged || v_refusals[i];
        END IF;
    END LOOP;
    RETURN to_jsonb(v_merged);
END
$$;
-- trading.tenant_view of sql/trading/execute.v2.sql, looking the accounts up by id (it went
-- through all of the tenant's customers). Called once per result, under trading.execute's
-- search_path: its own setting only cost a configuration save and restore per call.
-- p_account is the command's own account, already known to be the tenant's.
CREATE OR REPLACE FUNCTION trading.tenant_view(p_result jsonb, p_tenant_id bigint, p_account bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_mine bigint[];
BEGIN
    IF p_tenant_id IS NULL OR p_result ? 'code' THEN
        RETURN p_result;
    END IF;
    -- Most results (an order that rests, a cancel) touch only the command's own account: there
    -- is nothing to hide, and no need to look accounts up.
    -- The same test for the usual result, an order of the command's account and no trade, in
    -- one expression and no query. (A NULL account, as the executions stream passes, fails it.)
    IF jsonb_array_length(p_result -> 'trades') = 0
       AND (jsonb_array_length(p_result -> 'orders') = 0
            OR (jsonb_array_length(p_result -> 'orders') = 1
                AND (p_result #>> '{orders,0,account}')::bigint = p_account)) THEN
        RETURN p_result;
    END IF;
    IF jsonb_array_length(p_result -> 'trades') = 0
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(p_result -> 'orders') AS o
                        WHERE (o ->> 'account')::bigint IS DISTINCT FROM p_account) THEN
        RETURN p_result;
    END IF;
    -- By id, one look-up per account: a tenant may have millions of customers.
    SELECT coalesce(array_agg(x.id), '{}') INTO v_mine
      FROM (SELECT (o ->> 'account')::bigint AS id
              FROM jsonb_array_elements(p_result -> 'orders') AS o
            UNION
            SELECT (t ->> side)::bigint
              FROM jsonb_array_elements(p_result -> 'trades') AS t,
                   unnest(ARRAY['maker_account', 'taker_account']) AS side) x
     WHERE (SELECT c.tenant_id FROM ledger.customer c WHERE c.id = x.id) = p_tenant_id;
    RETURN p_result || jsonb_build_object(
        'orders', (SELECT coalesce(jsonb_agg(o ORDER BY n), '[]')
                     FROM jsonb_array_elements(p_result -> 'orders') WITH ORDINALITY AS x(o, n)
                    WHERE (o ->> 'account')::bigint = ANY (v_mine)),
        'trades', (SELECT coalesce(jsonb_agg(
                              CASE WHEN (t ->> 'maker_account')::bigint = ANY (v_mine) THEN t
                                   ELSE t || '{"maker_account": null, "maker_client_order_id": null,
                                               "maker_fee": null}'::jsonb END
                              || CASE WHEN (t ->> 'taker_account')::bigint = ANY (v_mine)
                                      THEN '{}'::jsonb
                                      ELSE '{"taker_account": null, "taker_client_order_id": null,
                                             "taker_fee": null}'::jsonb END
                              ORDER BY n), '[]')
                     FROM jsonb_array_elements(p_result -> 'trades') WITH ORDINALITY AS x(t, n)));
END
$$;
