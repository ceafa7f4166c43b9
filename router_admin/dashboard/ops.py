"""What needs a person now: pending holds, workers down or cut off, deliveries failing."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Min, Sum

from billing.models import Hold, OutboxMessage
from proxy.models import Worker
from proxy.upstream.breaker import breaker_states_now

FAILING_SHOWN = 5


@dataclass(frozen=True)
class Holds:
    count: int
    total_micros: int
    oldest: object  # datetime | None


def holds_pending() -> Holds:
    # The partial index billing_hold_pending_expiry holds exactly the pending holds.
    row = Hold.objects.filter(status=Hold.Status.PENDING).aggregate(
        count=Count("id"), total=Sum("amount_micros"), oldest=Min("created_at"))
    return Holds(count=row["count"], total_micros=row["total"] or 0, oldest=row["oldest"])


@dataclass(frozen=True)
class WorkerState:
    id: int
    name: str
    enabled: bool
    healthy: bool
    circuit: str
    last_probe_at: object
    last_probe_error: str


def workers_in_trouble() -> list[WorkerState]:
    """Enabled workers whose last probe failed or whose circuit is not closed."""
    workers = list(Worker.objects.filter(enabled=True).order_by("name").values(
        "id", "name", "enabled", "healthy", "last_probe_at", "last_probe_error"))
    circuits = breaker_states_now([w["id"] for w in workers]) if workers else {}
    states = [WorkerState(circuit=circuits.get(w["id"], "closed"), **w) for w in workers]
    return [s for s in states if not s.healthy or s.circuit != "closed"]


@dataclass(frozen=True)
class Deliveries:
    failing: int
    recent: list[dict]


def deliveries_failing() -> Deliveries:
    """Webhook and alert deliveries not delivered after at least one attempt (the outbox's
    partial index billing_outbox_due holds the undelivered ones)."""
    failing = OutboxMessage.objects.filter(delivered_at=None, attempts__gt=0)
    recent = list(failing.order_by("-next_attempt_at").values(
        "id", "kind", "attempts", "last_error", "next_attempt_at")[:FAILING_SHOWN])
    count = len(recent) if len(recent) < FAILING_SHOWN else failing.count()
    return Deliveries(failing=count, recent=recent)
