"""What sql/tenancy/ defines on other modules' tables, for the invariants that check them."""

from __future__ import annotations

# (schema.table, trigger, function) of sql/tenancy/integrity.v1.sql and of the market events'
# doorbell (sql/marketdata/streams.v1.sql).
TENANCY_TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("ledger.customer", "customer_tenant_immutable", "tenancy.reject_customer_tenant_change"),
    ("ledger.customer", "customer_no_delete", "tenancy.reject_delete"),
    ("tenancy.api_key", "api_key_check_update", "tenancy.check_api_key_update"),
    ("tenancy.api_key", "api_key_no_delete", "tenancy.reject_delete"),
    ("tenancy.tenant", "tenant_no_delete", "tenancy.reject_delete"),
    ("trading.event", "event_notify", "marketdata.notify_event"),
)

# Tables whose rows belong to tenants, under FORCE ROW LEVEL SECURITY (sql/tenancy/security.v1.sql),
# with the application role's policy (None: the application sees no row at all).
ROW_SECURITY_TABLES: tuple[tuple[str, str | None], ...] = (
    ("tenancy.tenant", "tenant_rows"),
    ("tenancy.api_key", None),
    ("ledger.customer", "tenant_rows"),
    ("ledger.account", "tenant_rows"),
    ("ledger.journal", "tenant_rows"),
    ("ledger.entry", "tenant_rows"),
    ("trading.orders", "tenant_rows"),
    ("trading.trade", "tenant_rows"),
    ("trading.event", None),
)

# Every policy: (table, policy, role it applies to, command).
POLICIES: tuple[tuple[str, str, str, str], ...] = tuple(
    (table, "owner_all", "exchange_owner", "*") for table, _ in ROW_SECURITY_TABLES
) + tuple(
    (table, policy, "exchange_app", "r") for table, policy in ROW_SECURITY_TABLES if policy
)
