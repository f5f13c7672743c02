"""Tenancy errors with stable machine codes, translated from the database's SQLSTATEs."""

from __future__ import annotations

from app.errors import DomainError, translator

# SQLSTATEs raised by sql/tenancy/*.sql (class ET) and the constraints that back them up.
SQLSTATE_CODES = {
    "ET001": "tenant_required",
    "ET002": "unknown_tenant",
    "ET003": "tenancy_immutable",
}
CONSTRAINT_CODES = {
    "tenant_name_key": "tenant_exists",
    "tenant_name_length": "invalid_tenant_name",
    "api_key_scopes_valid": "invalid_scopes",
}


class TenancyError(DomainError):
    """A refused tenancy operation; `code` is stable and machine-readable."""


translated = translator(
    TenancyError,
    SQLSTATE_CODES,
    CONSTRAINT_CODES,
    {"tenant_exists": "a tenant with this name exists"},
)
"""Re-raise the database's refusals of tenancy rules as TenancyError."""
