"""The HTTP API's health check, with the application's lifespan (its connection pool) running."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app.api
from app.api import create_app
from tests.conftest import APP_ROLE, ScratchDatabase


def test_health_is_ok_when_the_database_answers(db: ScratchDatabase) -> None:
    with TestClient(create_app(db.conninfo(APP_ROLE))) as client:
        response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_is_unavailable_when_the_database_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.api, "HEALTH_TIMEOUT_SECONDS", 0.2)
    nowhere = tmp_path / "no-such-socket-dir"
    conninfo = f"host={nowhere} port=5432 dbname=exchange user={APP_ROLE} connect_timeout=1"

    with TestClient(create_app(conninfo)) as client:
        response = client.get("/health")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
