"""The stream server's view of the market: one `MarketHub` per API process.

The event table is the truth; NOTIFY only rings the doorbell. A listener on its own connection
(not from the pool: LISTEN is session state) re-reads every instrument's last seq whenever a
NOTIFY arrives and at least every `poll_seconds`, so a lost notification only delays. Each
instrument that someone subscribed to is followed by one task: a book snapshot at a seq (one
REPEATABLE READ read), then every later event in seq order, from which it keeps the book and the
serialized messages of the last `history_max` events. Subscribers read those by seq, so they
never share a queue: a slow one only falls behind (and then gets a snapshot, or reads from the
table), and memory stays bounded. Several API processes each do all of this on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psycopg

from app.marketdata import messages, queries
from app.marketdata.book import BookState
from app.marketdata.queries import BookSnapshot, Event, Format
from app.trading.commands import Instrument

log = logging.getLogger(__name__)

T = TypeVar("T")

HISTORY_EVENTS = 10_000  # per instrument: how far back a reconnecting client can resume a book
POLL_SECONDS = 1.0
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
CHANNEL = "exchange_events"
REPEATABLE_READ = psycopg.IsolationLevel.REPEATABLE_READ


class Runner(Protocol):
    """ExchangeState.run: `work(conn)` in one transaction, acting for `tenant_id`."""

    def __call__(
        self,
        tenant_id: int | None,
        work: Callable[[psycopg.Connection], T],
        *,
        isolation: psycopg.IsolationLevel = ...,
    ) -> T: ...


class Beacon:
    """Wakes every waiter at once. A waiter checks its condition, then waits, with no await in
    between, so no ring is lost (one event loop thread)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class SymbolLog:
    """One followed instrument: its book at `seq` and the messages of events first..seq."""

    def __init__(self, instrument: Instrument, history_max: int) -> None:
        self.symbol = instrument.symbol
        self.format = Format.of(instrument)
        self.ready = False
        self.seq = 0
        self.first = 1  # the oldest event whose messages are kept
        self._history_max = history_max
        self._book = BookState()
        self._deltas: dict[int, str] = {}
        self._trades: dict[int, str | None] = {}
        self._snapshot: tuple[int, str] | None = None

    def reset(self, snapshot: BookSnapshot) -> None:
        self._book = BookState(snapshot.orders)
        self._snapshot = None
        self.seq = snapshot.seq
        self.first = snapshot.seq + 1
        self._deltas.clear()
        self._trades.clear()
        self.ready = True

    def append(self, event: Event) -> None:
        if event.seq != self.seq + 1:
            raise RuntimeError(f"{self.symbol}: event {event.seq} after {self.seq}")
        delta = self._book.apply(event.orders)
        self.seq = event.seq
        self._deltas[event.seq] = messages.book(self.symbol, "delta", event.seq, delta, self.format)
        self._trades[event.seq] = messages.trades(self.symbol, event, self.format)
        while len(self._deltas) > self._history_max:
            del self._deltas[self.first]
            del self._trades[self.first]
            self.first += 1

    def kept_after(self, cursor: int) -> bool:
        """Whether every event after `cursor` is kept (or still to come)."""
        return cursor >= self.first - 1

    def deltas_after(self, cursor: int, limit: int) -> list[tuple[int, str]] | None:
        """Up to `limit` (seq, delta message) after `cursor`; None if some are no longer kept."""
        if not self.kept_after(cursor):
            return None
        return [(s, self._deltas[s]) for s in range(cursor + 1, min(self.seq, cursor + limit) + 1)]

    def trades_after(self, cursor: int, limit: int) -> list[tuple[int, str | None]] | None:
        if not self.kept_after(cursor):
            return None
        return [(s, self._trades[s]) for s in range(cursor + 1, min(self.seq, cursor + limit) + 1)]

    def snapshot(self) -> tuple[int, str]:
        """The whole book as a snapshot message, and its seq (made once per seq: clients that
        (re)connect together share it)."""
        if self._snapshot is None or self._snapshot[0] != self.seq:
            levels = self._book.levels()
            text = messages.book(self.symbol, "snapshot", self.seq, levels, self.format)
            self._snapshot = (self.seq, text)
        return self._snapshot


