"""What the upstreams charge us: a worker's cost price per model (``UpstreamCost``), versioned
like our own prices, and the upstream cost of a request computed exactly like its charge.

A worker's model without a cost price has an unknown cost: its usage records store NULL,
never zero, so a margin is only ever shown over the requests whose cost is known.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from audit.actors import Actor
from audit.services import audit_record
from audit.snapshots import snapshot
from billing.errors import InvalidAmount
from billing.services.prices import _price as _checked_price
from proxy.models import UpstreamCost, Worker, WorkerModel
from proxy.services import WorkerError, workers_changed

# What a cost version is, for the audit trail (its id and author are the row's own).
COST_AUDIT_FIELDS = ("worker_model", "input_usd_per_mtok", "output_usd_per_mtok",
                     "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "effective_from")


class CostError(WorkerError):
    """A cost price that cannot be set; the message says why."""


def _worker_model(*, worker: Worker | str, model: str) -> WorkerModel:
    name = worker.name if isinstance(worker, Worker) else worker
    found = (WorkerModel.objects.select_related("worker")
             .filter(worker__name=name, model=model.strip()).first())
    if found is None:
        raise CostError(f"Worker {name!r} does not serve the model {model!r}.")
    return found


def cost_current(*, worker: Worker | str, model: str,
                 at: datetime | None = None) -> UpstreamCost | None:
    """The cost version in force at ``at`` (now) for ``model`` on ``worker``; None when the
    worker has none (its cost is unknown). Raises CostError when it does not serve ``model``."""
    return costs_in_force(_worker_model(worker=worker, model=model), at=at).first()


def costs_in_force(worker_model: WorkerModel, *, at: datetime | None = None
                   ) -> QuerySet[UpstreamCost]:
    return (UpstreamCost.objects.filter(worker_model=worker_model,
                                        effective_from__lte=at or timezone.now())
            .order_by("-effective_from"))


def cost_set(
    *,
    worker: Worker | str,
    model: str,
    input: Decimal | str,
    output: Decimal | str,
    cached_input: Decimal | str | None = None,
    cache_write: Decimal | str | None = None,
    effective_from: datetime | None = None,
    created_by: User | None = None,
    actor: Actor | None = None,
) -> UpstreamCost:
    """Add a cost version (USD per 1M tokens) for ``model`` on ``worker``; earlier versions
    stay, as the usage records served under them were costed at them. With an ``actor`` it
    is audited against the version in force until now. The router uses it within
    ROUTER_LOOKUP_TTL_SECONDS (at once in this process)."""
    worker_model = _worker_model(worker=worker, model=model)
    current = costs_in_force(worker_model).first()
    try:
        with transaction.atomic():
            created = UpstreamCost.objects.create(
                worker_model=worker_model,
                input_usd_per_mtok=_checked_price(input, field="input"),
                output_usd_per_mtok=_checked_price(output, field="output"),
                cached_input_usd_per_mtok=(None if cached_input is None else
                                           _checked_price(cached_input, field="cached input")),
                cache_write_usd_per_mtok=(None if cache_write is None else
                                          _checked_price(cache_write, field="cache write")),
                effective_from=effective_from or timezone.now(),
                created_by=created_by,
            )
            if actor is not None:
                audit_record(
                    actor=actor, action="upstream_cost.set", obj=created,
                    before=snapshot(current, fields=COST_AUDIT_FIELDS) if current else None,
                    after=snapshot(created, fields=COST_AUDIT_FIELDS),
                )
            workers_changed()
            return created
    except InvalidAmount as exc:
        raise CostError(str(exc)) from None
    except IntegrityError:
        raise CostError(f"{worker_model.worker.name} already has a cost for {model} taking "
                        "effect at that instant.") from None


def costs_current(*, at: datetime | None = None) -> list[UpstreamCost]:
    """The cost version in force for each worker's model that has one (for ``router cost
    list``), by worker then model."""
    latest: dict[int, UpstreamCost] = {}
    rows = (UpstreamCost.objects.select_related("worker_model__worker")
            .filter(effective_from__lte=at or timezone.now())
            .order_by("worker_model__worker__name", "worker_model__model", "-effective_from"))
    for cost in rows:
        latest.setdefault(cost.worker_model_id, cost)
    return list(latest.values())
