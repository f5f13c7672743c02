-- Undo streams.v1.sql.
DROP TRIGGER event_notify ON trading.event;
DROP FUNCTION marketdata.notify_event();
DROP FUNCTION marketdata.executions_after(text, bigint, integer);
DROP FUNCTION marketdata.events_after(text, bigint, integer);
DROP FUNCTION marketdata.public_trade(jsonb);
DROP FUNCTION marketdata.public_order(jsonb);
