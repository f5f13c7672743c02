-- What streams read of the market events (trading.event, which the application cannot read: its
-- payloads name every broker's accounts). Public: every event of an instrument after a seq,
-- with orders and trades stripped of accounts and client order ids. Private: the same events
-- restricted to the orders and trades of the tenant the transaction acts for.

CREATE FUNCTION marketdata.public_order(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', o -> 'id', 'side', o -> 'side', 'type', o -> 'type', 'price', o -> 'price',
        'quantity', o -> 'quantity', 'filled_quantity', o -> 'filled_quantity',
        'status', o -> 'status');
$$;

CREATE FUNCTION marketdata.public_trade(t jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', t -> 'id', 'price', t -> 'price', 'quantity', t -> 'quantity',
        'taker_side', t -> 'taker_side');
$$;

-- At most p_limit events (1..1000) with seq > p_after, in seq order.
CREATE FUNCTION marketdata.events_after(p_symbol text, p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, kind text, created_at timestamptz, orders jsonb, trades jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.seq, e.kind, e.created_at,
           (SELECT coalesce(jsonb_agg(marketdata.public_order(o) ORDER BY ord), '[]')
              FROM jsonb_array_elements(e.payload -> 'orders') WITH ORDINALITY AS x(o, ord)),
           (SELECT coalesce(jsonb_agg(marketdata.public_trade(t) ORDER BY ord), '[]')
              FROM jsonb_array_elements(e.payload -> 'trades') WITH ORDINALITY AS x(t, ord))
      FROM trading.event e
      JOIN trading.instrument i ON i.id = e.instrument_id
     WHERE i.symbol = p_symbol AND e.seq > p_after
     ORDER BY e.seq
     LIMIT least(greatest(p_limit, 1), 1000);
$$;

-- The acting tenant's executions: events after p_after that changed one of its orders or made
-- one of its trades, with only those orders and only its side of those trades (the other
-- side's account, client order id and fee are null: trading.tenant_view).
CREATE FUNCTION marketdata.executions_after(p_symbol text, p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, kind text, created_at timestamptz, orders jsonb, trades jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant_id bigint := tenancy.current_tenant_id();
BEGIN
    IF v_tenant_id IS NULL THEN
        RAISE EXCEPTION 'executions belong to a tenant: set app.tenant_id' USING ERRCODE = 'ET001';
    END IF;
    RETURN QUERY
    SELECT e.seq, e.kind, e.created_at, seen.v -> 'orders', mine.trades
      FROM trading.event e
      JOIN trading.instrument i ON i.id = e.instrument_id
     CROSS JOIN LATERAL (
           SELECT trading.tenant_view(
                      jsonb_build_object('orders', e.payload -> 'orders',
                                         'trades', e.payload -> 'trades'),
                      v_tenant_id, NULL) AS v
       ) AS seen
     CROSS JOIN LATERAL (
           SELECT coalesce(jsonb_agg(t ORDER BY n), '[]') AS trades
             FROM jsonb_array_elements(seen.v -> 'trades') WITH ORDINALITY AS x(t, n)
            WHERE t ->> 'maker_account' IS NOT NULL OR t ->> 'taker_account' IS NOT NULL
       ) AS mine
     WHERE i.symbol = p_symbol AND e.seq > p_after
       AND (jsonb_array_length(seen.v -> 'orders') > 0 OR jsonb_array_length(mine.trades) > 0)
     ORDER BY e.seq
     LIMIT least(greatest(p_limit, 1), 1000);
END
$$;

-- After each event, a doorbell for stream servers: the payload says which instrument moved.
-- NOTIFY is delivered at commit, once per distinct payload and transaction (a batch rings once),
-- and the table stays the truth: a missed doorbell only delays a stream until the next one.
CREATE FUNCTION marketdata.notify_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'exchange_events', (SELECT symbol FROM trading.instrument WHERE id = NEW.instrument_id));
    RETURN NULL;
END
$$;

CREATE TRIGGER event_notify
    AFTER INSERT ON trading.event
    FOR EACH ROW EXECUTE FUNCTION marketdata.notify_event();

GRANT EXECUTE ON FUNCTION
    marketdata.events_after(text, bigint, integer),
    marketdata.executions_after(text, bigint, integer)
    TO exchange_app;
