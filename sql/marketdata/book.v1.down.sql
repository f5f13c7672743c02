-- Undo book.v1.sql.
DROP INDEX trading.trade_instrument_created_at_idx;
DROP VIEW marketdata.book_order;
