"""One WebSocket client: its subscriptions and what each sends (protocol: docs/api.md).

Each subscription is a task that reads, by seq, what the hub keeps (or the table) and sends it:
no queue per client. A client that reads slowly only makes its tasks wait on their sends.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
import psycopg
from starlette.websockets import WebSocketDisconnect

from app.api.problems import Problem
from app.marketdata import messages, queries
from app.marketdata.feed import MarketHub, SymbolLog
from app.tenancy.keys import Principal
from app.trading.commands import SYMBOL_PATTERN, Instrument

log = logging.getLogger(__name__)

SUBSCRIPTIONS_MAX = 20
MESSAGE_LENGTH_MAX = 65_536
SEND_BATCH = 500  # messages taken from the history per look
# trades and executions: a client further behind than this many events is not replayed from
# the table; it gets a `reset` and continues live (its REST endpoints fill the gap).
REPLAY_EVENTS_MAX = 100_000
SEQ_MAX = 2**63 - 1
SYMBOL = re.compile(SYMBOL_PATTERN)
PRIVATE_SCOPE = "read"

Send = Callable[[str], Awaitable[None]]


class ClientGone(Exception):
    """The client cannot be sent to any more (it left, or reads too slowly)."""


class ClientError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _seq(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEQ_MAX:
        raise ClientError("invalid_since", f"{what} must be an integer seq >= 0")
    return value


class Session:
    def __init__(
        self,
        hub: MarketHub,
        principal: Principal,
        send: Send,
        on_failure: Callable[[], None],
    ) -> None:
        """`send` raises ClientGone when the client cannot be sent to; `on_failure` is called
        when a subscription fails unexpectedly (the connection should then be closed: its
        client would otherwise wait forever for that channel)."""
        self._hub = hub
        self._principal = principal
        self._send = send
        self._on_failure = on_failure
        self._subscriptions: dict[str, asyncio.Task[None]] = {}

    async def receive(self, text: str) -> None:
        """Handle one client message; a bad one gets an error message, not a disconnect."""
        channel = None
        try:
            if len(text) > MESSAGE_LENGTH_MAX:
                raise ClientError("invalid_message", f"at most {MESSAGE_LENGTH_MAX} characters")
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ClientError("invalid_message", "not JSON") from None
            if not isinstance(message, dict):
                raise ClientError("invalid_message", "a message is a JSON object")
            op = message.get("op")
            if op == "ping":
                await self._send(messages.control("pong"))
                return
            if op not in ("subscribe", "unsubscribe"):
                raise ClientError("invalid_message", "op is subscribe, unsubscribe or ping")
            channel = message.get("channel")
            if not isinstance(channel, str) or len(channel) > 64:
                channel = None
                raise ClientError("unknown_channel", "channel is a string such as book:BTC-USD")
            if op == "subscribe":
                await self._subscribe(channel, message.get("since"))
            else:
                await self._unsubscribe(channel)
        except ClientError as error:
            await self._send(
                messages.control("error", channel=channel, code=error.code, detail=error.detail)
            )

    def cancel(self) -> None:
        """End every subscription (the connection is over)."""
        for task in self._subscriptions.values():
            task.cancel()
        self._subscriptions.clear()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if isinstance(error, ClientGone | WebSocketDisconnect | OSError):
            log.debug("stream subscription ended: %r", error)  # the client went away
            return
        log.error("stream subscription failed", exc_info=error)
        self._on_failure()

    async def _unsubscribe(self, channel: str) -> None:
        task = self._subscriptions.pop(channel, None)
        if task is None:
            raise ClientError("not_subscribed", f"not subscribed to {channel}")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._send(messages.control("unsubscribed", channel=channel))

    async def _subscribe(self, channel: str, since: object) -> None:
        if channel in self._subscriptions:
            raise ClientError("already_subscribed", f"already subscribed to {channel}")
        if len(self._subscriptions) >= SUBSCRIPTIONS_MAX:
            raise ClientError(
                "too_many_subscriptions", f"at most {SUBSCRIPTIONS_MAX} subscriptions"
            )
        # The answer goes out before the task starts, so it precedes the channel's messages
        # and the answers to later requests.
        if channel == "executions":
            cursors = await self._executions_cursors(since)
            work = self._executions(cast(int, self._principal.tenant_id), cursors)
            answer = messages.control("subscribed", channel=channel, since=cursors)
        else:
            kind, _, symbol = channel.partition(":")
            if kind not in ("book", "trades"):
                raise ClientError(
                    "unknown_channel", "channels: book:SYMBOL, trades:SYMBOL, executions"
                )
            instrument = await self._instrument(symbol)
            cursor = None if since is None else _seq(since, "since")
            if cursor is not None:
                await self._check_not_ahead(symbol, cursor)
            followed = await self._hub.follow(instrument)
            if kind == "book":
                # resumable only while every event after since is kept; else a snapshot
                if cursor is not None and not followed.kept_after(cursor):
                    cursor = None
                work = self._book(followed, cursor)
            else:
                cursor = followed.seq if cursor is None else cursor
                work = self._trades(channel, followed, cursor)
            answer = messages.control("subscribed", channel=channel, seq=cursor)
        try:
            await self._send(answer)
        except BaseException:
            work.close()  # never started
            raise
        task = asyncio.create_task(work)
        task.add_done_callback(self._ended)
        self._subscriptions[channel] = task

    async def _instrument(self, symbol: str) -> Instrument:
        if not SYMBOL.fullmatch(symbol):
            raise ClientError("unknown_instrument", f"unknown instrument {symbol}")
        try:
            return await self._hub.instrument(symbol)
        except Problem as problem:
            raise ClientError(problem.code, problem.detail) from None

    async def _check_not_ahead(self, symbol: str, since: int) -> None:
        """A since beyond the instrument's last seq never happened (this process's heads may
        lag the table by a doorbell: ask the table before refusing)."""
        if since <= self._hub.heads.get(symbol, -1):
            return
        head = await self._hub.read(None, lambda c: queries.instrument_seq(c, symbol))
        if since > head:
            raise ClientError("invalid_since", f"{symbol} is at seq {head}, not at {since}")

    # -- book ---------------------------------------------------------------------------------

    async def _book(self, followed: SymbolLog, cursor: int | None) -> None:
        """Deltas after `cursor` from the kept history (first a snapshot if None, or if the
        client fell behind what is kept); then every delta."""
        while True:
            deltas = None if cursor is None else followed.deltas_after(cursor, SEND_BATCH)
            if deltas is None:  # new, or fell behind what is kept: start again from the book
                cursor, text = followed.snapshot()
                await self._send(text)
                continue
            if not deltas:
                await self._hub.beacon.wait()
                continue
            for seq, text in deltas:
                await self._send(text)
                cursor = seq

    # -- trades -------------------------------------------------------------------------------

    async def _trades(self, channel: str, followed: SymbolLog, cursor: int) -> None:
        """Every event's trades after `cursor`, from the kept history or, further back, from
        the table."""
        while True:
            kept = followed.trades_after(cursor, SEND_BATCH)
            if kept is None:
                cursor = await self._trades_from_table(channel, followed, cursor)
                continue
            if not kept:
                await self._hub.beacon.wait()
                continue
            for seq, text in kept:
                if text is not None:
                    await self._send(text)
                cursor = seq

    async def _trades_from_table(self, channel: str, followed: SymbolLog, cursor: int) -> int:
        symbol = followed.symbol
        if followed.seq - cursor > REPLAY_EVENTS_MAX:
            await self._send(messages.control("reset", channel=channel, seq=followed.seq))
            return followed.seq
        events = await self._hub.read(None, lambda c: queries.events_after(c, symbol, cursor))
        for event in events:
            text = messages.trades(symbol, event, followed.format)
            if text is not None:
                await self._send(text)
            cursor = event.seq
        return cursor

    # -- executions ---------------------------------------------------------------------------

    async def _executions_cursors(self, since: object) -> dict[str, int]:
        """Where each instrument starts: `since`'s seq, else its last seq (live)."""
        principal = self._principal
        if principal.tenant_id is None or PRIVATE_SCOPE not in principal.scopes:
            raise ClientError("forbidden", "executions need a broker API key with scope 'read'")
        if since is not None and not isinstance(since, dict):
            raise ClientError("invalid_since", "since is an object {symbol: seq}")
        if since is not None and len(since) > 1000:
            raise ClientError("invalid_since", "since names at most 1000 instruments")
        heads = await self._hub.current_heads()
        cursors: dict[str, int] = dict(heads)  # default: from now on
        for symbol, seq in (since or {}).items():
            await self._instrument(symbol)
            cursors[symbol] = _seq(seq, f"since[{symbol}]")
            await self._check_not_ahead(symbol, cursors[symbol])
        return cursors

    async def _executions(self, tenant_id: int, cursors: dict[str, int]) -> None:
        """This tenant's events of every instrument, each instrument in seq order. There is no
        shared history for them (they are per tenant): each is read from the table, acting for
        the tenant, when the instrument's head moves past its cursor."""
        hub = self._hub
        while True:
            # an instrument created after the subscription: all of its events are new
            due = [s for s, head in hub.heads.items() if head > cursors.setdefault(s, 0)]
            if not due:
                await hub.beacon.wait()
                continue
            for symbol in due:
                cursors[symbol] = await self._executions_of(tenant_id, symbol, cursors[symbol])

    async def _executions_of(self, tenant_id: int, symbol: str, cursor: int) -> int:
        head = self._hub.heads[symbol]
        if head - cursor > REPLAY_EVENTS_MAX:
            await self._send(
                messages.control("reset", channel="executions", symbol=symbol, seq=head)
            )
            return head

        def read(conn: psycopg.Connection) -> tuple[Instrument, list[queries.Event], int]:
            instrument = self._hub.instrument_blocking(symbol)
            return (instrument, *queries.executions_after(conn, symbol, cursor))

        instrument, events, complete_to = await self._hub.read(tenant_id, read)
        for event in events:
            await self._send(messages.execution(instrument, event))
        return complete_to
