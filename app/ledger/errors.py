"""Ledger errors with stable machine codes, translated from the database's SQLSTATEs."""

from __future__ import annotations

from app.errors import DomainError, translator

# SQLSTATEs raised by sql/ledger/*.sql (class EX) and the constraints that back them up.
SQLSTATE_CODES = {
    "EX001": "unbalanced_journal",
    "EX002": "insufficient_funds",
    "EX003": "asset_mismatch",
    "EX004": "amount_scale",
    "EX005": "zero_amount",
    "EX006": "idempotency_key_reused",
    "EX007": "unknown_account",
    "EX008": "ledger_immutable",
    "EX009": "journal_incomplete",
    "EX010": "invalid_request",
    "EX011": "entry_out_of_sequence",
}
CONSTRAINT_CODES = {
    "account_balance_non_negative": "insufficient_funds",
    "entry_amount_non_zero": "zero_amount",
    "entry_amount_finite": "invalid_amount",
    "entry_account_asset_fkey": "asset_mismatch",
    "asset_pkey": "asset_exists",
    "asset_code_format": "invalid_asset_code",
    "asset_scale_range": "invalid_asset_scale",
    "customer_external_ref_length": "invalid_request",
    "journal_reference_length": "invalid_request",
    "journal_idempotency_key_length": "invalid_request",
    "entry_amount_magnitude": "invalid_amount",
}


class LedgerError(DomainError):
    """A refused ledger operation; `code` is stable and machine-readable."""


translated = translator(
    LedgerError,
    SQLSTATE_CODES,
    CONSTRAINT_CODES,
    {"asset_exists": "an asset with this code exists"},
)
"""Re-raise the database's refusals of ledger rules as LedgerError."""
