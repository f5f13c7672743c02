"""Trading errors with stable machine codes, translated from the database's SQLSTATEs."""

from __future__ import annotations

from app.errors import DomainError, translator
from app.ledger.errors import SQLSTATE_CODES as LEDGER_SQLSTATE_CODES

# SQLSTATEs raised by sql/trading/*.sql (class EY); trading.error_code() says the same in SQL.
SQLSTATE_CODES = {
    "EY001": "unknown_instrument",
    "EY002": "instrument_halted",
    "EY003": "invalid_tick_size",
    "EY004": "invalid_lot_size",
    "EY005": "below_min_quantity",
    "EY006": "below_min_notional",
    "EY007": "duplicate_client_order_id",
    "EY008": "unknown_order",
    "EY009": "order_not_open",
    "EY010": "invalid_order",
    "EY011": "invalid_instrument",
    "EY012": "trading_immutable",
    "EY013": "instrument_exists",
    "EY014": "invalid_quantity",
    "EY015": "post_only_would_take",
    "EY016": "unknown_account",
    "EY017": "invalid_batch",
}


class TradingError(DomainError):
    """A refused trading command or operation; `code` is stable and machine-readable."""


# Insufficient funds inside the engine is the ledger's SQLSTATE (EX002).
translated = translator(TradingError, {**LEDGER_SQLSTATE_CODES, **SQLSTATE_CODES})
"""Re-raise the database's refusals of trading rules as TradingError."""
