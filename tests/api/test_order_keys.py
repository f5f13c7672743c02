"""The API process's memory of order keys (what a cancel names an order by)."""

from __future__ import annotations

from app.api.state import OrderKey, OrderKeys


def key(tenant_id: int, n: int) -> OrderKey:
    return OrderKey(tenant_id, account=n, client_order_id=f"o{n}", symbol="BTC-USD")


def test_a_key_is_known_to_its_tenant_only() -> None:
    keys = OrderKeys()
    keys.put(7, key(1, 7))

    assert keys.get(1, 7) == key(1, 7)
    assert keys.get(2, 7) is None
    assert keys.get(1, 8) is None


def test_beyond_its_capacity_the_least_recently_stored_keys_are_forgotten() -> None:
    keys = OrderKeys(capacity=3)
    for n in (1, 2, 3):
        keys.put(n, key(1, n))
    keys.put(1, key(1, 1))  # stored again: the newest now

    keys.put(4, key(1, 4))

    assert [n for n in (1, 2, 3, 4) if keys.get(1, n) is not None] == [1, 3, 4]
