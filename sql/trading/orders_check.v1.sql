-- The rules of trading.orders, one CHECK constraint instead of thirteen (migration 0007).
-- PostgreSQL prepares every CHECK expression of a table anew for each INSERT or UPDATE
-- statement, and the engine writes orders one statement at a time: preparing the thirteen
-- expressions of sql/trading/tables.v1.sql cost more than the rest of the statement (about 55 of
-- 80 µs). A PL/pgSQL function keeps its prepared expressions for the session. The rules are the
-- same, in the same words, and a broken one still reports its own name as the constraint
-- (like a CHECK, a rule that evaluates to NULL passes), but one: a limit order without a price
-- made orders_price_matches_type NULL, so the constraint let it through; now it is refused.
CREATE FUNCTION trading.order_row_valid(
    p_client_order_id text, p_side text, p_type text, p_price numeric, p_quantity numeric,
    p_filled_quantity numeric, p_status text, p_reason text, p_time_in_force text,
    p_post_only boolean, p_self_trade_prevention text, p_requested_price numeric,
    p_requested_quantity numeric
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_broken text;
BEGIN
    IF (p_client_order_id ~ '^[!-~]{1,64}$') IS FALSE THEN
        v_broken := 'orders_client_order_id_format';
    ELSIF (p_side IN ('buy', 'sell')) IS FALSE THEN
        v_broken := 'orders_side_valid';
    ELSIF (p_type IN ('limit', 'market')) IS FALSE THEN
        v_broken := 'orders_type_valid';
    ELSIF (p_time_in_force IN ('GTC', 'IOC', 'FOK')) IS FALSE THEN
        v_broken := 'orders_time_in_force_valid';
    ELSIF (p_self_trade_prevention IN ('cancel_newest', 'cancel_oldest', 'cancel_both',
                                       'decrement')) IS FALSE THEN
        v_broken := 'orders_self_trade_prevention_valid';
    ELSIF (p_status IN ('new', 'partially_filled', 'filled', 'canceled', 'expired',
                        'rejected')) IS FALSE THEN
        v_broken := 'orders_status_valid';
    ELSIF ((p_type = 'limit' AND p_price > 0 AND p_requested_price > 0)
           OR (p_type = 'market' AND p_price IS NULL AND p_requested_price IS NULL)) IS NOT TRUE THEN
        v_broken := 'orders_price_matches_type';
    ELSIF (p_quantity > 0 AND p_requested_quantity > 0
           AND p_filled_quantity >= 0 AND p_filled_quantity <= p_quantity) IS FALSE THEN
        v_broken := 'orders_quantities_valid';
    ELSIF (CASE p_status
               WHEN 'new' THEN p_filled_quantity = 0
               WHEN 'partially_filled' THEN p_filled_quantity > 0 AND p_filled_quantity < p_quantity
               WHEN 'filled' THEN p_filled_quantity = p_quantity
               ELSE p_filled_quantity < p_quantity
           END) IS FALSE THEN
        v_broken := 'orders_status_matches_fill';
    ELSIF ((p_status IN ('canceled', 'expired', 'rejected')) = (p_reason IS NOT NULL)) IS FALSE THEN
        v_broken := 'orders_reason_matches_status';
    ELSIF (p_status NOT IN ('new', 'partially_filled')
           OR (p_type = 'limit' AND p_time_in_force = 'GTC')) IS FALSE THEN
        v_broken := 'orders_only_gtc_limit_rests';
    ELSIF (NOT p_post_only OR (p_type = 'limit' AND p_time_in_force = 'GTC')) IS FALSE THEN
        v_broken := 'orders_post_only_gtc_limit';
    ELSIF (p_type = 'limit' OR p_time_in_force <> 'GTC') IS FALSE THEN
        v_broken := 'orders_market_not_gtc';
    ELSE
        RETURN true;
    END IF;
    RAISE EXCEPTION 'new row for relation "orders" violates check constraint "%"', v_broken
        USING ERRCODE = 'check_violation', CONSTRAINT = v_broken, SCHEMA = 'trading',
              TABLE = 'orders';
END
$$;

ALTER TABLE trading.orders
    DROP CONSTRAINT orders_client_order_id_format,
    DROP CONSTRAINT orders_side_valid,
    DROP CONSTRAINT orders_type_valid,
    DROP CONSTRAINT orders_time_in_force_valid,
    DROP CONSTRAINT orders_self_trade_prevention_valid,
    DROP CONSTRAINT orders_status_valid,
    DROP CONSTRAINT orders_price_matches_type,
    DROP CONSTRAINT orders_quantities_valid,
    DROP CONSTRAINT orders_status_matches_fill,
    DROP CONSTRAINT orders_reason_matches_status,
    DROP CONSTRAINT orders_only_gtc_limit_rests,
    DROP CONSTRAINT orders_post_only_gtc_limit,
    DROP CONSTRAINT orders_market_not_gtc,
    ADD CONSTRAINT orders_valid CHECK (trading.order_row_valid(
        client_order_id, side, type, price, quantity, filled_quantity, status, reason,
        time_in_force, post_only, self_trade_prevention, requested_price, requested_quantity));
