-- The matching engine, version 2 (migration 0007): the rules of version 1 (docs/trading.md),
-- fewer writes. Version 1 posted each journal as it went, one INSERT of entries per journal, and
-- wrote one event per command. Now a command collects its journals and ledger legs
-- (trading.postings) and the batch writes those of all its commands at its end: one INSERT of
-- journals, one ledger.insert_entries call, one INSERT of events. Trades are still written by
-- the command, since a replayed order reads its trades back (their journals follow at the end of
-- the batch: the foreign key is checked at commit), and orders too: matching reads the book.
--
-- Funds: a command that spends available funds checks them before it takes or holds anything,
-- against the account's balance read under its row lock (kept until commit, so nothing else can
-- spend them meanwhile) plus the net of what earlier commands of the batch posted to it. Makers
-- pay from their holds, which equal what their orders reserve. The ledger's statement trigger
-- checks every entry again when the batch writes them; should it refuse them, the batch runs
-- again writing each command's entries with the command (trading.execute_commands), so no
-- balance is ever booked below zero and only a command that overdraws is refused.

-- Journals and ledger legs not yet written. Journal k is journals[k], journal_kinds[k],
-- journal_references[k]; leg k is journal_ids[k], account_ids[k], assets[k], amounts[k], in
-- posting order (journal by journal, each journal's legs in account order, as version 1 posted
-- them). The last of journals is the one trading.add_journal opened last.
CREATE TYPE trading.postings AS (
    journals bigint[],
    journal_kinds text[],
    journal_references text[],
    journal_ids bigint[],
    account_ids bigint[],
    assets text[],
    amounts numeric[]
);

-- A trade is written by its command, its journal at the end of the batch.
ALTER TABLE trading.trade
    ALTER CONSTRAINT trade_journal_id_fkey DEFERRABLE INITIALLY DEFERRED;

DROP FUNCTION trading.amend(trading.instrument, bigint, jsonb);
DROP FUNCTION trading.cancel_all(trading.instrument, bigint, jsonb);
DROP FUNCTION trading.cancel(trading.instrument, bigint, jsonb);
DROP FUNCTION trading.place(trading.instrument, bigint, jsonb);
DROP FUNCTION trading.check_available(bigint, text, numeric);
DROP FUNCTION trading.take(trading.instrument, trading.orders, bigint, boolean);
DROP FUNCTION trading.settle(
    trading.instrument, text, bigint[], bigint[], bigint[], numeric, numeric, text);
DROP FUNCTION trading.cancel_open(trading.instrument, trading.orders, text);
DROP FUNCTION trading.release(trading.instrument, trading.orders, numeric);
DROP FUNCTION trading.move_hold(text, bigint, bigint, text, numeric);
DROP FUNCTION trading.post(text, text, bigint[], text[], numeric[]);

-- Opens a journal (its id now, its row at the end of the batch) and adds its legs to p; legs of
-- zero are left out.
CREATE FUNCTION trading.add_journal(
    p trading.postings, p_kind text, p_reference text,
    p_account_ids bigint[], p_assets text[], p_amounts numeric[]
) RETURNS trading.postings
LANGUAGE plpgsql AS $$
DECLARE
    v_journal_id bigint := nextval(pg_get_serial_sequence('ledger.journal', 'id'));
BEGIN
    p.journals := p.journals || v_journal_id;
    p.journal_kinds := p.journal_kinds || p_kind;
    p.journal_references := p.journal_references || p_reference;
    SELECT p.journal_ids || array_agg(v_journal_id ORDER BY l.account_id),
           p.account_ids || array_agg(l.account_id ORDER BY l.account_id),
           p.assets || array_agg(l.asset ORDER BY l.account_id),
           p.amounts || array_agg(l.amount ORDER BY l.account_id)
      INTO p.journal_ids, p.account_ids, p.assets, p.amounts
      FROM unnest(p_account_ids, p_assets, p_amounts) AS l(account_id, asset, amount)
     WHERE l.amount <> 0;
    RETURN p;
