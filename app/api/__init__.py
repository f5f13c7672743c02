"""The HTTP API (FastAPI): a router per concern, one connection pool, order entry batched per
instrument. Docs: docs/api.md; the OpenAPI document is served at /openapi.json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

from app.api import problems
from app.api.gateway import OrderGateway
from app.api.ratelimit import RateLimiter
from app.api.security import KeyCache
from app.api.settings import ApiSettings
from app.api.state import ExchangeState, InstrumentCache, OrderKeys

HEALTH_TIMEOUT_SECONDS = 2.0
# A transaction left open on a pooled connection would hold its locks (an instrument's, an
# account's) for as long as it stays open; the server ends such sessions.
CONNECTION_OPTIONS = "-c idle_in_transaction_session_timeout=10s"


def create_app(database_url: str, settings: ApiSettings | None = None) -> FastAPI:
    """The application, with a connection pool to `database_url` for its lifetime."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=settings.pool_size_max,
            kwargs={"options": CONNECTION_OPTIONS},
            open=False,
        )
        pool.open(wait=False)  # start even while the database is down; /health says so
        gateway = OrderGateway(
            pool,
            window_seconds=settings.batch_window_seconds,
            batch_size_max=settings.batch_size_max,
            queue_max=settings.queue_max,
        )
        app.state.exchange = ExchangeState(
            settings=settings,
            pool=pool,
            gateway=gateway,
            limiter=RateLimiter(settings.order_rate_per_second, settings.order_burst),
            key_cache=KeyCache(settings.key_cache_seconds),
            instruments=InstrumentCache(pool),
            order_keys=OrderKeys(),
        )
        try:
            yield
        finally:
            gateway.close()
            pool.close()

    app = FastAPI(
        title="Exchange",
        version="0.1.0",
        description="Broker API of a PostgreSQL-centric, ledger-first exchange. See docs/api.md.",
        lifespan=lifespan,
    )
    problems.install(app)
    _include_routers(app)

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        """Liveness and database reachability, for load balancers and container health checks."""
        try:
            with app.state.exchange.pool.connection(timeout=HEALTH_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout):
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


def _include_routers(app: FastAPI) -> None:
    import importlib
    import pkgutil

    from app.api import routers

    # Every module of app.api.routers with a `router` is part of the API.
    for module_info in sorted(pkgutil.iter_modules(routers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{routers.__name__}.{module_info.name}")
        if hasattr(module, "router"):
            app.include_router(module.router, responses=problems.OPENAPI_RESPONSES)
