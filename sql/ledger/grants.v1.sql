-- The application role reads the ledger and changes it only through the business functions,
-- which derive their own accounts (not through ledger.post_journal's raw legs).
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO exchange_app;
GRANT SELECT ON ALL TABLES IN SCHEMA ledger TO exchange_app;
GRANT EXECUTE ON FUNCTION
    ledger.create_customer(text),
    ledger.deposit(bigint, text, numeric, text, text),
    ledger.withdraw(bigint, text, numeric, text, text),
    ledger.transfer(bigint, bigint, text, numeric, text, text)
    TO exchange_app;
