"""Types shared by the routers' request and response models.

Money and quantities travel as decimal strings, never as JSON numbers (a float near money is a
bug). Request bodies refuse unknown fields, so nobody can slip in a tenant or a fee rate.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
)

from app.trading.commands import SYMBOL_PATTERN

ID_MAX = 2**63 - 1
# As ledger.asset_code_format holds it.
ASSET_CODE_PATTERN = r"^[A-Z][A-Z0-9]{1,15}$"
DECIMAL_PATTERN = r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$"
PAGE_LIMIT_MAX = 500


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "12.50", not a JSON number')
    if not re.fullmatch(DECIMAL_PATTERN, value):
        raise ValueError('must be a plain decimal string such as "12.50"')
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError("must be a decimal string") from None


def decimal_text(value: Decimal) -> str:
    """A decimal as JSON carries it: positional, never in exponent form (str() of the Decimal
    0E-8, a zero at scale 8, would read "0E-8")."""
    return format(value, "f")


def _storable_text(value: str) -> str:
    """PostgreSQL text holds no NUL and only valid UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["12.50"]}),
]
Text = Annotated[str, AfterValidator(_storable_text)]
AssetCode = Annotated[str, StringConstraints(pattern=ASSET_CODE_PATTERN)]
Symbol = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN)]
IdPath = Annotated[int, Path(ge=1, le=ID_MAX)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page")
]


class Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None  # pass as ?cursor= for the next page; null on the last page


def page(items: list[dict[str, object]], limit: int, key: str = "id") -> dict[str, object]:
    """`items` fetched with limit + 1 rows: the extra row only says that there is more."""
    more = len(items) > limit
    kept = items[:limit]
    return {"items": kept, "next_cursor": str(kept[-1][key]) if more and kept else None}
