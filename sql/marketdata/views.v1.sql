-- Public market data: what every broker may see of the shared books. Views run with their
-- owner's rights, so they read all tenants' orders and trades, and show none of their owners.
CREATE SCHEMA marketdata;

CREATE VIEW marketdata.book_level AS
SELECT i.symbol, o.side, o.price,
       sum(o.quantity - o.filled_quantity) AS quantity,
       count(*) AS orders
  FROM trading.orders o
  JOIN trading.instrument i ON i.id = o.instrument_id
 WHERE o.status IN ('new', 'partially_filled')
 GROUP BY i.symbol, o.side, o.price;

CREATE VIEW marketdata.public_trade AS
SELECT t.id, i.symbol, t.seq, t.match_number, t.price, t.quantity, t.taker_side, t.created_at
  FROM trading.trade t
  JOIN trading.instrument i ON i.id = t.instrument_id;

COMMENT ON VIEW marketdata.book_level IS
    'Resting quantity and order count per instrument, side and price: the public order book.';
COMMENT ON VIEW marketdata.public_trade IS
    'Every trade without its parties: price, quantity, aggressor side and the command''s seq.';
