-- finance_reader reads the reporting views and nothing else: no other schema grants it USAGE,
-- and PUBLIC has no privilege on any exchange table. The application role gets nothing here.
REVOKE ALL ON SCHEMA reporting FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA reporting FROM PUBLIC;
GRANT USAGE ON SCHEMA reporting TO finance_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO finance_reader;
