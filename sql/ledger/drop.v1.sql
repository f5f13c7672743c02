-- Downgrade of the ledger: its schema and everything in it.
DROP SCHEMA ledger CASCADE;