class MarketHub:
    def __init__(
        self,
        conninfo: str,
        run: Runner,
        instrument: Callable[[str], Instrument],
        *,
        history_max: int = HISTORY_EVENTS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._conninfo = conninfo
        self._run = run
        self._instrument = instrument
        self._history_max = history_max
        self._poll_seconds = poll_seconds
        self.heads: dict[str, int] = {}  # each instrument's last seq, as last read
        self.beacon = Beacon()  # rung when heads move or a followed book advances
        self._heads_read = asyncio.Event()
        self._logs: dict[str, SymbolLog] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None

    # -- reads, off the event loop ------------------------------------------------------------

    async def read(
        self,
        tenant_id: int | None,
        work: Callable[[psycopg.Connection], T],
        isolation: psycopg.IsolationLevel = REPEATABLE_READ,
    ) -> T:
        """`work` in a pooled transaction, in a thread; retried (with backoff) while the
        database is unreachable, so a stream waits out an outage instead of failing."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await asyncio.to_thread(self._run, tenant_id, work, isolation=isolation)
            except (psycopg.OperationalError, OSError) as error:
                log.warning("market data read failed (%s); retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def instrument(self, symbol: str) -> Instrument:
        """The instrument (raises the API's 404 Problem for an unknown symbol)."""
        return await asyncio.to_thread(self._instrument, symbol)

    def instrument_blocking(self, symbol: str) -> Instrument:
        """The same, from a thread (instruments are cached, so this rarely reads)."""
        return self._instrument(symbol)

    # -- following ----------------------------------------------------------------------------

    async def current_heads(self) -> dict[str, int]:
        """Every instrument's last seq, once the listener has read them."""
        self._start()
        await self._heads_read.wait()
        return self.heads

    async def follow(self, instrument: Instrument) -> SymbolLog:
        """The instrument's log, followed from now on, once it has its first snapshot."""
        self._start()
        followed = self._logs.get(instrument.symbol)
        if followed is None:
            followed = self._logs[instrument.symbol] = SymbolLog(instrument, self._history_max)
            self._tasks.append(asyncio.create_task(self._follow(followed)))
        while not followed.ready:
            await self.beacon.wait()
        return followed

    def _start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    # LISTEN before reading: whatever commits after the read rings.
                    await conn.execute(f"LISTEN {CHANNEL}")
                    while True:
                        cursor = await conn.execute("SELECT symbol, seq FROM trading.instrument")
                        self._update_heads(await cursor.fetchall())
                        delay = RETRY_FIRST_SECONDS
                        async for _ in conn.notifies(timeout=self._poll_seconds, stop_after=1):
                            pass  # any doorbell: re-read all heads (one cheap query)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("market data listener failed (%s); retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _update_heads(self, rows: list[tuple[Any, ...]]) -> None:
        changed = False
        for symbol, seq in rows:
            if self.heads.get(symbol) != seq:
                self.heads[symbol] = int(seq)
                changed = True
        self._heads_read.set()
        if changed:
            self.beacon.ring()

    async def _follow(self, followed: SymbolLog) -> None:
        symbol = followed.symbol
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                if not followed.ready:
                    snapshot = await self.read(None, lambda c: queries.book_snapshot(c, symbol))
                    followed.reset(snapshot)
                    self.beacon.ring()
                while self.heads.get(symbol, 0) <= followed.seq:
                    await self.beacon.wait()
                events = await self.read(
                    None, lambda c: queries.events_after(c, symbol, followed.seq)
                )
                try:
                    for event in events:
                        followed.append(event)
                finally:
                    if events:
                        self.beacon.ring()
                delay = RETRY_FIRST_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never expected (seqs are gap-free): start again from a fresh snapshot, which
                # sends subscribers that fall out of the kept history a snapshot too.
                log.exception("following %s failed; taking a new snapshot", symbol)
                followed.ready = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
