-- Undoes sql/trading/engine.v3.sql: engine version 2's functions.

DROP FUNCTION trading.command_result(bigint, jsonb, jsonb[], jsonb);
DROP FUNCTION trading.take(
    trading.postings, bigint[], numeric[], trading.instrument, trading.orders, bigint, boolean);

CREATE OR REPLACE FUNCTION trading.fee(p_received numeric, p_rate numeric, p_scale smallint)
RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN trunc(p_received * p_rate, p_scale) = p_received * p_rate
                THEN trunc(p_received * p_rate, p_scale)
                ELSE trunc(p_received * p_rate, p_scale) + ('1e-' || p_scale)::numeric END;
$$;

CREATE FUNCTION trading.take(
    INOUT p trading.postings, p_net_account_ids bigint[], p_net_amounts numeric[],
    i trading.instrument, t trading.orders, p_seq bigint, p_stored boolean,
    OUT changed bigint[], OUT trade_ids bigint[]
)
LANGUAGE plpgsql AS $$
DECLARE
    m trading.orders;
    v_changed bigint[] := ARRAY[t.id];
    v_taker_accounts bigint[];
    v_fee_accounts bigint[];
    v_remaining numeric;
    v_maker_remaining numeric;
    v_quantity numeric;
    v_taker_canceled boolean := false;
    v_match integer := 0;
    v_fill record;
    v_cost numeric := 0;
    v_maker_ids bigint[] := '{}';
    v_prices numeric[] := '{}';
    v_quantities numeric[] := '{}';
    v_maker_fees numeric[] := '{}';
    v_taker_fees numeric[] := '{}';
    v_journal_ids bigint[] := '{}';
