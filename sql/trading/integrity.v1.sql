-- Triggers that keep trading history trustworthy, whoever writes the rows (the owner too).
-- Error codes (SQLSTATE class EY, see engine.v1.sql) are mapped by app/trading/errors.py.

-- Trades and events are history: never changed, never removed. Orders and instruments are
-- referenced by that history, so they are never removed either.
CREATE FUNCTION trading.reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on trading.% is not allowed: trading history is append-only',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'EY012';
END
$$;

CREATE TRIGGER trade_immutable
    BEFORE UPDATE OR DELETE ON trading.trade
    FOR EACH ROW EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER trade_no_truncate
    BEFORE TRUNCATE ON trading.trade
    FOR EACH STATEMENT EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER event_immutable
    BEFORE UPDATE OR DELETE ON trading.event
    FOR EACH ROW EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER event_no_truncate
    BEFORE TRUNCATE ON trading.event
    FOR EACH STATEMENT EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER orders_no_delete
    BEFORE DELETE ON trading.orders
    FOR EACH ROW EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER orders_no_truncate
    BEFORE TRUNCATE ON trading.orders
    FOR EACH STATEMENT EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER instrument_no_delete
    BEFORE DELETE ON trading.instrument
    FOR EACH ROW EXECUTE FUNCTION trading.reject_change();
CREATE TRIGGER instrument_no_truncate
    BEFORE TRUNCATE ON trading.instrument
    FOR EACH STATEMENT EXECUTE FUNCTION trading.reject_change();

-- An order's identity never changes, a closed order never reopens, and filled quantity only
-- grows: what was traded stays traded.
CREATE FUNCTION trading.check_order_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.instrument_id, NEW.customer_id, NEW.client_order_id, NEW.side, NEW.type,
        NEW.time_in_force, NEW.post_only, NEW.self_trade_prevention, NEW.requested_price,
        NEW.requested_quantity, NEW.created_at)
       IS DISTINCT FROM
       (OLD.instrument_id, OLD.customer_id, OLD.client_order_id, OLD.side, OLD.type,
        OLD.time_in_force, OLD.post_only, OLD.self_trade_prevention, OLD.requested_price,
        OLD.requested_quantity, OLD.created_at) THEN
        RAISE EXCEPTION 'order %: only price, quantity, fills and status may change', OLD.id
            USING ERRCODE = 'EY012';
    END IF;
    IF OLD.status NOT IN ('new', 'partially_filled') THEN
        RAISE EXCEPTION 'order % is % and cannot change any more', OLD.id, OLD.status
            USING ERRCODE = 'EY012';
    END IF;
    IF NEW.filled_quantity < OLD.filled_quantity THEN
        RAISE EXCEPTION 'order %: filled quantity cannot decrease', OLD.id USING ERRCODE = 'EY012';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER orders_check_update
    BEFORE UPDATE ON trading.orders
    FOR EACH ROW EXECUTE FUNCTION trading.check_order_update();

-- Only the status of an instrument changes after creation (and its seq, as events are written).
CREATE FUNCTION trading.check_instrument_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'instrument %: only its status changes after creation', OLD.symbol
        USING ERRCODE = 'EY012';
END
$$;

CREATE TRIGGER instrument_parameters_immutable
    BEFORE UPDATE ON trading.instrument
    FOR EACH ROW WHEN (
        (NEW.id, NEW.symbol, NEW.base, NEW.quote, NEW.base_scale, NEW.quote_scale, NEW.tick_size,
         NEW.lot_size, NEW.min_quantity, NEW.min_notional, NEW.maker_fee_rate, NEW.taker_fee_rate,
         NEW.created_at)
        IS DISTINCT FROM
        (OLD.id, OLD.symbol, OLD.base, OLD.quote, OLD.base_scale, OLD.quote_scale, OLD.tick_size,
         OLD.lot_size, OLD.min_quantity, OLD.min_notional, OLD.maker_fee_rate, OLD.taker_fee_rate,
         OLD.created_at)
        OR NEW.seq < OLD.seq
    )
    EXECUTE FUNCTION trading.check_instrument_update();

-- The scales are copied from the assets, never taken from the inserting statement.
CREATE FUNCTION trading.instrument_copy_scales() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.base_scale := (SELECT scale FROM ledger.asset WHERE code = NEW.base);
    NEW.quote_scale := (SELECT scale FROM ledger.asset WHERE code = NEW.quote);
    RETURN NEW;
END
$$;

CREATE TRIGGER instrument_copy_scales
    BEFORE INSERT ON trading.instrument
    FOR EACH ROW EXECUTE FUNCTION trading.instrument_copy_scales();
