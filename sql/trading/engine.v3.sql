-- The matching engine, version 3 (migration 0008): the rules and writes of version 2, less work
-- per fill.
--
-- - trading.fee is inlined again. Version 2 meant it to be, but its '1e-' || p_scale calls a
--   STABLE operator (text || anynonarray), and PostgreSQL never inlines an IMMUTABLE SQL function
--   whose body is not immutable. Run as a function, a SQL function's body is parsed and planned
--   again in every subtransaction, that is for every command of a batch.
-- - trading.take settles each fill itself: the best resting order, the fill's legs and fees and
--   the maker's accounts without the layers of function calls (trading.best_opposite,
--   trading.crosses, trading.settle, trading.fill_accounts, trading.add_journal) that version 2
--   went through for every fill.

DROP FUNCTION trading.settle(
    trading.postings, trading.instrument, text, bigint[], bigint[], bigint[], numeric, numeric,
    text);
DROP FUNCTION trading.fill_accounts(trading.instrument, trading.orders, boolean);
DROP FUNCTION trading.take(
    trading.postings, bigint[], numeric[], trading.instrument, trading.orders, bigint, boolean);

CREATE OR REPLACE FUNCTION trading.fee(p_received numeric, p_rate numeric, p_scale smallint)
RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN trunc(p_received * p_rate, p_scale) = p_received * p_rate
                THEN trunc(p_received * p_rate, p_scale)
                ELSE trunc(p_received * p_rate, p_scale) + ('1e-' || p_scale::text)::numeric END;
$$;

