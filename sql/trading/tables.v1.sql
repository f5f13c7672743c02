-- Instruments, orders, trades and market events. Runs as exchange_owner.
-- The rules these rows follow are in docs/trading.md; the CHECKs make the impossible states
-- unrepresentable even for the owner's own functions.
CREATE SCHEMA trading;

INSERT INTO ledger.journal_kind (kind, description) VALUES
    ('hold', 'An order reserves funds: the customer''s available balance to held.'),
    ('release', 'Reserved funds return: held to available (cancel, expiry, amend, price improvement).'),
    ('trade', 'A fill settles: base and quote between buyer and seller, fees to the instrument.');

CREATE TABLE trading.instrument (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol text NOT NULL,
    base text NOT NULL REFERENCES ledger.asset (code),
    quote text NOT NULL REFERENCES ledger.asset (code),
    -- Copies of the assets' scales, which can never change (ledger.asset_scale_immutable).
    base_scale smallint NOT NULL,
    quote_scale smallint NOT NULL,
    tick_size numeric NOT NULL,
    lot_size numeric NOT NULL,
    min_quantity numeric NOT NULL,
    min_notional numeric NOT NULL,
    maker_fee_rate numeric NOT NULL,
    taker_fee_rate numeric NOT NULL,
    status text NOT NULL DEFAULT 'trading',
    -- The last event's sequence number: advanced under the instrument's lock, so gap-free.
    seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instrument_symbol_key UNIQUE (symbol),
    CONSTRAINT instrument_symbol_format CHECK (symbol = base || '-' || quote),
    CONSTRAINT instrument_assets_differ CHECK (base <> quote),
    CONSTRAINT instrument_status_valid CHECK (status IN ('trading', 'halted')),
    CONSTRAINT instrument_sizes_positive CHECK (
        tick_size > 0 AND tick_size < 1e15 AND lot_size > 0 AND lot_size < 1e15
        AND min_quantity >= 0 AND min_quantity < 1e15 AND min_notional >= 0 AND min_notional < 1e24
    ),
    -- Quantities are multiples of the lot, prices of the tick: if the lot fits the base scale and
    -- tick × lot fits the quote scale, every quantity and every notional is exact.
    CONSTRAINT instrument_lot_exact CHECK (lot_size = round(lot_size, base_scale)),
    CONSTRAINT instrument_notional_exact CHECK (
        tick_size * lot_size = round(tick_size * lot_size, quote_scale)
    ),
    CONSTRAINT instrument_fee_rates_valid CHECK (
        maker_fee_rate >= 0 AND maker_fee_rate < 1 AND taker_fee_rate >= 0 AND taker_fee_rate < 1
    ),
    CONSTRAINT instrument_seq_non_negative CHECK (seq >= 0)
);

-- "order" is a reserved word, hence the plural.
CREATE TABLE trading.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id integer NOT NULL REFERENCES trading.instrument (id),
    customer_id bigint NOT NULL REFERENCES ledger.customer (id),
    client_order_id text NOT NULL,
    side text NOT NULL,
    type text NOT NULL,
    price numeric,
    quantity numeric NOT NULL,
    filled_quantity numeric NOT NULL DEFAULT 0,
    status text NOT NULL,
    reason text,
    time_in_force text NOT NULL,
    post_only boolean NOT NULL DEFAULT false,
    self_trade_prevention text NOT NULL DEFAULT 'cancel_newest',
    -- The placement as it was asked for: a retry with the same client_order_id must match it
    -- even after an amend or a self-trade decrement changed price or quantity.
    requested_price numeric,
    requested_quantity numeric NOT NULL,
    -- Time priority: the seq of the command that placed the order or last took its priority.
    priority bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_customer_client_order_id_key UNIQUE (customer_id, client_order_id),
    CONSTRAINT orders_client_order_id_format CHECK (client_order_id ~ '^[!-~]{1,64}$'),
    CONSTRAINT orders_side_valid CHECK (side IN ('buy', 'sell')),
    CONSTRAINT orders_type_valid CHECK (type IN ('limit', 'market')),
    CONSTRAINT orders_time_in_force_valid CHECK (time_in_force IN ('GTC', 'IOC', 'FOK')),
    CONSTRAINT orders_self_trade_prevention_valid CHECK (
        self_trade_prevention IN ('cancel_newest', 'cancel_oldest', 'cancel_both', 'decrement')
    ),
    CONSTRAINT orders_status_valid CHECK (
        status IN ('new', 'partially_filled', 'filled', 'canceled', 'expired', 'rejected')
    ),
    CONSTRAINT orders_price_matches_type CHECK (
        (type = 'limit' AND price > 0 AND requested_price > 0)
        OR (type = 'market' AND price IS NULL AND requested_price IS NULL)
    ),
    CONSTRAINT orders_quantities_valid CHECK (
        quantity > 0 AND requested_quantity > 0
        AND filled_quantity >= 0 AND filled_quantity <= quantity
    ),
    CONSTRAINT orders_status_matches_fill CHECK (
        CASE status
            WHEN 'new' THEN filled_quantity = 0
            WHEN 'partially_filled' THEN filled_quantity > 0 AND filled_quantity < quantity
            WHEN 'filled' THEN filled_quantity = quantity
            ELSE filled_quantity < quantity
        END
    ),
    CONSTRAINT orders_reason_matches_status CHECK (
        (status IN ('canceled', 'expired', 'rejected')) = (reason IS NOT NULL)
    ),
    -- Only GTC limit orders ever rest; post-only is only for them.
    CONSTRAINT orders_only_gtc_limit_rests CHECK (
        status NOT IN ('new', 'partially_filled') OR (type = 'limit' AND time_in_force = 'GTC')
    ),
    CONSTRAINT orders_post_only_gtc_limit CHECK (
        NOT post_only OR (type = 'limit' AND time_in_force = 'GTC')
    ),
    CONSTRAINT orders_market_not_gtc CHECK (type = 'limit' OR time_in_force <> 'GTC')
);

