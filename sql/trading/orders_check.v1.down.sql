-- Downgrade of sql/trading/orders_check.v1.sql: the thirteen constraints of
-- sql/trading/tables.v1.sql again.
ALTER TABLE trading.orders
    DROP CONSTRAINT orders_valid,
    ADD CONSTRAINT orders_client_order_id_format CHECK (client_order_id ~ '^[!-~]{1,64}$'),
    ADD CONSTRAINT orders_side_valid CHECK (side IN ('buy', 'sell')),
    ADD CONSTRAINT orders_type_valid CHECK (type IN ('limit', 'market')),
    ADD CONSTRAINT orders_time_in_force_valid CHECK (time_in_force IN ('GTC', 'IOC', 'FOK')),
    ADD CONSTRAINT orders_self_trade_prevention_valid CHECK (
        self_trade_prevention IN ('cancel_newest', 'cancel_oldest', 'cancel_both', 'decrement')
    ),
    ADD CONSTRAINT orders_status_valid CHECK (
        status IN ('new', 'partially_filled', 'filled', 'canceled', 'expired', 'rejected')
    ),
    ADD CONSTRAINT orders_price_matches_type CHECK (
        (type = 'limit' AND price > 0 AND requested_price > 0)
        OR (type = 'market' AND price IS NULL AND requested_price IS NULL)
    ),
    ADD CONSTRAINT orders_quantities_valid CHECK (
        quantity > 0 AND requested_quantity > 0
        AND filled_quantity >= 0 AND filled_quantity <= quantity
    ),
    ADD CONSTRAINT orders_status_matches_fill CHECK (
        CASE status
            WHEN 'new' THEN filled_quantity = 0
            WHEN 'partially_filled' THEN filled_quantity > 0 AND filled_quantity < quantity
            WHEN 'filled' THEN filled_quantity = quantity
            ELSE filled_quantity < quantity
        END
    ),
    ADD CONSTRAINT orders_reason_matches_status CHECK (
        (status IN ('canceled', 'expired', 'rejected')) = (reason IS NOT NULL)
    ),
    -- Only GTC limit orders ever rest; post-only is only for them.
    ADD CONSTRAINT orders_only_gtc_limit_rests CHECK (
        status NOT IN ('new', 'partially_filled') OR (type = 'limit' AND time_in_force = 'GTC')
    ),
    ADD CONSTRAINT orders_post_only_gtc_limit CHECK (
        NOT post_only OR (type = 'limit' AND time_in_force = 'GTC')
    ),
    ADD CONSTRAINT orders_market_not_gtc CHECK (type = 'limit' OR time_in_force <> 'GTC');
DROP FUNCTION trading.order_row_valid(
    text, text, text, numeric, numeric, numeric, text, text, text, boolean, text, numeric, numeric);
