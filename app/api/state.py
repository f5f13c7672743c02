"""What every request shares: settings, the connection pool, order entry, rate limits, caches;
and the unit of work, the one place where a request's transaction commits."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import orjson
import psycopg
from fastapi import Request
from fastapi.responses import Response
from psycopg_pool import ConnectionPool

from app.api.gateway import OrderGateway
from app.api.problems import Problem
from app.api.ratelimit import RateLimiter
from app.api.security import KeyCache
from app.api.settings import ApiSettings
from app.db import run_transaction
from app.tenancy.context import act_for
from app.trading import instruments
from app.trading.commands import Instrument
from app.trading.errors import TradingError

T = TypeVar("T")


@dataclass
class InstrumentCache:
    """Instruments by symbol. Their parameters never change (only their status, which is never
    read from here), so a cached instrument stays right; an unknown symbol is looked up again."""

    pool: ConnectionPool
    _known: dict[str, Instrument] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, symbol: str) -> Instrument | None:
        """The instrument if known already, without any I/O (for the event loop)."""
        return self._known.get(symbol)

    def get(self, symbol: str) -> Instrument:
        found = self._known.get(symbol)
        if found is not None:
            return found
        try:
            with self.pool.connection() as conn:
                found = instruments.get_instrument(conn, symbol)
        except TradingError:
            raise Problem(404, "unknown_instrument", f"unknown instrument {symbol}") from None
        with self._lock:
            self._known[symbol] = found
        return found


@dataclass(frozen=True)
class OrderKey:
    """What the engine names an order by, and whose it is."""

    tenant_id: int
    account: int
    client_order_id: str
    symbol: str


@dataclass
class OrderKeys:
    """Order ids to their keys, for the orders this process placed or looked up, the newest
    `capacity`. A key never changes (an order's account, client_order_id and instrument are
    immutable, and so is an account's tenant: triggers enforce it), so an entry stays right; one
    this process never saw is looked up again."""

    capacity: int = 20_000  # about 7 MB; a miss costs one look-up
    _keys: OrderedDict[int, OrderKey] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, tenant_id: int, order_id: int) -> OrderKey | None:
        """The key if known and the order is `tenant_id`'s; None otherwise (look it up, under
        row security, to tell an unknown order from another tenant's: both are 404)."""
        with self._lock:
            key = self._keys.get(order_id)
        return key if key is not None and key.tenant_id == tenant_id else None

    def put(self, order_id: int, key: OrderKey) -> None:
        with self._lock:
            self._keys[order_id] = key
            self._keys.move_to_end(order_id)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)


@dataclass
class ExchangeState:
    settings: ApiSettings
    pool: ConnectionPool
    gateway: OrderGateway
    limiter: RateLimiter
    key_cache: KeyCache
    instruments: InstrumentCache
    order_keys: OrderKeys

    def run(
        self,
        tenant_id: int | None,
        work: Callable[[psycopg.Connection], T],
        *,
        isolation: psycopg.IsolationLevel = psycopg.IsolationLevel.READ_COMMITTED,
    ) -> T:
        """`work` in one transaction acting for `tenant_id` (SET LOCAL, so the pooled
        connection's next borrower starts with no tenant), committed here, retried on
        deadlock or serialization failure. With tenant_id None the transaction acts for no
        tenant: row security shows it no tenant's rows."""

        def unit(conn: psycopg.Connection) -> T:
            if tenant_id is not None:
                act_for(conn, tenant_id)
            return work(conn)

        with self.pool.connection() as conn:
            return run_transaction(conn, unit, isolation=isolation)


async def exchange(request: Request) -> ExchangeState:
    # async: no I/O, so no thread hop (FastAPI runs a plain `def` dependency in its pool).
    state: ExchangeState = request.app.state.exchange
    return state


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # positional: never "0E-8"
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_response(
    data: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """JSON with decimals as strings (never floats), datetimes in ISO 8601."""
    return Response(
        orjson.dumps(data, default=_default),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
