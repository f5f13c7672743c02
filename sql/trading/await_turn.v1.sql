-- An order gateway's turn on an instrument (migration 0009): the lock trading.execute takes,
-- taken first and held until the transaction ends, so that the gateway gathers its batch while
-- it waits (requests that arrive meanwhile join the batch rather than wait for the next one).
-- It gives the application role no power it lacked: trading.execute in an open transaction
-- holds the same lock as soon as one command reaches the engine, and the role can always send
-- one (a command the engine refuses will do). What differs: this needs no tenant or account,
-- and leaves no event behind.
CREATE FUNCTION trading.await_turn(p_symbol text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_instrument_id integer;
BEGIN
    SELECT id INTO v_instrument_id FROM trading.instrument WHERE symbol = p_symbol;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown instrument %', p_symbol USING ERRCODE = 'EY001';
    END IF;
    PERFORM trading.lock_instrument(v_instrument_id);
END
$$;

GRANT EXECUTE ON FUNCTION trading.await_turn(text) TO exchange_app;