BEGIN
    -- Each pass fills or cancels a resting order, or ends the walk: at most one pass per order.
    LOOP
        v_remaining := t.quantity - t.filled_quantity;
        EXIT WHEN v_remaining = 0;
        m := trading.best_opposite(i.id, t.side);
        EXIT WHEN NOT trading.crosses(t, m);
        v_maker_remaining := m.quantity - m.filled_quantity;
        IF m.customer_id = t.customer_id AND t.self_trade_prevention = 'cancel_newest' THEN
            v_taker_canceled := true;
            EXIT;
        END IF;
        v_changed := v_changed || m.id;
        IF m.customer_id = t.customer_id THEN
            CASE t.self_trade_prevention
                WHEN 'cancel_oldest' THEN
                    p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                WHEN 'cancel_both' THEN
                    p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                    v_taker_canceled := true;
                    EXIT;
                ELSE  -- decrement both by the smaller remaining; an order left with nothing is canceled
                    v_quantity := least(v_remaining, v_maker_remaining);
                    IF v_maker_remaining = v_quantity THEN
                        p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                    ELSE
                        UPDATE trading.orders SET quantity = quantity - v_quantity, updated_at = now()
                         WHERE id = m.id;
                        p := trading.release(p, i, m, v_quantity);
                    END IF;
                    IF v_remaining = v_quantity THEN
                        v_taker_canceled := true;
                        EXIT;
                    END IF;
                    t.quantity := t.quantity - v_quantity;
            END CASE;
        ELSE
            v_quantity := least(v_remaining, v_maker_remaining);
            v_match := v_match + 1;
            IF v_match = 1 THEN
                v_taker_accounts := trading.fill_accounts(i, t, false);
                SELECT array_agg(a.id ORDER BY a.asset = i.base) INTO v_fee_accounts
                  FROM ledger.account a
                 WHERE a.customer_id IS NULL AND a.asset IN (i.quote, i.base)
                   AND a.bucket = 'fee' AND a.label = i.symbol;
            END IF;
            SELECT * INTO v_fill
              FROM trading.settle(p, i, t.side, v_taker_accounts, trading.fill_accounts(i, m, true),
                                  v_fee_accounts, m.price, v_quantity,
                                  'trade/' || i.symbol || '/' || p_seq || '/' || v_match);
            p := v_fill.postings;
            UPDATE trading.orders
               SET filled_quantity = filled_quantity + v_quantity,
                   status = CASE WHEN v_quantity = v_maker_remaining THEN 'filled'
                                 ELSE 'partially_filled' END,
                   updated_at = now()
             WHERE id = m.id;
            t.filled_quantity := t.filled_quantity + v_quantity;
            v_cost := v_cost + round(m.price * v_quantity, i.quote_scale);
            v_maker_ids := v_maker_ids || m.id;
            v_prices := v_prices || m.price;
            v_quantities := v_quantities || v_quantity;
            v_maker_fees := v_maker_fees || v_fill.maker_fee;
            v_taker_fees := v_taker_fees || v_fill.taker_fee;
            v_journal_ids := v_journal_ids || p.journals[cardinality(p.journals)];
        END IF;
    END LOOP;

    -- A market buy holds nothing up front: it pays what its fills cost, from available. (No leg
    -- of this command adds to the buyer's quote: its fee and a self-trade release are in base.)
    -- Checked before fill-or-kill, as version 1 found it while it walked.
    IF t.type = 'market' AND t.side = 'buy' AND v_cost > 0 THEN
        PERFORM trading.check_available(p_net_account_ids, p_net_amounts, t.customer_id, i.quote,
                                        v_cost);
    END IF;
    v_remaining := t.quantity - t.filled_quantity;
    IF t.time_in_force = 'FOK'
       AND NOT (v_remaining = 0 AND NOT v_taker_canceled AND t.quantity = t.requested_quantity) THEN
        RAISE EXCEPTION 'fill-or-kill order cannot fill completely' USING ERRCODE = 'EZ001';
    END IF;
    IF v_taker_canceled THEN
        t.status := 'canceled';
        t.reason := 'self_trade_prevention';
    ELSIF v_remaining = 0 THEN
        t.status := 'filled';
        t.reason := NULL;
    ELSIF t.time_in_force <> 'GTC' THEN
        t.status := 'expired';
        t.reason := 'unfilled_remainder';
    ELSE
        t.status := CASE WHEN t.filled_quantity = 0 THEN 'new' ELSE 'partially_filled' END;
        t.reason := NULL;
    END IF;
    IF t.status IN ('new', 'partially_filled') THEN
        p := trading.move_hold(p, 'hold', t.id, t.customer_id, trading.reserved_asset(i, t.side),
                               trading.reservation(i, t, v_remaining));
    END IF;

    IF p_stored THEN
        UPDATE trading.orders
           SET quantity = t.quantity, filled_quantity = t.filled_quantity, status = t.status,
               reason = t.reason, price = t.price, priority = t.priority, updated_at = now()
         WHERE id = t.id;
    ELSE
        INSERT INTO trading.orders
        OVERRIDING SYSTEM VALUE
        SELECT (t).*;
    END IF;
    -- The trades go in last: they reference the taker's row, which a new order only now has.
    trade_ids := '{}';
    changed := v_changed;
    IF v_match = 0 THEN
        RETURN;
    END IF;
    WITH inserted AS (
        INSERT INTO trading.trade (
            instrument_id, seq, match_number, maker_order_id, taker_order_id, taker_side,
            price, quantity, maker_fee, taker_fee, journal_id)
        SELECT i.id, p_seq, f.match_number, f.maker_order_id, t.id, t.side,
               f.price, f.quantity, f.maker_fee, f.taker_fee, f.journal_id
          FROM unnest(v_maker_ids, v_prices, v_quantities, v_maker_fees, v_taker_fees,
                      v_journal_ids)
               WITH ORDINALITY
               AS f(maker_order_id, price, quantity, maker_fee, taker_fee, journal_id,
                    match_number)
        RETURNING id)
    SELECT array_agg(id) INTO trade_ids FROM inserted;
END
$$;

CREATE FUNCTION trading.fill_accounts(i trading.instrument, o trading.orders, p_resting boolean)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
BEGIN
    RETURN trading.customer_accounts(
        o.customer_id, ARRAY[i.quote, i.base],
        CASE WHEN NOT p_resting THEN ARRAY['available', 'available']
             WHEN o.side = 'buy' THEN ARRAY['held', 'available']
             ELSE ARRAY['available', 'held'] END);
END
$$;

CREATE FUNCTION trading.settle(
    INOUT postings trading.postings,
    i trading.instrument, p_taker_side text, p_taker bigint[], p_maker bigint[], p_fees bigint[],
    p numeric, q numeric, p_reference text,
    OUT maker_fee numeric, OUT taker_fee numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    v_notional numeric := round(p * q, i.quote_scale);
    v_quantity numeric := round(q, i.base_scale);
    v_buyer bigint[] := CASE p_taker_side WHEN 'buy' THEN p_taker ELSE p_maker END;
    v_seller bigint[] := CASE p_taker_side WHEN 'buy' THEN p_maker ELSE p_taker END;
    v_buyer_fee numeric := trading.fee(
        v_quantity, CASE p_taker_side WHEN 'buy' THEN i.taker_fee_rate ELSE i.maker_fee_rate END,
        i.base_scale);
    v_seller_fee numeric := trading.fee(
        v_notional, CASE p_taker_side WHEN 'buy' THEN i.maker_fee_rate ELSE i.taker_fee_rate END,
        i.quote_scale);
BEGIN
    maker_fee := CASE p_taker_side WHEN 'buy' THEN v_seller_fee ELSE v_buyer_fee END;
    taker_fee := CASE p_taker_side WHEN 'buy' THEN v_buyer_fee ELSE v_seller_fee END;
    postings := trading.add_journal(
        postings, 'trade', p_reference,
        ARRAY[v_buyer[1], v_seller[1], p_fees[1], v_seller[2], v_buyer[2], p_fees[2]],
        ARRAY[i.quote, i.quote, i.quote, i.base, i.base, i.base],
        ARRAY[-v_notional, v_notional - v_seller_fee, v_seller_fee,
              -v_quantity, v_quantity - v_buyer_fee, v_buyer_fee]);
END
$$;

CREATE OR REPLACE FUNCTION trading.place(
    INOUT p trading.postings, p_net_account_ids bigint[], p_net_amounts numeric[],
    i trading.instrument, p_seq bigint, c jsonb, OUT result jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    o trading.orders;
    v_existing trading.orders;
    v_taken record;
    v_customer_id bigint := trading.bigint_field(c, 'account');
    v_client_order_id text := c ->> 'client_order_id';
    v_side text := c ->> 'side';
    v_type text := c ->> 'type';
    v_price numeric := trading.decimal_field(c, 'price');
    v_quantity numeric := trading.decimal_field(c, 'quantity');
    v_time_in_force text := coalesce(
        c ->> 'time_in_force', CASE WHEN c ->> 'type' = 'market' THEN 'IOC' ELSE 'GTC' END);
    v_post_only boolean := coalesce(c -> 'post_only' = 'true'::jsonb, false);
    v_self_trade_prevention text := coalesce(c ->> 'self_trade_prevention', 'cancel_newest');
    v_reserved numeric;
BEGIN
    IF v_client_order_id IS NULL OR v_client_order_id !~ '^[!-~]{1,64}$' THEN
        RAISE EXCEPTION 'client_order_id must be 1 to 64 printable ASCII characters'
            USING ERRCODE = 'EY010';
    END IF;
    SELECT * INTO v_existing FROM trading.orders
     WHERE customer_id = v_customer_id AND client_order_id = v_client_order_id;
    IF FOUND THEN
        IF (v_existing.instrument_id, v_existing.side, v_existing.type, v_existing.requested_quantity,
            v_existing.time_in_force, v_existing.post_only, v_existing.self_trade_prevention)
           IS NOT DISTINCT FROM
           (i.id, v_side, v_type, v_quantity, v_time_in_force, v_post_only, v_self_trade_prevention)
           AND v_existing.requested_price IS NOT DISTINCT FROM v_price THEN
            result := trading.unchanged(v_existing, true);
            RETURN;
        END IF;
        RAISE EXCEPTION 'account % already has an order % with client_order_id % and other parameters',
            v_customer_id, v_existing.id, v_client_order_id
            USING ERRCODE = 'EY007';
    END IF;
    IF NOT EXISTS (SELECT FROM ledger.customer WHERE id = v_customer_id) THEN
        RAISE EXCEPTION 'unknown account %', v_customer_id USING ERRCODE = 'EY016';
    END IF;
    IF i.status = 'halted' THEN
        RAISE EXCEPTION 'instrument % is halted: only cancels are accepted', i.symbol
            USING ERRCODE = 'EY002';
    END IF;
    IF v_side IS NULL OR v_side NOT IN ('buy', 'sell')
       OR v_type IS NULL OR v_type NOT IN ('limit', 'market')
       OR v_time_in_force NOT IN ('GTC', 'IOC', 'FOK')
       OR v_self_trade_prevention NOT IN ('cancel_newest', 'cancel_oldest', 'cancel_both', 'decrement')
       OR (v_type = 'limit') <> (v_price IS NOT NULL)
       OR (v_type = 'market' AND (v_time_in_force = 'GTC' OR v_post_only))
       OR (v_post_only AND v_time_in_force <> 'GTC')
       OR jsonb_typeof(c -> 'post_only') NOT IN ('boolean', 'null') THEN
        RAISE EXCEPTION 'invalid order: side buy|sell, type limit (with a price) or market (IOC or '
            'FOK, without a price), time_in_force GTC|IOC|FOK, post_only only for GTC limit orders, '
            'self_trade_prevention cancel_newest|cancel_oldest|cancel_both|decrement'
            USING ERRCODE = 'EY010';
    END IF;
    PERFORM trading.check_price_quantity(i, v_type, v_price, v_quantity);

    o := ROW(
        nextval(pg_get_serial_sequence('trading.orders', 'id')), i.id, v_customer_id,
        v_client_order_id, v_side, v_type, v_price, v_quantity, 0, 'new', NULL, v_time_in_force,
        v_post_only, v_self_trade_prevention, v_price, v_quantity, p_seq, now(), now());
    v_reserved := trading.reservation(i, o, v_quantity);
    IF v_reserved > 0 THEN
        PERFORM trading.check_available(p_net_account_ids, p_net_amounts, v_customer_id,
                                        trading.reserved_asset(i, v_side), v_reserved);
    END IF;

    IF v_post_only AND trading.crosses(o, trading.best_opposite(i.id, v_side)) THEN
        o.status := 'rejected';
        o.reason := 'post_only_would_take';
        INSERT INTO trading.orders OVERRIDING SYSTEM VALUE SELECT (o).*;
        result := trading.finish(i, p_seq, c, o.id, ARRAY[o.id]);
        RETURN;
    END IF;

    IF v_time_in_force <> 'FOK' THEN
        SELECT * INTO v_taken
          FROM trading.take(p, p_net_account_ids, p_net_amounts, i, o, p_seq, false);
    ELSE
        BEGIN
            SELECT * INTO v_taken
              FROM trading.take(p, p_net_account_ids, p_net_amounts, i, o, p_seq, false);
        EXCEPTION WHEN SQLSTATE 'EZ001' THEN
            -- Fill-or-kill: everything the walk did is undone; the order is recorded as expired.
            o.status := 'expired';
            o.reason := 'fok_not_filled';
            INSERT INTO trading.orders OVERRIDING SYSTEM VALUE SELECT (o).*;
            SELECT p, ARRAY[o.id] AS changed, '{}'::bigint[] AS trade_ids INTO v_taken;
        END;
    END IF;
    p := v_taken.p;
    result := trading.finish(i, p_seq, c, o.id, v_taken.changed, v_taken.trade_ids);
END
$$;

CREATE OR REPLACE FUNCTION trading.amend(
    INOUT p trading.postings, p_net_account_ids bigint[], p_net_amounts numeric[],
    i trading.instrument, p_seq bigint, c jsonb, OUT result jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    o trading.orders := trading.named_order(i, c);
    v_price numeric := coalesce(trading.decimal_field(c, 'price'), o.price);
    v_quantity numeric := coalesce(trading.decimal_field(c, 'quantity'), o.quantity);
    v_reserved_before numeric;
    v_reserved_after numeric;
    v_taken record;
    v_asset text := trading.reserved_asset(i, o.side);
BEGIN
    IF o.status NOT IN ('new', 'partially_filled') THEN
        RAISE EXCEPTION 'order % is %, not open', o.id, o.status USING ERRCODE = 'EY009';
    END IF;
    IF i.status = 'halted' THEN
        RAISE EXCEPTION 'instrument % is halted: only cancels are accepted', i.symbol
            USING ERRCODE = 'EY002';
    END IF;
    PERFORM trading.check_price_quantity(i, o.type, v_price, v_quantity, o.filled_quantity);

    IF v_price = o.price AND v_quantity = o.quantity THEN
        result := trading.unchanged(o, false);
        RETURN;
    END IF;
    IF v_price = o.price AND v_quantity < o.quantity THEN
        -- Less of the same keeps its place in the queue.
        UPDATE trading.orders SET quantity = v_quantity, updated_at = now() WHERE id = o.id;
        p := trading.release(p, i, o, o.quantity - v_quantity);
        result := trading.finish(i, p_seq, c, o.id, ARRAY[o.id]);
        RETURN;
    END IF;

    v_reserved_before := trading.reservation(i, o, o.quantity - o.filled_quantity);
    o.price := v_price;
    o.quantity := v_quantity;
    o.priority := p_seq;
    IF o.post_only AND trading.crosses(o, trading.best_opposite(i.id, o.side)) THEN
        RAISE EXCEPTION 'post-only order % would take liquidity at %', o.id, v_price
            USING ERRCODE = 'EY015';
    END IF;
    v_reserved_after := trading.reservation(i, o, o.quantity - o.filled_quantity);
    IF v_reserved_after > v_reserved_before THEN
        PERFORM trading.check_available(p_net_account_ids, p_net_amounts, o.customer_id, v_asset,
                                        v_reserved_after - v_reserved_before);
    END IF;
    -- Like a new taker, the order holds nothing while it takes: its old hold goes back first.
    p := trading.move_hold(p, 'release', o.id, o.customer_id, v_asset, v_reserved_before);
    SELECT * INTO v_taken FROM trading.take(p, p_net_account_ids, p_net_amounts, i, o, p_seq, true);
    p := v_taken.p;
    result := trading.finish(i, p_seq, c, o.id, v_taken.changed, v_taken.trade_ids);
END
$$;
