-- The application role reads the ledger and changes it only through the posting functions.
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO exchange_app;
GRANT SELECT ON ALL TABLES IN SCHEMA ledger TO exchange_app;
GRANT EXECUTE ON FUNCTION
    ledger.post_journal(text, text, text, bigint[], text[], numeric[]),
    ledger.create_customer(text),
    ledger.account_id(bigint, text, text, text),
    ledger.deposit(bigint, text, numeric, text, text),
    ledger.withdraw(bigint, text, numeric, text, text),
    ledger.transfer(bigint, bigint, text, numeric, text, text)
    TO exchange_app;
