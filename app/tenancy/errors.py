"""Tenancy errors with stable machine codes, translated from the database's SQLSTATEs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

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


class TenancyError(Exception):
    """A refused tenancy operation; `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise the database's refusals of tenancy rules as TenancyError."""
    try:
        yield
    except psycopg.Error as error:
        code = SQLSTATE_CODES.get(error.sqlstate or "")
        if code is None and error.diag.constraint_name:
            code = CONSTRAINT_CODES.get(error.diag.constraint_name)
        if code is None:
            raise
        raise TenancyError(code, error.diag.message_primary or str(error)) from error
