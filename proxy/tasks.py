"""Celery tasks of the proxy. Thin: the work is in proxy.services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from proxy.services import workers_probe_all


@shared_task
def workers_probe() -> dict[str, Any]:
    """Probe every enabled worker and record its health (run by beat; see settings)."""
    outcomes = workers_probe_all()
    return {
        "probed": len(outcomes),
        "healthy": sum(1 for _, result in outcomes if result.ok),
        "unhealthy": sorted(worker.name for worker, result in outcomes if not result.ok),
    }


@shared_task
def responses_expire() -> dict[str, int]:
    """Delete stored Responses API answers past ROUTER_RESPONSES_RETENTION_DAYS (beat)."""
    from proxy.dialects.responses.store import responses_delete_expired

    return {"deleted": responses_delete_expired()}


@shared_task
def worker_rollup_task() -> dict[str, int]:
    """Recompute the fleet roll-ups of the recent hours (beat; see settings)."""
    from proxy.rollup_service import worker_rollup_recent

    return {"rows": worker_rollup_recent()}
