"""Refusals with stable machine codes, translated from the database's SQLSTATEs and constraint
names. Each module (ledger, trading, tenancy) names its own codes and error class."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import psycopg


class DomainError(Exception):
    """A refused operation; `code` is stable and machine-readable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def translator(
    error_class: type[DomainError],
    sqlstate_codes: Mapping[str, str],
    constraint_codes: Mapping[str, str] | None = None,
    messages: Mapping[str, str] | None = None,
) -> Callable[[], AbstractContextManager[None]]:
    """A context manager factory that re-raises the database's refusals as `error_class`: by
    SQLSTATE first, then by the violated constraint's name. Other errors pass unchanged.
    `messages` replaces the database's wording for some codes (a unique index's message names
    the index, which says nothing to a user)."""

    @contextmanager
    def translated() -> Iterator[None]:
        try:
            yield
        except psycopg.Error as error:
            code = sqlstate_codes.get(error.sqlstate or "")
            if code is None and error.diag.constraint_name and constraint_codes:
                code = constraint_codes.get(error.diag.constraint_name)
            if code is None:
                raise
            message = (messages or {}).get(code) or error.diag.message_primary or str(error)
            raise error_class(code, message) from error

    return translated
