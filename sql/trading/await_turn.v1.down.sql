-- Undoes sql/trading/await_turn.v1.sql.
DROP FUNCTION trading.await_turn(text);
