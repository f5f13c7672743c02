"""Order entry's path to the engine: commands that arrive close together become one engine call.

Each instrument has a lane: a bounded queue and one thread. The thread takes the first waiting
command and whatever else arrives within `window_seconds`, waits for its turn on the instrument
(the instrument's lock, which another process's lane may hold), then adds what arrived while it
waited (up to `batch_size_max` in all), and applies them with one `trading.execute` call acting
for each command's tenant. Every request waits for its own result, which exists only once the
batch has committed durably: a 2xx answer is never given for a command that could still be lost.
Commands of one instrument keep their arrival order; instruments run in parallel.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from app.api.problems import Problem
from app.db import run_transaction
from app.trading import engine
from app.trading.commands import BATCH_SIZE_MAX, Command, Result

SUBMIT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class _Request:
    command: Command
    tenant_id: int
    result: Future[Result]


class _Lane:
    def __init__(self, gateway: OrderGateway, symbol: str) -> None:
        self.symbol = symbol
        self.queue: queue.Queue[_Request | None] = queue.Queue(gateway.queue_max)
        self._gateway = gateway
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=f"order-lane-{symbol}", daemon=True)
        self.thread.start()

    def _gather(self, batch: list[_Request], timeout: float) -> None:
        """Adds to `batch` what arrives within `timeout` seconds, up to the batch size."""
        deadline = time.monotonic() + timeout
        while len(batch) < self._gateway.batch_size_max:
            try:
                left = deadline - time.monotonic()
                item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                return
            if item is None:  # the gateway is closing: this batch is the last
                self._stopping = True
                return
            batch.append(item)

    def _run(self) -> None:
        while not self._stopping:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            self._gather(batch, self._gateway.window_seconds)
            try:
                self._apply(batch)
            except BaseException as error:  # never let the lane die with requests waiting
                for request in batch:
                    if not request.result.done():
                        request.result.set_exception(error)

    def _apply(self, batch: list[_Request]) -> None:
        """Applies `batch`, and what joins it while it waits for its turn on the instrument."""

        def attempt(conn: psycopg.Connection) -> list[dict[str, Any]]:
            engine.await_turn(conn, self.symbol)
            self._gather(batch, 0)
            return engine.call(
                conn, self.symbol, [r.command for r in batch], tenants=[r.tenant_id for r in batch]
            )

        try:
            with self._gateway.pool.connection() as conn:
                answers = run_transaction(conn, attempt, isolation=engine.ENGINE_ISOLATION)
            results = [engine.result_from_json(answer) for answer in answers]
        except Exception as error:  # the whole batch failed: every request hears why
            for request in batch:
                request.result.set_exception(error)
            return
        for request, result in zip(batch, results, strict=True):
            request.result.set_result(result)


def _outcome_unknown() -> Problem:
    # The command is queued and may still commit: the client must not assume either way, and a
    # resend with the same client_order_id returns the order if it did.
    return Problem(
        503,
        "outcome_unknown",
        "no answer in time; the command may still be applied: resend it unchanged (same"
        " client_order_id) to learn its outcome",
        {"Retry-After": "1"},
    )


class OrderGateway:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        window_seconds: float,
        batch_size_max: int,
        queue_max: int,
    ) -> None:
        if not 1 <= batch_size_max <= BATCH_SIZE_MAX:
            raise ValueError(f"batch_size_max must be 1 to {BATCH_SIZE_MAX}")
        self.pool = pool
        self.window_seconds = window_seconds
        self.batch_size_max = batch_size_max
        self.queue_max = queue_max
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, symbol: str, command: Command, tenant_id: int) -> Result:
        """Apply `command` for `tenant_id` and return its result once committed. The symbol must
        be a known instrument (lanes are never removed)."""
        try:
            return self._enqueue(symbol, command, tenant_id).result(timeout=SUBMIT_TIMEOUT_SECONDS)
        except TimeoutError:
            raise _outcome_unknown() from None

    async def submit_async(self, symbol: str, command: Command, tenant_id: int) -> Result:
        """`submit` for the event loop: awaits the result instead of blocking a thread. The
        command is applied even if the caller stops waiting (shielded: a command queued is
        never withdrawn, as with `submit`)."""
        result = asyncio.wrap_future(self._enqueue(symbol, command, tenant_id))
        try:
            return await asyncio.wait_for(asyncio.shield(result), SUBMIT_TIMEOUT_SECONDS)
        except TimeoutError:
            raise _outcome_unknown() from None

    def _enqueue(self, symbol: str, command: Command, tenant_id: int) -> Future[Result]:
        request = _Request(command, tenant_id, Future())
        lane = self._lane(symbol)
        try:
            lane.queue.put_nowait(request)
        except queue.Full:
            raise Problem(
                503,
                "overloaded",
                f"order entry for {symbol} is saturated; retry shortly",
                {"Retry-After": "1"},
            ) from None
        return request.result

    def _lane(self, symbol: str) -> _Lane:
        if self._closed:
            raise Problem(503, "overloaded", "the server is shutting down", {"Retry-After": "1"})
        lane = self._lanes.get(symbol)
        if lane is not None:
            return lane
        with self._lock:
            if self._closed:
                raise Problem(
                    503, "overloaded", "the server is shutting down", {"Retry-After": "1"}
                )
            lane = self._lanes.get(symbol)
            if lane is None:
                lane = self._lanes[symbol] = _Lane(self, symbol)
        return lane

    def close(self) -> None:
        """Finish what is queued, then stop the lanes."""
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.queue.put(None)
        for lane in lanes:
            lane.thread.join()
