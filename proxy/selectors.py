"""Cached reads the request path needs: the caller's key, the model's price, its workers.

Each is one short synchronous query run off the event loop on a miss, and kept for a few
seconds: a revoked key stops working, and a new price or worker takes effect, within
``ROUTER_LOOKUP_TTL_SECONDS`` (5 s by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from django.db.models import Prefetch
from django.utils import timezone

from accounts.keys import key_digest
from accounts.models import ApiKey
from accounts.selectors import api_key_authenticate, api_keys_authenticate
from accounts.services import api_key_touch, api_keys_touch
from billing.models import ModelPrice, Wallet
from billing.models.prices import CACHE_WRITE_FACTOR
from billing.selectors import price_current, prices_current
from billing.services.wallets import wallet_get_or_create
from proxy.ground.cache import TTLCache
from proxy.limits import Limits, Scope
from proxy.models import UpstreamCost, Worker, WorkerModel
from proxy.upstream.providers.base import UpstreamTarget
from router_admin.settings_cache import setting


@dataclass(frozen=True)
class Caller:
    """The authenticated key, as the request path needs it."""

    user_id: int
    api_key_id: int
    key_prefix: str
    wallet_id: int  # the user's own, or the key's organization's
    expires_at: datetime | None
    key_limits: Limits = field(default_factory=Limits)
    user_limits: Limits = field(default_factory=Limits)
    allowed_models: frozenset[str] = frozenset()
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    organization_id: int | None = None

    def limit_scopes(self) -> tuple[Scope, ...]:
        return self._limit_scopes

    @cached_property
    def _limit_scopes(self) -> tuple[Scope, ...]:
        # Built once per cached key, not per request (cached_property writes the instance's
        # __dict__ directly, which a frozen dataclass allows).
        return (Scope(f"key:{self.api_key_id}", self.key_limits,
                      f"the API key {self.key_prefix}..."),
                Scope(f"user:{self.user_id}", self.user_limits,
                      "your account (all its keys together)"))

    def allows_address(self, address: str) -> bool:
        if not self.allowed_networks:
            return True
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_networks)


def _ttl() -> float:
    return float(setting("ROUTER_LOOKUP_TTL_SECONDS"))


def wallet_id_for_key(*, api_key: ApiKey) -> int:
    """The wallet a key spends: its organization's, or its user's own (made if a user
    created outside our paths has none yet)."""
    if api_key.organization_id is not None:
        return Wallet.objects.values_list("pk", flat=True).get(
            organization_id=api_key.organization_id)
    found = Wallet.objects.filter(user_id=api_key.user_id).values_list("pk", flat=True).first()
    return found if found is not None else wallet_get_or_create(user=api_key.user).pk


def _wallet_ids_for_keys(api_keys: Sequence[ApiKey]) -> dict[int, int]:
    """``wallet_id_for_key`` of many keys, by key id, in two queries."""
    personal = dict(Wallet.objects.filter(
        user_id__in={k.user_id for k in api_keys if k.organization_id is None})
        .values_list("user_id", "pk"))
    shared = dict(Wallet.objects.filter(
        organization_id__in={k.organization_id for k in api_keys
                             if k.organization_id is not None})
        .values_list("organization_id", "pk"))
    found: dict[int, int] = {}
    for api_key in api_keys:
        wallet_id = (shared.get(api_key.organization_id) if api_key.organization_id is not None
                     else personal.get(api_key.user_id))
        found[api_key.pk] = (wallet_id if wallet_id is not None
                             else wallet_id_for_key(api_key=api_key))
    return found


def _caller(api_key: ApiKey, wallet_id: int) -> Caller:
    user = api_key.user
    return Caller(
        user_id=api_key.user_id, api_key_id=api_key.pk, key_prefix=api_key.prefix,
        wallet_id=wallet_id,
        organization_id=api_key.organization_id,
        expires_at=api_key.expires_at,
        key_limits=Limits(api_key.rpm, api_key.tpm, api_key.max_concurrency),
        user_limits=Limits(user.rpm, user.tpm, user.max_concurrency),
        allowed_models=frozenset(api_key.allowed_models or ()),
        allowed_networks=tuple(ip_network(cidr, strict=False)
                               for cidr in api_key.allowed_ips or ()),
    )


def _load_caller(raw_key: str) -> Caller | None:
    api_key = api_key_authenticate(raw_key=raw_key)
    if api_key is None:
        return None
    api_key_touch(api_key=api_key)
    return _caller(api_key, wallet_id_for_key(api_key=api_key))


def _load_callers(raw_keys: Sequence[str]) -> list[Caller | None]:
    """``_load_caller`` of every key the keeper reloads at once, in four queries."""
    api_keys = api_keys_authenticate(raw_keys=raw_keys)
    usable = [api_key for api_key in api_keys if api_key is not None]
    api_keys_touch(api_keys=usable)
    wallets = _wallet_ids_for_keys(usable)
    return [None if api_key is None else _caller(api_key, wallets[api_key.pk])
            for api_key in api_keys]


def _load_prices(models: Sequence[str]) -> list[ModelPrice | None]:
    """The price in force of each model, in one query (``price_current`` of each)."""
    current: dict[str, ModelPrice] = {}
    for price in ModelPrice.objects.filter(model__in=set(models),
                                           effective_from__lte=timezone.now()).order_by(
            "model", "-effective_from"):
        current.setdefault(price.model, price)
    return [current.get(model) for model in models]


_callers: TTLCache[str, Caller | None] = TTLCache(ttl=_ttl, reload_many=_load_callers)
_prices: TTLCache[str, ModelPrice | None] = TTLCache(ttl=_ttl, reload_many=_load_prices)
_targets: TTLCache[str, list[UpstreamTarget]] = TTLCache(ttl=_ttl)
_routable: TTLCache[str, list[ModelPrice]] = TTLCache(ttl=_ttl)


async def caller_for_key(raw_key: str) -> Caller | None:
    caller = await _callers.get_or_load(key_digest(raw_key), lambda: _load_caller(raw_key),
                                        arg=raw_key)
    if caller is not None and caller.expires_at is not None and caller.expires_at <= timezone.now():
        return None  # expired while cached
    return caller


async def price_for_model(model: str) -> ModelPrice | None:
    return await _prices.get_or_load(model, lambda: price_current(model=model))


def _load_targets(model: str) -> list[UpstreamTarget]:
    # The cost versions in force come with the rows (one prefetch query, all versions up to
    # now, newest first): a target carries its worker's cost price, so costing a request
    # needs no query of its own.
    in_force = (UpstreamCost.objects.filter(effective_from__lte=timezone.now())
                .order_by("-effective_from"))
    rows = (
        WorkerModel.objects.select_related("worker")
        .prefetch_related(Prefetch("costs", queryset=in_force, to_attr="costs_in_force"))
        .filter(model=model, worker__enabled=True, worker__draining=False,
                worker__healthy=True)
        .order_by("-worker__priority", "worker__name")
    )
    return [_target(row.worker, row.upstream_name,
                    cost=row.costs_in_force[0] if row.costs_in_force else None)
            for row in rows]


def _target(worker: Worker, upstream_model: str, *,
            cost: UpstreamCost | None = None) -> UpstreamTarget:
    # An unset cached or cache-write cost takes the input price, or 1.25x it, as our own
    # prices do (ModelPrice.cached_price, cache_write_price).
    prices = {} if cost is None else {
        "cost_input": cost.input_usd_per_mtok, "cost_output": cost.output_usd_per_mtok,
        "cost_cached_input": (cost.input_usd_per_mtok if cost.cached_input_usd_per_mtok is None
                              else cost.cached_input_usd_per_mtok),
        "cost_cache_write": (cost.input_usd_per_mtok * CACHE_WRITE_FACTOR
                             if cost.cache_write_usd_per_mtok is None
                             else cost.cache_write_usd_per_mtok),
    }
    return UpstreamTarget(
        worker_id=worker.pk, worker_name=worker.name, kind=worker.kind,
        base_url=worker.base_url, api_key_encrypted=worker.api_key_encrypted,
        upstream_model=upstream_model,
        connect_timeout_s=worker.connect_timeout_s,
        first_byte_timeout_s=worker.first_byte_timeout_s,
        total_timeout_s=worker.total_timeout_s, priority=worker.priority,
        weight=worker.weight, max_concurrency=worker.max_concurrency,
        cap_field=worker.cap_field, auth_header=worker.auth_header,
        extra_headers_encrypted=worker.extra_headers_encrypted,
        api_version=worker.api_version, dialects=worker.dialects, **prices,
    )


async def targets_for_model(model: str) -> list[UpstreamTarget]:
    """The workers that may take new requests for ``model``: enabled, healthy at the last
    probe, not draining; highest priority first."""
    return await _targets.get_or_load(model, lambda: _load_targets(model))


def _load_routable_prices() -> list[ModelPrice]:
    served = set(WorkerModel.objects.filter(worker__enabled=True)
                 .values_list("model", flat=True))
    return sorted((p for p in prices_current() if p.model in served), key=lambda p: p.model)


async def routable_prices() -> list[ModelPrice]:
    """Priced models that at least one enabled worker serves: what /v1/models lists."""
    return await _routable.get_or_load("all", _load_routable_prices)
