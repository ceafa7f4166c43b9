"""A scope's Redis keys are built once per prefix and scope (``redis_store._keys_of``)."""

from __future__ import annotations

from proxy.limits import redis_store


def test_a_scopes_keys_carry_the_deployments_prefix_even_after_it_changes(settings):
    settings.ROUTER_REDIS_PREFIX = "router:one:"
    first = redis_store._keys_of("key:7")
    settings.ROUTER_REDIS_PREFIX = "router:two:"
    second = redis_store._keys_of("key:7")

    assert first == ("router:one:limits:key:7:window", "router:one:limits:key:7:tokens",
                     "router:one:limits:key:7:inflight")
    assert second == ("router:two:limits:key:7:window", "router:two:limits:key:7:tokens",
                      "router:two:limits:key:7:inflight")


def test_the_remembered_keys_stay_bounded(monkeypatch):
    monkeypatch.setattr(redis_store, "MAX_SCOPE_KEYS", 3)
    monkeypatch.setattr(redis_store, "_scope_keys", {})
    for n in range(10):
        assert redis_store._keys_of(f"user:{n}")[0].endswith(f"limits:user:{n}:window")
        assert len(redis_store._scope_keys) <= 3
