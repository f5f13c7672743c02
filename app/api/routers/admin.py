"""Operators: tenants, API keys, assets, instruments (admin token or admin key)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, StringConstraints

from app.api.problems import Problem
from app.api.schemas import (
    SYMBOL_PATTERN,
    AssetCode,
    Body,
    DecimalString,
    IdPath,
    Symbol,
    Text,
    decimal_text,
)
from app.api.security import require
from app.api.state import ExchangeState, exchange, json_response
from app.ledger import service
from app.tenancy import keys
from app.tenancy.keys import ADMIN_SCOPE, Principal
from app.trading import instruments
from app.trading.commands import Instrument

router = APIRouter(prefix="/v1/admin", tags=["operators"])
Operator = Annotated[Principal, Depends(require(ADMIN_SCOPE))]
State = Annotated[ExchangeState, Depends(exchange)]


class NewTenant(Body):
    name: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


class TenantOut(BaseModel):
    id: int
    name: str


class NewApiKey(Body):
    scopes: list[Literal["read", "trade", "transfer"]] = Field(min_length=1, max_length=3)


class ApiKeyOut(BaseModel):
    id: int
    key: str = Field(description="Shown once: only its hash is stored.")
    scopes: list[str]


class NewAsset(Body):
    code: AssetCode
    scale: int = Field(ge=0, le=18)


class AssetOut(BaseModel):
    code: str
    scale: int


class NewInstrument(Body):
    symbol: Symbol
    base: AssetCode
    quote: AssetCode
    tick_size: DecimalString
    lot_size: DecimalString
    min_quantity: DecimalString = Decimal(0)
    min_notional: DecimalString = Decimal(0)
    maker_fee_rate: DecimalString = Decimal(0)
    taker_fee_rate: DecimalString = Decimal(0)


class InstrumentStatus(Body):
    status: Literal["trading", "halted"]


class InstrumentOut(BaseModel):
    symbol: str
    base: str
    quote: str
    base_scale: int
    quote_scale: int
    tick_size: str
    lot_size: str
    min_quantity: str
    min_notional: str
    maker_fee_rate: str
    taker_fee_rate: str
    status: Literal["trading", "halted"]


def instrument_json(i: Instrument) -> dict[str, object]:
    return {
        "symbol": i.symbol,
        "base": i.base,
        "quote": i.quote,
        "base_scale": i.base_scale,
        "quote_scale": i.quote_scale,
        "tick_size": decimal_text(i.tick_size),
        "lot_size": decimal_text(i.lot_size),
        "min_quantity": decimal_text(i.min_quantity),
        "min_notional": decimal_text(i.min_notional),
        "maker_fee_rate": decimal_text(i.maker_fee_rate),
        "taker_fee_rate": decimal_text(i.taker_fee_rate),
        "status": i.status,
    }


@router.post("/tenants", status_code=201, response_model=TenantOut)
def create_tenant(body: NewTenant, operator: Operator, state: State) -> Response:
    tenant_id = state.run(None, lambda conn: keys.create_tenant(conn, body.name))
    return json_response({"id": tenant_id, "name": body.name}, 201)


@router.post("/tenants/{tenant_id}/api-keys", status_code=201, response_model=ApiKeyOut)
def create_api_key(
    tenant_id: IdPath, body: NewApiKey, operator: Operator, state: State
) -> Response:
    new = state.run(None, lambda conn: keys.create_key(conn, tenant_id, list(body.scopes)))
    return json_response({"id": new.id, "key": new.key, "scopes": list(new.scopes)}, 201)


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: IdPath, operator: Operator, state: State) -> Response:
    """Revoke a key. It stops working at once in the database, and within the API's key cache
    time (a few seconds) in every API process."""
    state.run(None, lambda conn: keys.revoke_key(conn, key_id))
    return Response(status_code=204)


@router.post("/assets", status_code=201, response_model=AssetOut)
def create_asset(body: NewAsset, operator: Operator, state: State) -> Response:
    def create(conn: psycopg.Connection) -> None:
        service.create_asset(conn, body.code, body.scale)

    state.run(None, create)
    return json_response({"code": body.code, "scale": body.scale}, 201)


@router.post("/instruments", status_code=201, response_model=InstrumentOut)
def create_instrument(body: NewInstrument, operator: Operator, state: State) -> Response:
    if body.symbol != f"{body.base}-{body.quote}":
        raise Problem(400, "invalid_request", "symbol must be BASE-QUOTE of base and quote")
    created = state.run(
        None,
        lambda conn: instruments.create_instrument(
            conn,
            body.base,
            body.quote,
            tick_size=body.tick_size,
            lot_size=body.lot_size,
            min_quantity=body.min_quantity,
            min_notional=body.min_notional,
            maker_fee_rate=body.maker_fee_rate,
            taker_fee_rate=body.taker_fee_rate,
        ),
    )
    return json_response(instrument_json(created), 201)


@router.patch("/instruments/{symbol}", response_model=InstrumentOut)
def set_instrument_status(
    symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN)],
    body: InstrumentStatus,
    operator: Operator,
    state: State,
) -> Response:
    changed = state.run(None, lambda conn: instruments.set_status(conn, symbol, body.status))
    return json_response(instrument_json(changed))
