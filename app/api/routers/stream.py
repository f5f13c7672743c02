"""WS /v1/stream: the book, trades and executions channels (protocol: docs/api.md).

The handshake authenticates with `Authorization: Bearer <key>` like every endpoint; a refused
handshake gets the same 401 problem as HTTP (or, where the server cannot send an HTTP answer to
a WebSocket handshake, a close with code 1008). What is sent comes from the process's MarketHub
(app.marketdata.feed), started with the app and stopped before its connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials

from app.api.problems import Problem, problem_response
from app.api.security import authenticated
from app.api.state import ExchangeState
from app.marketdata import feed
from app.marketdata.feed import MarketHub
from app.marketdata.session import ClientGone, Session
from app.tenancy.keys import Principal

# A client that has not taken a message for this long is disconnected (1013, try again later):
# it would otherwise hold its subscriptions' tasks forever. It can reconnect and resume.
SEND_TIMEOUT_SECONDS = 30.0
CLOSE_TOO_SLOW = 1013
CLOSE_SERVER_ERROR = 1011
CLOSE_POLICY = 1008
KEY_CHECK_SECONDS_MIN = 0.1

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the application's lifespan, so the state (and its pool) exists already and
    # outlives the hub.
    state: ExchangeState = app.state.exchange
    hub = MarketHub(
        state.pool.conninfo,
        state.run,
        state.instruments.get,
        history_max=feed.HISTORY_EVENTS,
        poll_seconds=feed.POLL_SECONDS,
    )
    app.state.market_hub = hub
    try:
        yield
    finally:
        await hub.close()


router = APIRouter(tags=["streams"], lifespan=_lifespan)


async def _principal(websocket: WebSocket) -> Principal:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme and token.strip()
        else None
    )
    # The key lookup uses the (blocking) pool: off the event loop.
    return await asyncio.to_thread(authenticated, cast(Request, websocket), credentials)


async def _refuse(websocket: WebSocket, problem: Problem) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem_response(problem))
    else:
        await websocket.close(code=CLOSE_POLICY, reason=problem.detail[:120])


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    try:
        principal = await _principal(websocket)
    except Problem as problem:
        await _refuse(websocket, problem)
        return
    await websocket.accept()
    hub: MarketHub = websocket.app.state.market_hub
    send_lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()
    closed: list[int] = []  # the close code, once the server decided to close

    async def close(code: int) -> None:
        async with send_lock:
            with contextlib.suppress(Exception):  # the client may be gone already
                await websocket.close(code=code)

    def close_soon(code: int) -> None:
        # From a subscription's task: the close is sent by a task of its own, and the receive
        # loop below ends when the client (or the server, for a dead client) completes it.
        if not closed:
            closed.append(code)
            tasks.add(asyncio.create_task(close(code)))

    async def send(text: str) -> None:
        if closed:
            raise ClientGone()
        async with send_lock:  # subscriptions send concurrently; frames must not interleave
            try:
                await asyncio.wait_for(websocket.send_text(text), SEND_TIMEOUT_SECONDS)
            except TimeoutError:
                error: Exception | None = None
            except Exception as failure:  # disconnected (the server's error types vary)
                error = failure
            else:
                return
        close_soon(CLOSE_TOO_SLOW if error is None else CLOSE_SERVER_ERROR)
        raise ClientGone() from error

    session = Session(hub, principal, send, on_failure=lambda: close_soon(CLOSE_SERVER_ERROR))
    tasks.add(asyncio.create_task(_watch_key(websocket, close_soon)))
    try:
        await _receive_all(websocket, session)
    finally:
        # No await here: when the server cancels this handler, an await would be cancelled
        # again; cancelling the tasks is enough (they hold nothing but their place).
        session.cancel()
        for task in tasks:
            task.cancel()


async def _watch_key(websocket: WebSocket, close_soon: Callable[[int], None]) -> None:
    """A key revoked while its stream is open stops it, within the key cache time (as for
    HTTP requests): the connection is closed with 1008."""
    seconds = max(websocket.app.state.exchange.settings.key_cache_seconds, KEY_CHECK_SECONDS_MIN)
    while True:
        await asyncio.sleep(seconds)
        try:
            await _principal(websocket)
        except Problem:
            close_soon(CLOSE_POLICY)
            return
        except Exception as error:  # the database is unreachable: keep serving what we can
            log.warning("stream key check failed: %s", error)


async def _receive_all(websocket: WebSocket, session: Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        try:
            await session.receive(text)
        except ClientGone:
            return
