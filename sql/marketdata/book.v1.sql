-- What a stream server needs to follow a book event by event, and an index for time windows.
--
-- marketdata.book_order: every open order of every instrument, without its owner (no account,
-- customer, tenant or client order id): id, side, price and remaining quantity. Order ids are
-- public already (the stream's order updates carry them). A stream server reads it in the same
-- REPEATABLE READ snapshot as trading.instrument.seq, then applies each later event's orders to
-- it, which it cannot do from the aggregated levels of marketdata.book_level (an event says
-- where an order is now, not how much it had before). Like the other marketdata views it runs
-- with its owner's rights, so it sees all tenants' orders.
CREATE VIEW marketdata.book_order AS
SELECT i.symbol, o.id, o.side, o.price, o.quantity - o.filled_quantity AS remaining
  FROM trading.orders o
  JOIN trading.instrument i ON i.id = o.instrument_id
 WHERE o.status IN ('new', 'partially_filled');

COMMENT ON VIEW marketdata.book_order IS
    'Open orders without their owners: id, side, price, remaining quantity (book snapshots).';

REVOKE ALL ON marketdata.book_order FROM PUBLIC;
GRANT SELECT ON marketdata.book_order TO exchange_app;

-- Ticker (last 24 hours) and candles read an instrument's trades by time; without this index
-- each such request would read every trade the instrument ever made.
CREATE INDEX trade_instrument_created_at_idx ON trading.trade (instrument_id, created_at);
