"""The application as uvicorn's worker processes build it: `exchange serve` puts the database URL
in EXCHANGE_API_DATABASE_URL and names this factory, so each worker opens its own pool."""

from __future__ import annotations

import os

from fastapi import FastAPI

from app.api import create_app
from app.api.settings import ApiSettings

DATABASE_URL_VARIABLE = "EXCHANGE_API_DATABASE_URL"


def app_from_environment() -> FastAPI:
    return create_app(os.environ[DATABASE_URL_VARIABLE], ApiSettings.from_environment())
