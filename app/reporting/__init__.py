"""Finance reporting: the report files of `sql/reports/` run by `exchange report`, and access for
finance staff (`exchange db grant-finance`). The views they read are in sql/reporting/."""