-- Matches a taker against the book and writes its final state: t is a new order not yet stored
-- (p_stored false) or a stored order that lost its priority. The taker holds nothing while it
-- takes (its fills pay from available, which the caller checked covers the whole order, or, for
-- a market buy, which is checked here once the cost is known); what is left to rest is held at
-- the end.
-- Returns every order it changed as it now is (the taker last) and the trades it made, in the
-- result's JSON, from what it wrote rather than read back. A fill-or-kill order that cannot fill
-- completely raises EZ001 for the caller to undo everything.
CREATE FUNCTION trading.take(
    INOUT p trading.postings, p_net_account_ids bigint[], p_net_amounts numeric[],
    i trading.instrument, t trading.orders, p_seq bigint, p_stored boolean,
    OUT orders jsonb[], OUT trades jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    m trading.orders;
    v_orders jsonb[] := '{}';  -- the resting orders it changed, as they now are
    v_taker_accounts bigint[];  -- (quote, base), both available
    v_maker_accounts bigint[];  -- (quote, base): what the maker pays from its hold
    v_fee_accounts bigint[];  -- (quote, base)
    v_buyer bigint[];
    v_seller bigint[];
    v_remaining numeric;
    v_maker_remaining numeric;
    v_quantity numeric;
    v_notional numeric;  -- the fill's amounts in the ledger, at the assets' scales
    v_base numeric;
    v_buyer_fee numeric;
    v_seller_fee numeric;
    v_journal_id bigint;
    v_taker_canceled boolean := false;
    v_match integer := 0;
    v_cost numeric := 0;
    v_maker_ids bigint[] := '{}';
    v_maker_customers bigint[] := '{}';
    v_maker_client_order_ids text[] := '{}';
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
        IF t.side = 'buy' THEN
            SELECT * INTO m FROM trading.orders
             WHERE instrument_id = i.id AND side = 'sell' AND status IN ('new', 'partially_filled')
             ORDER BY price, priority LIMIT 1;
        ELSE
            SELECT * INTO m FROM trading.orders
             WHERE instrument_id = i.id AND side = 'buy' AND status IN ('new', 'partially_filled')
             ORDER BY price DESC, priority LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND
               OR (t.type = 'limit'
                   AND CASE t.side WHEN 'buy' THEN m.price > t.price ELSE m.price < t.price END);
        v_maker_remaining := m.quantity - m.filled_quantity;
        IF m.customer_id = t.customer_id AND t.self_trade_prevention = 'cancel_newest' THEN
            v_taker_canceled := true;
            EXIT;
        END IF;
        IF m.customer_id = t.customer_id THEN
            CASE t.self_trade_prevention
                WHEN 'cancel_oldest' THEN
                    p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                    m.status := 'canceled';
                    m.reason := 'self_trade_prevention';
                WHEN 'cancel_both' THEN
                    p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                    m.status := 'canceled';
                    m.reason := 'self_trade_prevention';
                    v_taker_canceled := true;
                ELSE  -- decrement both by the smaller remaining; an order left with nothing is canceled
                    v_quantity := least(v_remaining, v_maker_remaining);
                    IF v_maker_remaining = v_quantity THEN
                        p := trading.cancel_open(p, i, m, 'self_trade_prevention');
                        m.status := 'canceled';
                        m.reason := 'self_trade_prevention';
                    ELSE
                        UPDATE trading.orders SET quantity = quantity - v_quantity, updated_at = now()
                         WHERE id = m.id;
                        p := trading.release(p, i, m, v_quantity);
                        m.quantity := m.quantity - v_quantity;
                    END IF;
                    IF v_remaining = v_quantity THEN
                        v_taker_canceled := true;
                    ELSE
                        t.quantity := t.quantity - v_quantity;
                    END IF;
            END CASE;
            m.updated_at := now();
            v_orders := v_orders || trading.order_json(m);
            EXIT WHEN v_taker_canceled;
            CONTINUE;
        END IF;

        -- A fill of v_quantity at the maker's price, settled in one journal: the maker pays from
        -- its hold, the taker from available; each side's fee comes out of what it receives.
        v_quantity := least(v_remaining, v_maker_remaining);
        v_match := v_match + 1;
        IF v_match = 1 THEN
            v_taker_accounts := trading.customer_accounts(
                t.customer_id, ARRAY[i.quote, i.base], ARRAY['available', 'available']);
            SELECT array_agg(a.id ORDER BY a.asset = i.base) INTO v_fee_accounts
              FROM ledger.account a
             WHERE a.customer_id IS NULL AND a.asset IN (i.quote, i.base)
               AND a.bucket = 'fee' AND a.label = i.symbol;
        END IF;
        v_maker_accounts := trading.customer_accounts(
            m.customer_id, ARRAY[i.quote, i.base],
            CASE m.side WHEN 'buy' THEN ARRAY['held', 'available']
                        ELSE ARRAY['available', 'held'] END);
        v_notional := round(m.price * v_quantity, i.quote_scale);
        v_base := round(v_quantity, i.base_scale);
        IF t.side = 'buy' THEN
            v_buyer := v_taker_accounts;
            v_seller := v_maker_accounts;
            v_buyer_fee := trading.fee(v_base, i.taker_fee_rate, i.base_scale);
            v_seller_fee := trading.fee(v_notional, i.maker_fee_rate, i.quote_scale);
            v_maker_fees := v_maker_fees || v_seller_fee;
            v_taker_fees := v_taker_fees || v_buyer_fee;
        ELSE
            v_buyer := v_maker_accounts;
            v_seller := v_taker_accounts;
            v_buyer_fee := trading.fee(v_base, i.maker_fee_rate, i.base_scale);
            v_seller_fee := trading.fee(v_notional, i.taker_fee_rate, i.quote_scale);
            v_maker_fees := v_maker_fees || v_buyer_fee;
            v_taker_fees := v_taker_fees || v_seller_fee;
        END IF;
        v_journal_id := nextval('ledger.journal_id_seq'::regclass);
        p.journals := p.journals || v_journal_id;
        p.journal_kinds := p.journal_kinds || 'trade'::text;
        p.journal_references := p.journal_references
            || ('trade/' || i.symbol || '/' || p_seq || '/' || v_match);
        -- In account order, as every journal's legs; legs of zero (a fee of zero, or one that took
        -- all a side received) are left out.
        SELECT p.journal_ids || array_agg(v_journal_id ORDER BY l.account_id),
               p.account_ids || array_agg(l.account_id ORDER BY l.account_id),
               p.assets || array_agg(l.asset ORDER BY l.account_id),
               p.amounts || array_agg(l.amount ORDER BY l.account_id)
          INTO p.journal_ids, p.account_ids, p.assets, p.amounts
          FROM unnest(ARRAY[v_buyer[1], v_seller[1], v_fee_accounts[1],
                            v_seller[2], v_buyer[2], v_fee_accounts[2]],
                      ARRAY[i.quote, i.quote, i.quote, i.base, i.base, i.base],
                      ARRAY[-v_notional, v_notional - v_seller_fee, v_seller_fee,
                            -v_base, v_base - v_buyer_fee, v_buyer_fee])
               AS l(account_id, asset, amount)
         WHERE l.amount <> 0;
        UPDATE trading.orders
           SET filled_quantity = filled_quantity + v_quantity,
               status = CASE WHEN v_quantity = v_maker_remaining THEN 'filled'
                             ELSE 'partially_filled' END,
               updated_at = now()
         WHERE id = m.id;
        m.filled_quantity := m.filled_quantity + v_quantity;
        m.status := CASE WHEN v_quantity = v_maker_remaining THEN 'filled' ELSE 'partially_filled' END;
        m.updated_at := now();
        v_orders := v_orders || trading.order_json(m);
        t.filled_quantity := t.filled_quantity + v_quantity;
        v_cost := v_cost + v_notional;
        v_maker_ids := v_maker_ids || m.id;
        v_maker_customers := v_maker_customers || m.customer_id;
        v_maker_client_order_ids := v_maker_client_order_ids || m.client_order_id;
        v_prices := v_prices || m.price;
        v_quantities := v_quantities || v_quantity;
        v_journal_ids := v_journal_ids || v_journal_id;
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

    t.updated_at := now();
    IF p_stored THEN
        UPDATE trading.orders
           SET quantity = t.quantity, filled_quantity = t.filled_quantity, status = t.status,
               reason = t.reason, price = t.price, priority = t.priority, updated_at = t.updated_at
         WHERE id = t.id;
    ELSE
        INSERT INTO trading.orders
        OVERRIDING SYSTEM VALUE
        SELECT (t).*;
    END IF;
    orders := v_orders || trading.order_json(t);
    trades := '[]';
    IF v_match = 0 THEN
        RETURN;
    END IF;
    -- The trades go in last: they reference the taker's row, which a new order only now has.
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
        RETURNING id, seq, match_number, price, quantity, taker_side, maker_fee, taker_fee)
    SELECT jsonb_agg(jsonb_build_object(
               'id', x.id, 'seq', x.seq, 'price', x.price::text, 'quantity', x.quantity::text,
               'taker_side', x.taker_side,
               'maker_account', v_maker_customers[x.match_number],
               'maker_client_order_id', v_maker_client_order_ids[x.match_number],
               'taker_account', t.customer_id, 'taker_client_order_id', t.client_order_id,
               'maker_fee', x.maker_fee::text, 'taker_fee', x.taker_fee::text)
               ORDER BY x.match_number)
      INTO trades
      FROM inserted x;
