-- What operators do through the HTTP API's admin endpoints. The API connects as exchange_app
-- and authenticates operators itself (admin token or admin key), as it authenticates brokers;
-- these functions are the only operator powers the role gets, and none of them moves money.
CREATE FUNCTION ledger.create_asset(p_code text, p_scale smallint) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO ledger.asset (code, scale) VALUES (p_code, p_scale);
$$;

GRANT EXECUTE ON FUNCTION
    ledger.create_asset(text, smallint),
    trading.create_instrument(text, text, numeric, numeric, numeric, numeric, numeric, numeric),
    trading.set_instrument_status(text, text)
    TO exchange_app;
