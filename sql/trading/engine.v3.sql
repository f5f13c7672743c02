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
-- Returns the ids of every order it changed and of the trades it made. A fill-or-kill order that
-- cannot fill completely raises EZ001 for the caller to undo everything.
CREATE OR REPLACE FUNCTION trading.take(
    INOUT p trading.postings, p_net_account_ids bigint[], p_net_amounts numeric[],
    i trading.instrument, t trading.orders, p_seq bigint, p_stored boolean,
    OUT changed bigint[], OUT trade_ids bigint[]
)
LANGUAGE plpgsql AS $$
DECLARE
    m trading.orders;
    v_changed bigint[] := ARRAY[t.id];
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
        t.filled_quantity := t.filled_quantity + v_quantity;
        v_cost := v_cost + v_notional;
        v_maker_ids := v_maker_ids || m.id;
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