END
$$;

-- A command's result from the orders it changed (the command's own order among them) and its
-- trades, as trading.finish renders them: the orders by account and client_order_id.
CREATE FUNCTION trading.command_result(
    p_seq bigint, p_order jsonb, p_orders jsonb[], p_trades jsonb
) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF cardinality(p_orders) = 1 THEN
        RETURN jsonb_build_object(
            'seq', p_seq, 'order', p_order, 'orders', to_jsonb(p_orders), 'trades', p_trades);
    END IF;
    RETURN jsonb_build_object(
        'seq', p_seq, 'order', p_order,
        'orders', (SELECT jsonb_agg(o ORDER BY (o ->> 'account')::bigint,
                                             o ->> 'client_order_id' COLLATE "C")
                     FROM unnest(p_orders) AS o),
        'trades', p_trades);
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
        result := trading.command_result(
            p_seq, trading.order_json(o), ARRAY[trading.order_json(o)], '[]');
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
            SELECT p, ARRAY[trading.order_json(o)] AS orders, '[]'::jsonb AS trades INTO v_taken;
        END;
    END IF;
    p := v_taken.p;
    result := trading.command_result(
        p_seq, v_taken.orders[cardinality(v_taken.orders)], v_taken.orders, v_taken.trades);
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
    result := trading.command_result(
        p_seq, v_taken.orders[cardinality(v_taken.orders)], v_taken.orders, v_taken.trades);
END
$$;
