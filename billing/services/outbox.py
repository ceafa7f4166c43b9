"""Delivering the outbox: low-balance alerts by email and signed webhook, and the emails
that say auto top-up switched itself off.

Messages are claimed with a short lease in a transaction of their own (SKIP LOCKED, so
drainers never take the same message), delivered with no transaction open, then marked
delivered or rescheduled with exponential backoff. A drainer that dies mid-delivery lets
its lease lapse and the message is tried again; webhook receivers can de-duplicate by the
``X-Router-Event-Id`` header. Webhooks go to public addresses only
(``billing.services.webhook_targets``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import BalanceAlert, OutboxMessage
from billing.money import format_usd
from billing.services.auto_topup.notices import AUTO_TOPUP_DISABLED, auto_topup_disabled_send
from billing.services.webhook_targets import webhook_post

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
WEBHOOK_TIMEOUT_SECONDS = 5
MAX_BACKOFF_SECONDS = 3600


@dataclass
class DrainResult:
    delivered: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def outbox_drain(*, now: datetime | None = None, batch: int = 50) -> DrainResult:
    result = DrainResult()
    now = now or timezone.now()
    while True:
        claimed = _claim(now, batch)
        for message in claimed:
            try:
                _deliver(message)
            except Exception as error:  # noqa: BLE001 - any failure is retried later
                _failed(message, error, now)
                result.failed.append(message.pk)
            else:
                OutboxMessage.objects.filter(pk=message.pk).update(
                    delivered_at=timezone.now(), claimed_until=None, last_error="")
                result.delivered.append(message.pk)
        if len(claimed) < batch:
            return result


def _claim(now: datetime, batch: int) -> list[OutboxMessage]:
    with transaction.atomic():
        query = OutboxMessage.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            delivered_at__isnull=True, next_attempt_at__lte=now,
        ).select_related("user").order_by("next_attempt_at")
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True, of=("self",))
        messages = list(query[:batch])
        OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            claimed_until=now + LEASE)
        return messages


def _failed(message: OutboxMessage, error: Exception, now: datetime) -> None:
    attempts = message.attempts + 1
    delay = min(MAX_BACKOFF_SECONDS, 10 * 2 ** (attempts - 1))
    logger.warning("outbox message %d failed (attempt %d): %s", message.pk, attempts,
                   error.__class__.__name__)
    OutboxMessage.objects.filter(pk=message.pk).update(
        attempts=attempts, next_attempt_at=now + timedelta(seconds=delay),
        claimed_until=None, last_error=f"{error.__class__.__name__}: {error}"[:500])


def _deliver(message: OutboxMessage) -> None:
    if message.kind == AUTO_TOPUP_DISABLED:
        auto_topup_disabled_send(message)
        return
    if message.kind != "low_balance":
        raise ValueError(f"unknown outbox message kind {message.kind!r}")
    alert = BalanceAlert.objects.filter(user_id=message.user_id).first()
    if alert is None:
        return  # the user switched the alert off since: nothing to send
    balance = format_usd(int(message.payload.get("posted_micros", 0)))
    threshold = format_usd(int(message.payload.get("threshold_micros", 0)))
    if alert.email:
        send_mail(subject="Your Binom Router balance is low",
                  message=f"Your balance is ${balance}, below your alert threshold of "
                  f"${threshold}. Top up to keep your API keys working.",
                  from_email=None, recipient_list=[message.user.email])
    if alert.webhook_url:
        body = json.dumps({"id": message.pk, "type": "balance.low",
                           "created": int(message.created_at.timestamp()),
                           "data": {"balance_usd": balance, "threshold_usd": threshold}},
                          separators=(",", ":")).encode()
        signature = hmac.new(alert.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        # Not urllib: it follows redirects and looks the name up again when connecting, and
        # either can lead a user's webhook into the operator's own network.
        webhook_post(url=alert.webhook_url, body=body, timeout_seconds=WEBHOOK_TIMEOUT_SECONDS,
                     headers={"Content-Type": "application/json",
                              "X-Router-Event-Id": str(message.pk),
                              "X-Router-Signature": f"sha256={signature}"})
