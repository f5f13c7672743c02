"""Tenants (brokers), API keys and the tenant a transaction acts for."""
