-- The application reads trading state and changes it only through trading.execute. Instruments
-- are created and halted by operators (the owner's functions).
REVOKE ALL ON ALL TABLES IN SCHEMA trading FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA trading FROM PUBLIC;
GRANT USAGE ON SCHEMA trading TO exchange_app;
GRANT SELECT ON ALL TABLES IN SCHEMA trading TO exchange_app;
GRANT EXECUTE ON FUNCTION trading.execute(text, jsonb) TO exchange_app;