END
$$;

-- A customer's account ids for (asset, bucket) pairs, in the order asked, created on first use.
-- One index look-up per pair (version 1 joined, which a generic plan may do by scanning).
CREATE OR REPLACE FUNCTION trading.customer_accounts(
    p_customer_id bigint, p_assets text[], p_buckets text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(
               (SELECT a.id FROM ledger.account a
                 WHERE a.customer_id = p_customer_id AND a.asset = l.asset
                   AND a.bucket = l.bucket AND a.label = '')
               ORDER BY l.ord)
      INTO v_ids
      FROM unnest(p_assets, p_buckets) WITH ORDINALITY AS l(asset, bucket, ord);
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        SELECT array_agg(ledger.account_id(p_customer_id, l.asset, l.bucket) ORDER BY l.ord)
          INTO v_ids
          FROM unnest(p_assets, p_buckets) WITH ORDINALITY AS l(asset, bucket, ord);
    END IF;
    RETURN v_ids;
END
$$;

-- Holds (available → held) or releases (held → available) an amount of a customer's asset.
CREATE FUNCTION trading.move_hold(
    p trading.postings, p_kind text, p_order_id bigint, p_customer_id bigint, p_asset text,
    p_amount numeric
) RETURNS trading.postings
LANGUAGE plpgsql AS $$
DECLARE
    v_sign integer := CASE p_kind WHEN 'hold' THEN 1 ELSE -1 END;
BEGIN
    IF p_amount = 0 THEN
        RETURN p;
    END IF;
    RETURN trading.add_journal(
        p, p_kind, 'order/' || p_order_id,
        trading.customer_accounts(p_customer_id, ARRAY[p_asset, p_asset], ARRAY['available', 'held']),
        ARRAY[p_asset, p_asset],
        ARRAY[-v_sign * p_amount, v_sign * p_amount]);
END
$$;

CREATE FUNCTION trading.release(
    p trading.postings, i trading.instrument, o trading.orders, p_quantity numeric
) RETURNS trading.postings
LANGUAGE plpgsql AS $$
BEGIN
    RETURN trading.move_hold(p, 'release', o.id, o.customer_id, trading.reserved_asset(i, o.side),
                             trading.reservation(i, o, p_quantity));
END
$$;

-- Cancels a resting order and releases what it still reserves.
CREATE FUNCTION trading.cancel_open(
    p trading.postings, i trading.instrument, o trading.orders, p_reason text
) RETURNS trading.postings
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE trading.orders SET status = 'canceled', reason = p_reason, updated_at = now()
     WHERE id = o.id;
    RETURN trading.release(p, i, o, o.quantity - o.filled_quantity);
END
$$;

-- Fees are taken from what a side receives, rounded up to the asset's scale. One expression, so
-- that PostgreSQL inlines it (version 1's subquery made every call run as a function).
CREATE OR REPLACE FUNCTION trading.fee(p_received numeric, p_rate numeric, p_scale smallint)
RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN trunc(p_received * p_rate, p_scale) = p_received * p_rate
                THEN trunc(p_received * p_rate, p_scale)
                ELSE trunc(p_received * p_rate, p_scale) + ('1e-' || p_scale)::numeric END;
$$;

-- Settles one fill of q at the maker's price p in one journal, as version 1 did: the maker pays
-- from its hold, the taker from available; each side's fee comes out of what it receives and goes
-- to the instrument's fee accounts (quote, base).
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

-- Refuses an order that needs more of an asset than the customer has available: the balance
-- (locked until commit: nothing else may spend it before the batch writes its legs) plus the net
-- that earlier commands of the batch posted to the account (p_net_amounts[k] for account
-- p_net_account_ids[k]).
CREATE FUNCTION trading.check_available(
    p_net_account_ids bigint[], p_net_amounts numeric[], p_customer_id bigint, p_asset text,
    p_amount numeric
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_account_id bigint;
    v_available numeric;
BEGIN
    SELECT id, balance INTO v_account_id, v_available FROM ledger.account
     WHERE customer_id = p_customer_id AND asset = p_asset AND bucket = 'available' AND label = ''
       FOR UPDATE;
    v_available := coalesce(v_available, 0)
        + coalesce(p_net_amounts[array_position(p_net_account_ids, v_account_id)], 0);
    IF v_available < p_amount THEN
        RAISE EXCEPTION 'insufficient funds: account % has % % available, the order needs %',
            p_customer_id, v_available, p_asset, p_amount
            USING ERRCODE = 'EX002';
    END IF;
END
$$;

-- Matches a taker against the book and writes its final state: t is a new order not yet stored
-- (p_stored false) or a stored order that lost its priority. The taker holds nothing while it
-- takes (its fills pay from available, which the caller checked covers the whole order, or, for
-- a market buy, which is checked here once the cost is known); what is left to rest is held at
-- the end.
-- Returns the ids of every order it changed and of the trades it made. A fill-or-kill order that
-- cannot fill completely raises EZ001 for the caller to undo everything.
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

-- The command's result: the order, every order it changed and its trades. The batch writes the
-- command's event from it (trading.execute_commands).
CREATE OR REPLACE FUNCTION trading.finish(
    i trading.instrument, p_seq bigint, p_command jsonb, p_order_id bigint, p_changed bigint[],
    p_trade_ids bigint[] DEFAULT '{}'
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_orders jsonb;
    v_order jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(trading.order_json(o)
                              ORDER BY o.customer_id, o.client_order_id COLLATE "C"), '[]'),
           (array_agg(trading.order_json(o)) FILTER (WHERE o.id = p_order_id))[1]
      INTO v_orders, v_order
      FROM trading.orders o
     WHERE o.id = ANY (p_changed);
    RETURN jsonb_build_object(
        'seq', p_seq, 'order', v_order, 'orders', v_orders,
        'trades', trading.trades_json(p_trade_ids));
END
$$;

CREATE FUNCTION trading.place(
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

CREATE FUNCTION trading.cancel(
    INOUT p trading.postings, i trading.instrument, p_seq bigint, c jsonb, OUT result jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    o trading.orders := trading.named_order(i, c);
BEGIN
    IF o.status = 'canceled' THEN
        result := trading.unchanged(o, false);
        RETURN;
    END IF;
    IF o.status NOT IN ('new', 'partially_filled') THEN
        RAISE EXCEPTION 'order % is %, not open', o.id, o.status USING ERRCODE = 'EY009';
    END IF;
    p := trading.cancel_open(p, i, o, 'canceled_by_owner');
    result := trading.finish(i, p_seq, c, o.id, ARRAY[o.id]);
END
$$;

CREATE FUNCTION trading.cancel_all(
    INOUT p trading.postings, i trading.instrument, p_seq bigint, c jsonb, OUT result jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    o trading.orders;
    v_customer_id bigint := trading.bigint_field(c, 'account');
    v_changed bigint[] := '{}';
BEGIN
    FOR o IN
        SELECT * FROM trading.orders
         WHERE customer_id = v_customer_id AND instrument_id = i.id
           AND status IN ('new', 'partially_filled')
         ORDER BY priority
    LOOP
        p := trading.cancel_open(p, i, o, 'canceled_by_cancel_all');
        v_changed := v_changed || o.id;
    END LOOP;
    IF cardinality(v_changed) = 0 THEN
        result := jsonb_build_object('order', NULL, 'orders', '[]'::jsonb, 'trades', '[]'::jsonb);
        RETURN;
    END IF;
    result := trading.finish(i, p_seq, c, NULL, v_changed);
END
$$;

CREATE FUNCTION trading.amend(
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

-- Writes journals and their legs: the journal rows, then every leg in one ledger.insert_entries.
CREATE FUNCTION trading.write_postings(p trading.postings) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p.journals) > 0 THEN
        INSERT INTO ledger.journal (id, kind, reference)
        OVERRIDING SYSTEM VALUE
        SELECT j.id, j.kind, j.reference
          FROM unnest(p.journals, p.journal_kinds, p.journal_references) AS j(id, kind, reference)
         ORDER BY j.id;
    END IF;
    IF cardinality(p.account_ids) > 0 THEN
        PERFORM ledger.insert_entries(p.journal_ids, p.account_ids, p.assets, p.amounts);
    END IF;
END
$$;

-- The engine's entry point: applies a batch of commands to one instrument, in order, and returns
-- one result per command. Each command runs in its own subtransaction, so a refused command
-- leaves nothing behind and does not stop the others; its legs never reach the batch's. Callers
-- run it at READ COMMITTED, so that every statement after the lock sees the previous holder's
-- commit (app/trading/engine.py says why not SERIALIZABLE).
-- Every statement of the engine keeps one generic plan per session. The planner's default would
-- plan again, on every call, each statement that takes an array (`id = ANY (...)`), which cost
-- more than running it; every statement here looks rows up by an index whatever the values.
CREATE OR REPLACE FUNCTION trading.execute_commands(p_symbol text, p_commands jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    i trading.instrument;
    c jsonb;
    v_seq bigint;
    v_result jsonb;
    v_results jsonb[] := '{}';
    v_sqlstate text;
    v_message text;
    v_constraint text;
    v_empty trading.postings := ROW('{}', '{}', '{}', '{}', '{}', '{}', '{}');
    v_command trading.postings;  -- the journals and legs of the command being applied
    -- Those of the commands applied so far, one array each: appending to a field of a composite
    -- copies the whole composite, appending to an array variable does not.
    v_journals bigint[];
    v_journal_kinds text[];
    v_journal_references text[];
    v_journal_ids bigint[];
    v_account_ids bigint[];
    v_assets text[];
    v_amounts numeric[];
    v_net_account_ids bigint[] := '{}';  -- their net amount per account
    v_net_amounts numeric[] := '{}';
    v_position integer;
    v_outcome record;
    v_event_seqs bigint[] := '{}';
    v_event_kinds text[] := '{}';
    v_event_payloads jsonb[] := '{}';
    v_one_by_one boolean := false;
BEGIN
    IF jsonb_typeof(p_commands) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_commands) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'commands must be a JSON array of 1 to 1000 commands' USING ERRCODE = 'EY017';
    END IF;
    -- Statements after the lock must see the previous holder's commit: a snapshot taken before
    -- it (REPEATABLE READ, SERIALIZABLE) would match against a stale book.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'trading.execute runs at READ COMMITTED, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'EY017';
    END IF;
    SELECT * INTO i FROM trading.instrument WHERE symbol = p_symbol;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown instrument %', p_symbol USING ERRCODE = 'EY001';
    END IF;
    PERFORM trading.lock_instrument(i.id);
    -- Read again under the lock: at READ COMMITTED this sees the last holder's commit.
    SELECT * INTO i FROM trading.instrument WHERE id = i.id;
    -- Normally a command's journals and legs join the batch's, written at its end. Should the
    -- ledger refuse them then (a held balance below what open orders reserve: an invariant only
    -- `exchange verify` re-checks, broken by a hand-made journal), the batch runs again writing
    -- each command's legs with the command, so that only the command that overdraws is refused.
    <<attempt>>
    LOOP
        BEGIN
            v_seq := i.seq;
            v_results := '{}';
            v_journals := '{}';
            v_journal_kinds := '{}';
            v_journal_references := '{}';
            v_journal_ids := '{}';
            v_account_ids := '{}';
            v_assets := '{}';
            v_amounts := '{}';
            v_net_account_ids := '{}';
            v_net_amounts := '{}';
            v_event_seqs := '{}';
            v_event_kinds := '{}';
            v_event_payloads := '{}';
            FOR c IN SELECT value FROM jsonb_array_elements(p_commands) LOOP
                v_command := v_empty;
                BEGIN
                    CASE c ->> 'op'
                        WHEN 'place' THEN
                            SELECT * INTO v_outcome FROM trading.place(
                                v_command, v_net_account_ids, v_net_amounts, i, v_seq + 1, c);
                        WHEN 'cancel' THEN
                            SELECT * INTO v_outcome FROM trading.cancel(v_command, i, v_seq + 1, c);
                        WHEN 'amend' THEN
                            SELECT * INTO v_outcome FROM trading.amend(
                                v_command, v_net_account_ids, v_net_amounts, i, v_seq + 1, c);
                        WHEN 'cancel_all' THEN
                            SELECT * INTO v_outcome
                              FROM trading.cancel_all(v_command, i, v_seq + 1, c);
                        ELSE
                            RAISE EXCEPTION 'unknown command %', coalesce(c ->> 'op', 'without op')
                                USING ERRCODE = 'EY010';
                    END CASE;
                    v_command := v_outcome.p;
                    v_result := v_outcome.result;
                    IF v_one_by_one THEN
                        PERFORM trading.write_postings(v_command);
                        v_command := v_empty;
                    END IF;
                EXCEPTION
                    WHEN SQLSTATE 'EY000' OR SQLSTATE 'EX000' OR unique_violation THEN
                        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE,
                                                v_message = MESSAGE_TEXT,
                                                v_constraint = CONSTRAINT_NAME;
                        -- Two instruments placing one client_order_id at once: the later one
                        -- is a duplicate.
                        IF v_sqlstate = '23505'
                           AND v_constraint <> 'orders_customer_client_order_id_key' THEN
                            RAISE;
                        END IF;
                        v_command := v_empty;
                        v_result := jsonb_build_object(
                            'code', trading.error_code(v_sqlstate), 'message', v_message);
                END;
                -- Only a command that changed something takes the next number and has an event.
                IF v_result ? 'seq' THEN
                    v_seq := v_seq + 1;
                    v_event_seqs := v_event_seqs || v_seq;
                    v_event_kinds := v_event_kinds || (c ->> 'op');
                    v_event_payloads := v_event_payloads || jsonb_build_object(
                        'command', c, 'orders', v_result -> 'orders',
                        'trades', v_result -> 'trades');
                END IF;
                v_results := v_results || v_result;
                FOR k IN 1 .. coalesce(cardinality(v_command.account_ids), 0) LOOP
                    v_position := array_position(v_net_account_ids, v_command.account_ids[k]);
                    IF v_position IS NULL THEN
                        v_net_account_ids := v_net_account_ids || v_command.account_ids[k];
                        v_net_amounts := v_net_amounts || v_command.amounts[k];
                    ELSE
                        v_net_amounts[v_position] :=
                            v_net_amounts[v_position] + v_command.amounts[k];
                    END IF;
                END LOOP;
                v_journals := v_journals || v_command.journals;
                v_journal_kinds := v_journal_kinds || v_command.journal_kinds;
                v_journal_references := v_journal_references || v_command.journal_references;
                v_journal_ids := v_journal_ids || v_command.journal_ids;
                v_account_ids := v_account_ids || v_command.account_ids;
                v_assets := v_assets || v_command.assets;
                v_amounts := v_amounts || v_command.amounts;
            END LOOP;
            PERFORM trading.write_postings(ROW(
                v_journals, v_journal_kinds, v_journal_references, v_journal_ids, v_account_ids,
                v_assets, v_amounts)::trading.postings);
            EXIT attempt;
        EXCEPTION WHEN SQLSTATE 'EX002' THEN
            IF v_one_by_one THEN
                RAISE;
            END IF;
            v_one_by_one := true;
        END;
    END LOOP;
    IF v_seq <> i.seq THEN
        INSERT INTO trading.event (instrument_id, seq, kind, payload)
        SELECT i.id, e.seq, e.kind, e.payload
          FROM unnest(v_event_seqs, v_event_kinds, v_event_payloads) AS e(seq, kind, payload)
         ORDER BY e.seq;
        UPDATE trading.instrument SET seq = v_seq WHERE id = i.id;
    END IF;
    RETURN to_jsonb(v_results);
END
$$;
