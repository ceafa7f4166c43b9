"""The worker admin's operations view: health, the last probe, draining, open circuits and
each worker's last 15 minutes."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from proxy.models import Worker
from proxy.services import worker_create
from proxy.stats import WorkerStats, workers_recent_stats
from tests.proxy.workers_admin.helpers import (
    SECRET,
    add_url,
    assert_no_secret,
    change_data,
    change_url,
    changelist,
    probe_cache,
    row_of,
    usage,
)

pytestmark = pytest.mark.django_db


def test_the_changelist_shows_health_draining_and_the_last_probe(staff_client, worker):
    Worker.objects.filter(pk=worker.pk).update(
        healthy=False, draining=True, last_probe_at=timezone.now() - timedelta(seconds=5),
        last_probe_latency_ms=42, last_probe_error="HTTP 500: The server had an error")
    worker_create(name="never", kind="mock", models=[("m", "")])

    response = changelist(staff_client)

    up = row_of(response, "up")
    assert ">unhealthy</span>" in up
    assert ">draining</span>" in up
    assert "s ago, 42 ms" in up
    assert "HTTP 500: The server had an error" in up
    never = row_of(response, "never")
    assert ">healthy</span>" in never
    assert "draining" not in never
    assert "never</td>" in never
    assert_no_secret(response, SECRET)


@pytest.mark.parametrize(("query", "names"), [
    ({"healthy__exact": "0"}, {"sick"}),
    ({"draining__exact": "1"}, {"up"}),
])
def test_the_changelist_filters_by_health_and_draining(staff_client, worker, query, names):
    Worker.objects.filter(pk=worker.pk).update(draining=True)
    worker_create(name="sick", kind="mock", models=[("m", "")])
    Worker.objects.filter(name="sick").update(healthy=False)

    response = changelist(staff_client, **query)

    assert {w.name for w in response.context["cl"].result_list} == names


def test_the_changelist_shows_the_last_15_minutes_of_each_worker(staff_client, worker, user,
                                                                 price):
    worker_create(name="idle", kind="mock", models=[("m", "")])
    for latency in (100, 300, 200):
        usage(user, price, "up", latency_ms=latency)
    usage(user, price, "up", status="upstream_error", latency_ms=5)
    usage(user, price, "up", status="cancelled", latency_ms=9000)
    usage(user, price, "up", latency_ms=1, age=timedelta(minutes=16))  # too old
    usage(user, price, "elsewhere", latency_ms=1)  # another worker

    response = changelist(staff_client)

    up = row_of(response, "up")
    assert "<td class=\"field-recent_requests\">5</td>" in up
    assert "<td class=\"field-recent_error_rate\">20.0%</td>" in up
    assert "<td class=\"field-recent_p50\">200 ms</td>" in up  # completed requests only
    idle = row_of(response, "idle")
    assert "<td class=\"field-recent_requests\">0</td>" in idle
    assert "<td class=\"field-recent_error_rate\">-</td>" in idle
    assert "<td class=\"field-recent_p50\">-</td>" in idle


def test_the_stats_cost_the_same_queries_for_any_number_of_workers(staff_client, worker,
                                                                   user, price):
    usage(user, price, "up")
    with CaptureQueriesContext(connection) as one:
        changelist(staff_client)
    for i in range(5):
        worker_create(name=f"more{i}", kind="mock", models=[("m", "")])
        usage(user, price, f"more{i}", status="upstream_error")
        usage(user, price, f"more{i}", latency_ms=50)

    with CaptureQueriesContext(connection) as six:
        response = changelist(staff_client)

    assert len(response.context["cl"].result_list) == 6
    assert len(six) == len(one)
    # The counts, the latency sample and the flagged records (see test_usage_flags.py).
    assert sum("billing_usagerecord" in q["sql"] for q in six.captured_queries) == 3


def test_the_median_latency_reads_only_the_newest_sample(monkeypatch, user, price):
    monkeypatch.setattr("proxy.stats.LATENCY_SAMPLE", 3)
    for age, latency in ((5, 1), (4, 2), (3, 900), (2, 901), (1, 902)):
        usage(user, price, "w", latency_ms=latency, age=timedelta(minutes=age))

    stats = workers_recent_stats(names=["w", "unknown"])

    assert stats["w"] == WorkerStats(requests=5, upstream_errors=0, p50_latency_ms=901)
    assert stats["unknown"] == WorkerStats()
    assert stats["unknown"].error_rate is None
    assert workers_recent_stats(names=[]) == {}


@pytest.mark.parametrize(("action", "draining", "message"), [
    ("drain_workers", True, "Draining 2 workers."),
    ("undrain_workers", False, "Undrained 2 workers."),
])
def test_the_actions_drain_and_undrain_the_selection(staff_client, worker, action, draining,
                                                     message):
    other = worker_create(name="other", kind="mock", models=[("m", "")])
    Worker.objects.update(draining=not draining)

    response = staff_client.post(reverse("admin:proxy_worker_changelist"), {
        "action": action, ACTION_CHECKBOX_NAME: [worker.pk, other.pk]}, follow=True)

    assert response.status_code == 200
    assert set(Worker.objects.values_list("draining", flat=True)) == {draining}
    assert message in [str(m) for m in response.context["messages"]]


def test_draining_clears_the_lookup_caches(staff_client, worker):
    asyncio.run(probe_cache.get_or_load("k", lambda: "stale"))

    staff_client.post(reverse("admin:proxy_worker_changelist"), {
        "action": "drain_workers", ACTION_CHECKBOX_NAME: [worker.pk]})

    assert Worker.objects.get().draining is True
    assert not probe_cache._data


def test_the_probe_action_probes_the_selection_and_reports_failures(staff_client, upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    good = worker_create(name="good", kind="openai", base_url=upstream.base_url,
                         api_key=SECRET, models=[("m", "")])
    gone = worker_create(name="gone", kind="openai", base_url=refused, api_key=SECRET,
                         models=[("m", "")])
    off = worker_create(name="off", kind="mock", models=[("m", "")], enabled=False)
    unselected = worker_create(name="unselected", kind="mock", models=[("m", "")])

    response = staff_client.post(reverse("admin:proxy_worker_changelist"), {
        "action": "probe_workers", ACTION_CHECKBOX_NAME: [good.pk, gone.pk, off.pk]},
        follow=True)

    (message,) = [str(m) for m in response.context["messages"]]
    assert message.startswith("Probed 2 workers: 1 healthy, 1 unhealthy. Skipped 1 disabled "
                              "worker. gone: cannot connect to 127.0.0.1:")
    assert SECRET not in message
    assert dict(Worker.objects.filter(enabled=True, last_probe_at__isnull=False)
                .values_list("name", "healthy")) == {"good": True, "gone": False}
    assert Worker.objects.get(pk=unselected.pk).last_probe_at is None
    assert ">unhealthy</span>" in row_of(response, "gone")


def test_the_change_page_shows_health_read_only_and_saves_draining(staff_client, worker):
    Worker.objects.filter(pk=worker.pk).update(healthy=False,
                                               last_probe_error="HTTP 503: overloaded")

    page = staff_client.get(change_url(worker))
    text = page.content.decode()
    assert "HTTP 503: overloaded" in text
    assert 'name="healthy"' not in text  # read-only: written by the probe
    assert 'name="draining"' in text
    assert "Health (written by the periodic probe)" in text
    assert "Health (written by" not in staff_client.get(add_url()).content.decode()

    response = staff_client.post(change_url(worker), change_data(worker, draining="on"))

    assert response.status_code == 302
    worker.refresh_from_db()
    assert (worker.draining, worker.healthy) == (True, False)


def test_the_changelist_shows_an_open_circuit(staff_client, settings):
    import asyncio

    import redis

    from proxy.ground import shared_state
    from proxy.upstream.breaker import breaker_failure

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    settings.ROUTER_BREAKER_FAILURES = 2
    worker = Worker.objects.create(name="tripped", kind="mock")

    async def trip() -> None:
        await breaker_failure(worker.pk)
        await breaker_failure(worker.pk)
        await shared_state.close_redis_clients()

    shared_state.reset_for_tests()
    asyncio.run(trip())
    page = staff_client.get("/admin/proxy/worker/").content.decode()
    assert "circuit open" in page

