-- Undo operators.v1.sql.
REVOKE EXECUTE ON FUNCTION
    trading.create_instrument(text, text, numeric, numeric, numeric, numeric, numeric, numeric),
    trading.set_instrument_status(text, text)
    FROM exchange_app;
DROP FUNCTION ledger.create_asset(text, smallint);
