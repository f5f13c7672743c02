-- Downgrade of reporting: views only, no data. Their grants to finance_reader go with them.
DROP SCHEMA reporting CASCADE;