-- The books: one partial index per side, in matching order, holding only open orders.
CREATE INDEX orders_bids_idx ON trading.orders (instrument_id, price DESC, priority)
    WHERE side = 'buy' AND status IN ('new', 'partially_filled');
CREATE INDEX orders_asks_idx ON trading.orders (instrument_id, price, priority)
    WHERE side = 'sell' AND status IN ('new', 'partially_filled');
CREATE INDEX orders_open_by_customer_idx ON trading.orders (customer_id, instrument_id)
    WHERE status IN ('new', 'partially_filled');

CREATE TABLE trading.trade (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id integer NOT NULL REFERENCES trading.instrument (id),
    seq bigint NOT NULL,  -- the command's event
    match_number integer NOT NULL,  -- 1, 2, ... within the command
    maker_order_id bigint NOT NULL REFERENCES trading.orders (id),
    taker_order_id bigint NOT NULL REFERENCES trading.orders (id),
    taker_side text NOT NULL,
    price numeric NOT NULL,
    quantity numeric NOT NULL,
    maker_fee numeric NOT NULL,  -- in the asset the maker receives
    taker_fee numeric NOT NULL,  -- in the asset the taker receives
    journal_id bigint NOT NULL REFERENCES ledger.journal (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trade_instrument_seq_match_key UNIQUE (instrument_id, seq, match_number),
    CONSTRAINT trade_journal_id_key UNIQUE (journal_id),
    CONSTRAINT trade_taker_side_valid CHECK (taker_side IN ('buy', 'sell')),
    CONSTRAINT trade_amounts_valid CHECK (
        price > 0 AND quantity > 0 AND maker_fee >= 0 AND taker_fee >= 0
    ),
    CONSTRAINT trade_two_orders CHECK (maker_order_id <> taker_order_id)
);

CREATE INDEX trade_maker_order_id_idx ON trading.trade (maker_order_id);
CREATE INDEX trade_taker_order_id_idx ON trading.trade (taker_order_id);

-- One row per command that changed something: the command, the orders it changed and its
-- trades. The table is the durable record of the market; streams read it.
CREATE TABLE trading.event (
    instrument_id integer NOT NULL REFERENCES trading.instrument (id),
    seq bigint NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_pkey PRIMARY KEY (instrument_id, seq),
    CONSTRAINT event_kind_valid CHECK (kind IN ('place', 'cancel', 'amend', 'cancel_all')),
    CONSTRAINT event_seq_positive CHECK (seq > 0)
);

COMMENT ON TABLE trading.orders IS
    'Orders of every instrument; the open ones (new, partially_filled) form the books.';
COMMENT ON TABLE trading.trade IS 'Fills: one row and one ledger journal of kind trade each.';
COMMENT ON TABLE trading.event IS
    'Per-instrument gap-free sequence of the commands that changed the market, with their effects.';
