"""The double-entry ledger: assets, customers, accounts, journals and entries."""
