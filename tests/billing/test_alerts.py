"""Low-balance alerts: one per crossing, queued in an outbox, delivered exactly once."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from django.core import mail
from django.db import connection

from billing.models import BalanceAlert, OutboxMessage
from billing.services import wallet_credit
from billing.services.outbox import outbox_drain
from billing.tasks import outbox_drain_task
from tests.threaded_server import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
USD = 1_000_000


class WebhookReceiver(ThreadedServer):
    name = "webhook receiver"

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.received: list[tuple[dict[str, str], bytes]] = []

    def _app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.read()))
            return web.Response(status=500 if self.fail else 204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _move(user, usd_micros: int, key: str) -> None:
    wallet_credit(user=user, amount_micros=usd_micros, idempotency_key=key, memo="test")


def test_crossing_the_threshold_3_times_queues_3_alerts_and_staying_under_queues_none(user):
    _move(user, 10 * USD, "start")
    BalanceAlert.objects.create(user=user, threshold_micros=5 * USD)
    for crossing in range(3):
        _move(user, -6 * USD, f"down-{crossing}")  # 10 -> 4: below
        _move(user, -1 * USD, f"further-{crossing}")  # 4 -> 3: still below, no alert
        _move(user, 7 * USD, f"up-{crossing}")  # 3 -> 10: above again
    assert OutboxMessage.objects.filter(user=user, kind="low_balance").count() == 3
    assert OutboxMessage.objects.first().payload["threshold_micros"] == 5 * USD


def test_the_drain_sends_an_email_and_a_signed_webhook_once(user, receiver, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1
    _move(user, 2 * USD, "start")
    BalanceAlert.objects.create(user=user, threshold_micros=USD, webhook_secret="whsec",
                                webhook_url=f"{receiver.url}/hook")
    _move(user, -USD - 1, "down")
    assert len(outbox_drain().delivered) == 1
    assert outbox_drain().delivered == []
    assert len(mail.outbox) == 1
    assert "below your alert threshold of $1.000000" in mail.outbox[0].body
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    expected = hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    assert headers["X-Router-Signature"] == f"sha256={expected}"
    assert OutboxMessage.objects.get().delivered_at is not None


def test_a_failing_webhook_is_retried_later_with_backoff(user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1
    with WebhookReceiver(fail=True) as failing:
        _move(user, 2 * USD, "start")
        BalanceAlert.objects.create(user=user, threshold_micros=USD, email=False,
                                    webhook_url=f"{failing.url}/hook")
        _move(user, -USD - 1, "down")
        assert len(outbox_drain().failed) == 1
        message = OutboxMessage.objects.get()
        assert (message.attempts, message.delivered_at) == (1, None)
        assert message.next_attempt_at > message.created_at
        assert outbox_drain().failed == []  # not due again yet
        failing.fail = False
        assert len(outbox_drain(now=message.next_attempt_at).delivered) == 1
        assert len(failing.received) == 2


@pytest.mark.django_db(transaction=True)
def test_with_the_worker_stopped_alerts_queue_and_a_started_worker_delivers_each_once(
    make_user, receiver, settings, tmp_path
):
    import redis

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    users = [make_user() for _ in range(2)]
    for user in users:
        _move(user, 2 * USD, f"start-{user.pk}")
        BalanceAlert.objects.create(user=user, threshold_micros=USD, email=True,
                                    webhook_url=f"{receiver.url}/hook")
        _move(user, -USD - 1, f"down-{user.pk}")
    outbox_drain_task.delay()  # queued in Redis; no worker is running
    time.sleep(0.5)
    assert OutboxMessage.objects.filter(delivered_at__isnull=True).count() == 2

    db = connection.settings_dict
    env = {**os.environ,
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
           "EMAIL_FILE_PATH": str(tmp_path),
           "ROUTER_WEBHOOKS_ALLOW_PRIVATE": "1"}  # the receiver is on 127.0.0.1
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "router_admin", "worker", "--pool", "solo",
         "--concurrency", "1", "--loglevel", "warning", "--without-gossip",
         "--without-mingle", "--without-heartbeat"], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while OutboxMessage.objects.filter(delivered_at__isnull=True).exists():
            assert time.monotonic() < deadline, "the worker delivered nothing"
            time.sleep(0.2)
        outbox_drain_task.delay()  # a second drain finds nothing left to send
        time.sleep(1.5)
    finally:
        worker.terminate()
        worker.wait(20)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                           "datname = current_database() AND pid <> pg_backend_pid()")
    assert len(receiver.received) == 2
    assert sorted(h["X-Router-Event-Id"] for h, _ in receiver.received) == sorted(
        str(m.pk) for m in OutboxMessage.objects.all())
    # The file backend may append two messages to one file (it names files by second).
    sent = "".join(path.read_text() for path in tmp_path.iterdir())
    assert sent.count("Subject: Your Binom Router balance is low") == 2
