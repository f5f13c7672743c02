-- Undoes execute.v2.sql: the engine's entry point is trading.execute again, without tenants.
DROP FUNCTION trading.execute(text, jsonb);
DROP FUNCTION trading.tenant_view(jsonb, bigint, bigint);
ALTER FUNCTION trading.execute_commands(text, jsonb) RENAME TO execute;
GRANT EXECUTE ON FUNCTION trading.execute(text, jsonb) TO exchange_app;
