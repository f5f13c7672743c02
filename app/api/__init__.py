"""The HTTP API (FastAPI). Routers per concern arrive with the broker API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

HEALTH_TIMEOUT_SECONDS = 2.0


def create_app(database_url: str) -> FastAPI:
    """The application, with a connection pool to `database_url` for its lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(database_url, min_size=1, max_size=10, open=False)
        pool.open(wait=False)  # start even while the database is down; /health says so
        app.state.pool = pool
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="Exchange", version="0.1.0", lifespan=lifespan)

    @app.get("/health")
    def health() -> JSONResponse:
        """Liveness and database reachability, for load balancers and container health checks."""
        try:
            with app.state.pool.connection(timeout=HEALTH_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout):
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
