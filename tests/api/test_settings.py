"""The API's settings come from the environment, with defaults for what is not set."""

from __future__ import annotations

import pytest

from app.api.settings import ApiSettings


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "operator-secret")
    monkeypatch.setenv("EXCHANGE_ORDER_RATE_PER_SECOND", "5")
    monkeypatch.setenv("EXCHANGE_ORDER_BURST", "7")
    monkeypatch.setenv("EXCHANGE_BATCH_WINDOW_SECONDS", "0.002")
    monkeypatch.setenv("EXCHANGE_BATCH_SIZE_MAX", "50")

    settings = ApiSettings.from_environment()

    assert (
        settings.admin_token,
        settings.order_rate_per_second,
        settings.order_burst,
        settings.batch_window_seconds,
        settings.batch_size_max,
    ) == ("operator-secret", 5.0, 7, 0.002, 50)


def test_unset_settings_take_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXCHANGE_ADMIN_TOKEN", "EXCHANGE_ORDER_RATE_PER_SECOND", "EXCHANGE_ORDER_BURST",
                 "EXCHANGE_BATCH_WINDOW_SECONDS", "EXCHANGE_BATCH_SIZE_MAX",
                 "EXCHANGE_POOL_SIZE_MAX"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    assert ApiSettings.from_environment() == ApiSettings()
