"""Brokers' accounts (the ledger's customers), deposits, withdrawals, balances and statements."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, Query, Response
from psycopg.rows import dict_row
from pydantic import BaseModel, StringConstraints

from app.api.problems import Problem
from app.api.schemas import (
    ASSET_CODE_PATTERN,
    AssetCode,
    Body,
    Cursor,
    DecimalString,
    IdPath,
    Limit,
    Page,
    Text,
    decimal_text,
    page,
)
from app.api.security import require
from app.api.state import ExchangeState, exchange, json_response
from app.ledger import service
from app.tenancy.keys import Principal

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
Reader = Annotated[Principal, Depends(require("read"))]
Trader = Annotated[Principal, Depends(require("trade"))]
Mover = Annotated[Principal, Depends(require("transfer"))]
State = Annotated[ExchangeState, Depends(exchange)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Chosen by the client; a retry with the same key returns the first answer.",
    ),
]


class NewAccount(Body):
    external_ref: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


class AccountOut(BaseModel):
    id: int
    external_ref: str
    created_at: datetime


class Movement(Body):
    asset: AssetCode
    amount: DecimalString


class MovementOut(BaseModel):
    journal_id: int
    asset: str
    amount: str


class BalanceOut(BaseModel):
    asset: str
    available: str
    held: str
    total: str


class EntryOut(BaseModel):
    id: int
    journal_id: int
    kind: str
    reference: str | None
    asset: str
    bucket: str
    amount: str
    balance_after: str
    created_at: datetime


def _account(conn: psycopg.Connection, account_id: int) -> dict[str, Any]:
    """The account if the acting tenant owns it (row security hides the others): else 404."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, external_ref, created_at FROM ledger.customer WHERE id = %s",
            (account_id,),
        ).fetchone()
    if row is None:
        raise Problem(404, "unknown_account", f"no account {account_id}")
    return row


@router.post("", status_code=201, response_model=AccountOut)
def create_account(body: NewAccount, principal: Trader, state: State) -> Response:
    def create(conn: psycopg.Connection) -> dict[str, Any]:
        return _account(conn, service.create_customer(conn, body.external_ref))

    return json_response(state.run(principal.tenant_id, create), 201)


@router.get("", response_model=Page[AccountOut])
def list_accounts(
    principal: Reader, state: State, cursor: Cursor = None, limit: Limit = 100
) -> Response:
    def query(conn: psycopg.Connection) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT id, external_ref, created_at FROM ledger.customer"
                " WHERE id > %s ORDER BY id LIMIT %s",
                (int(cursor or 0), limit + 1),
            ).fetchall()

    return json_response(page(state.run(principal.tenant_id, query), limit))


@router.get("/{account_id}", response_model=AccountOut)
def get_account(account_id: IdPath, principal: Reader, state: State) -> Response:
    return json_response(state.run(principal.tenant_id, lambda conn: _account(conn, account_id)))


def _movement(kind: str) -> Any:
    operation = service.deposit if kind == "deposit" else service.withdraw

    def move(
        account_id: IdPath,
        body: Movement,
        principal: Mover,
        state: State,
        idempotency_key: IdempotencyKey,
    ) -> Response:
        def post(conn: psycopg.Connection) -> tuple[int, bool, str, str]:
            _account(conn, account_id)
            journal_id = operation(conn, account_id, body.asset, body.amount, idempotency_key)
            # The journal is new if this transaction wrote it; a retry (even one that waited
            # for a concurrent first attempt with the same key) finds an older one.
            row = conn.execute(
                """
                SELECT j.xmin = pg_current_xact_id()::xid, e.asset, abs(e.amount)::text
                  FROM ledger.journal j JOIN ledger.entry e ON e.journal_id = j.id
                  JOIN ledger.account a ON a.id = e.account_id
                 WHERE j.id = %s AND a.customer_id = %s
                """,
                (journal_id, account_id),
            ).fetchone()
            assert row is not None
            return journal_id, bool(row[0]), row[1], row[2]

        journal_id, created, asset, amount = state.run(principal.tenant_id, post)
        return json_response(
            {"journal_id": journal_id, "asset": asset, "amount": amount}, 201 if created else 200
        )

    move.__name__ = kind
    move.__doc__ = (
        f"A {kind}. The same Idempotency-Key again returns the first answer (200); with another"
        " body it is refused (409 idempotency_key_reused)."
    )
    return move


for _kind, _path in (("deposit", "deposits"), ("withdrawal", "withdrawals")):
    router.add_api_route(
        f"/{{account_id}}/{_path}",
        _movement(_kind),
        methods=["POST"],
        status_code=201,
        response_model=MovementOut,
        responses={200: {"model": MovementOut, "description": "A retry: the first answer."}},
    )


@router.get("/{account_id}/balances", response_model=list[BalanceOut])
def balances(account_id: IdPath, principal: Reader, state: State) -> Response:
    def query(conn: psycopg.Connection) -> list[dict[str, str]]:
        _account(conn, account_id)
        return [
            {
                "asset": b.asset,
                "available": decimal_text(b.available),
                "held": decimal_text(b.held),
                "total": decimal_text(b.total),
            }
            for b in service.balances(conn, account_id)
        ]

    return json_response(state.run(principal.tenant_id, query))


@router.get("/{account_id}/ledger", response_model=Page[EntryOut])
def ledger_statement(
    account_id: IdPath,
    principal: Reader,
    state: State,
    asset: Annotated[str | None, Query(pattern=ASSET_CODE_PATTERN)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The account's entries, newest first, each with the balance of its bucket after it."""

    def query(conn: psycopg.Connection) -> list[dict[str, Any]]:
        _account(conn, account_id)
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """
                SELECT e.id, e.journal_id, j.kind, j.reference, e.asset, a.bucket,
                       e.amount::text AS amount, e.balance_after::text AS balance_after,
                       j.created_at
                  FROM ledger.entry e
                  JOIN ledger.account a ON a.id = e.account_id
                  JOIN ledger.journal j ON j.id = e.journal_id
                 WHERE a.customer_id = %(account)s
                   AND (%(asset)s::text IS NULL OR e.asset = %(asset)s)
                   AND (%(cursor)s::bigint IS NULL OR e.id < %(cursor)s)
                 ORDER BY e.id DESC
                 LIMIT %(limit)s
                """,
                {
                    "account": account_id,
                    "asset": asset,
                    "cursor": int(cursor) if cursor else None,
                    "limit": limit + 1,
                },
            ).fetchall()

    return json_response(page(state.run(principal.tenant_id, query), limit))
