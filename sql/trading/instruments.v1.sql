-- Operators' functions for instruments. Owner-only: the application role cannot call them.

-- An instrument's commands are serialized by a lock on its row, held until commit. Not an
-- advisory lock: every role may take any advisory lock (PUBLIC executes pg_advisory_lock), so
-- the application role could hold an instrument's key and freeze it, halts included; a row
-- lock needs UPDATE on trading.instrument, which only the owner has. Called by the SECURITY
-- DEFINER functions only, under their search_path.
CREATE FUNCTION trading.lock_instrument(p_instrument_id integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM trading.instrument WHERE id = p_instrument_id FOR UPDATE;
END
$$;

CREATE FUNCTION trading.create_instrument(
    p_base text, p_quote text, p_tick_size numeric, p_lot_size numeric,
    p_min_quantity numeric, p_min_notional numeric,
    p_maker_fee_rate numeric, p_taker_fee_rate numeric
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_base_scale smallint;
    v_quote_scale smallint;
    v_id integer;
BEGIN
    SELECT scale INTO v_base_scale FROM ledger.asset WHERE code = p_base;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown asset %', p_base USING ERRCODE = 'EY011';
    END IF;
    SELECT scale INTO v_quote_scale FROM ledger.asset WHERE code = p_quote;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown asset %', p_quote USING ERRCODE = 'EY011';
    END IF;
    IF p_base = p_quote THEN
        RAISE EXCEPTION 'base and quote must be different assets' USING ERRCODE = 'EY011';
    END IF;
    IF NOT (p_tick_size > 0 AND p_tick_size < 1e15 AND p_lot_size > 0 AND p_lot_size < 1e15) THEN
        RAISE EXCEPTION 'tick size and lot size must be positive and below 10^15'
            USING ERRCODE = 'EY011';
    END IF;
    IF NOT (p_min_quantity >= 0 AND p_min_quantity < 1e15
            AND p_min_notional >= 0 AND p_min_notional < 1e24) THEN
        RAISE EXCEPTION 'minimum quantity and notional must be zero or more (and below 10^15, 10^24)'
            USING ERRCODE = 'EY011';
    END IF;
    IF p_lot_size <> round(p_lot_size, v_base_scale) THEN
        RAISE EXCEPTION 'lot size % is not representable in % (scale %)',
            p_lot_size, p_base, v_base_scale
            USING ERRCODE = 'EY011';
    END IF;
    IF p_tick_size * p_lot_size <> round(p_tick_size * p_lot_size, v_quote_scale) THEN
        RAISE EXCEPTION 'tick size × lot size = % is not representable in % (scale %): notionals would be inexact',
            p_tick_size * p_lot_size, p_quote, v_quote_scale
            USING ERRCODE = 'EY011';
    END IF;
    IF NOT (p_maker_fee_rate >= 0 AND p_maker_fee_rate < 1
            AND p_taker_fee_rate >= 0 AND p_taker_fee_rate < 1) THEN
        RAISE EXCEPTION 'fee rates must be at least 0 and below 1' USING ERRCODE = 'EY011';
    END IF;
    IF EXISTS (SELECT FROM trading.instrument WHERE symbol = p_base || '-' || p_quote) THEN
        RAISE EXCEPTION 'instrument %-% already exists', p_base, p_quote USING ERRCODE = 'EY013';
    END IF;
    INSERT INTO trading.instrument (
        symbol, base, quote, tick_size, lot_size, min_quantity, min_notional,
        maker_fee_rate, taker_fee_rate)
    VALUES (
        p_base || '-' || p_quote, p_base, p_quote, p_tick_size, p_lot_size, p_min_quantity,
        p_min_notional, p_maker_fee_rate, p_taker_fee_rate)
    RETURNING id INTO v_id;
    -- The fee accounts exist from the start, so the first trade creates no account rows.
    PERFORM ledger.account_id(NULL, p_base, 'fee', p_base || '-' || p_quote);
    PERFORM ledger.account_id(NULL, p_quote, 'fee', p_base || '-' || p_quote);
    RETURN v_id;
END
$$;

-- Halting stops new orders and amends; cancels go on. Taken under the instrument's lock, so a
-- batch already running finishes under the status it started with.
CREATE FUNCTION trading.set_instrument_status(p_symbol text, p_status text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id integer;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('trading', 'halted') THEN
        RAISE EXCEPTION 'status must be trading or halted, got %', coalesce(p_status, 'null')
            USING ERRCODE = 'EY011';
    END IF;
    SELECT id INTO v_id FROM trading.instrument WHERE symbol = p_symbol;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown instrument %', p_symbol USING ERRCODE = 'EY001';
    END IF;
    PERFORM trading.lock_instrument(v_id);
    UPDATE trading.instrument SET status = p_status WHERE id = v_id;
END
$$;
