"""Periodic billing work, run by Celery beat (see CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import connection

from billing.services.auto_topup import auto_topups_nudge, auto_topups_run
from billing.services.ledger_days import ledger_days_refresh
from billing.services.outbox import outbox_drain
from billing.services.partitions import partitions_ensure
from billing.services.retention import RetentionRefused, retention_apply
from billing.services.rollups import usage_rollup_recent
from billing.services.sweeper import holds_sweep, wallets_reconcile


@shared_task
def holds_sweep_task() -> dict[str, int]:
    return {"expired": len(holds_sweep().expired)}


@shared_task
def wallets_reconcile_task() -> dict[str, list[int]]:
    return {"mismatched_wallets": [audit.wallet_id for audit in wallets_reconcile()]}


@shared_task
def usage_rollup_task() -> dict[str, int]:
    return {"rows": usage_rollup_recent()}


@shared_task
def ledger_days_task() -> dict[str, int]:
    refreshed = ledger_days_refresh()
    return {"days": refreshed.days, "rows": refreshed.rows}


@shared_task
def outbox_drain_task() -> dict[str, int]:
    result = outbox_drain()
    # A low-balance alert among them is the database having seen a crossing: start that
    # wallet's auto top-up now, not at the next minute's run.
    started = auto_topups_nudge(message_ids=result.delivered + result.failed)
    return {"delivered": len(result.delivered), "failed": len(result.failed),
            "auto_topups_started": len(started)}


@shared_task
def auto_topups_task() -> dict[str, int]:
    result = auto_topups_run()
    return {"started": len(result.started), "resent": len(result.resent),
            "looked_up": len(result.looked_up), "cards_described": result.cards_described}


@shared_task
def partitions_maintain_task() -> dict[str, list[str] | str]:
    """The months ahead's partitions, then the retention policy when one is set. A refused
    retention (a month not rolled up yet, a pending hold) is logged and tried the next day."""
    result: dict[str, list[str] | str] = {"created": partitions_ensure()}
    if settings.ROUTER_USAGE_RETENTION_MONTHS and connection.vendor == "postgresql":
        try:
            result["dropped"] = retention_apply().dropped
        except RetentionRefused as refusal:
            logging.getLogger(__name__).warning("retention: %s", refusal)
            result["retention_refused"] = str(refusal)
    return result
