"""Authentication (`Authorization: Bearer <key>`) and scopes.

Operators present EXCHANGE_ADMIN_TOKEN or an admin key; brokers present their API keys. A key
that authenticated is trusted for `key_cache_seconds` before it is looked up again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.api.problems import Problem
from app.tenancy import keys
from app.tenancy.keys import ADMIN_SCOPE, Principal

bearer = HTTPBearer(auto_error=False, description="An API key, or the operators' admin token.")

OPERATOR = Principal(key_id=None, tenant_id=None, scopes=frozenset({ADMIN_SCOPE}))
KEY_CACHE_MAX = 10_000
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class KeyCache:
    """Recently authenticated keys, by the SHA-256 of the presented key."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or self._clock() - entry[1] > self._seconds:
            return None
        return entry[0]

    def put(self, digest: bytes, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= KEY_CACHE_MAX:
                self._entries.clear()
            self._entries[digest] = (principal, self._clock())


def _known_without_io(request: Request, token: str) -> Principal | None:
    """The principal of the admin token or of a recently checked key; None: look the key up."""
    exchange = request.app.state.exchange
    if keys.admin_token_matches(token, exchange.settings.admin_token):
        return OPERATOR
    principal: Principal | None = exchange.key_cache.get(hashlib.sha256(token.encode()).digest())
    return principal


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "unauthenticated", "send Authorization: Bearer <API key>", CHALLENGE)
    return credentials.credentials


def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    token = _bearer_token(credentials)
    principal = _known_without_io(request, token)
    if principal is not None:
        return principal
    exchange = request.app.state.exchange
    with exchange.pool.connection() as conn:
        principal = keys.authenticate(conn, token)
    if principal is None:
        raise Problem(401, "invalid_api_key", "the API key is unknown or revoked", CHALLENGE)
    exchange.key_cache.put(hashlib.sha256(token.encode()).digest(), principal)
    return principal


async def authenticated_on_loop(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """`authenticated`, answered on the event loop when no I/O is needed (the admin token, a
    cached key); only a key to look up goes to a thread. FastAPI runs each plain `def`
    dependency in its thread pool, which costs a thread hop per dependency per request."""
    principal = _known_without_io(request, _bearer_token(credentials))
    if principal is not None:
        return principal
    return await run_in_threadpool(authenticated, request, credentials)


def require(scope: str) -> Callable[..., Principal]:
    """A dependency admitting broker keys with `scope` (or, for 'admin', operators only)."""

    async def check(principal: Annotated[Principal, Depends(authenticated_on_loop)]) -> Principal:
        if scope == ADMIN_SCOPE:
            if not principal.is_admin:
                raise Problem(403, "forbidden", "this endpoint is for operators")
        elif principal.is_admin or scope not in principal.scopes:
            raise Problem(403, "forbidden", f"this API key lacks the scope '{scope}'")
        return principal

    return check


async def any_key(principal: Annotated[Principal, Depends(authenticated_on_loop)]) -> Principal:
    """Any valid key or the admin token (market data is for everyone who may connect)."""
    return principal
