"""The worker admin: the upstream key is write-only, and saving reaches the router at once."""

from __future__ import annotations

import asyncio
import itertools
import socket
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing.models import ModelPrice, UsageRecord
from proxy.cache import TTLCache
from proxy.models import Worker, WorkerModel
from proxy.services import worker_create
from proxy.stats import WorkerStats, workers_recent_stats

SECRET = "sk-upstream-ADMIN-PLAINTEXT-9876543210"
NEW_SECRET = "sk-upstream-REPLACED-PLAINTEXT-55555"

pytestmark = pytest.mark.django_db

_probe: TTLCache[str, str] = TTLCache(ttl=lambda: 3600)
_request_ids = itertools.count(1)


@pytest.fixture
def staff_client(client, make_user):
    staff: User = make_user(email="ops@example.com", is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


@pytest.fixture
def worker() -> Worker:
    return worker_create(name="up", kind="openai", base_url="https://up.example/v1",
                         api_key=SECRET, models=[("gpt-x", ""), ("fast", "gpt-x-mini")])


def form_data(*, models: list[tuple[str, str]] = (("gpt-x", ""),), worker: Worker | None = None,
              **fields: str) -> dict[str, str]:
    """What the add or change form posts: the worker's fields and the models inline."""
    data = {
        "name": "new", "kind": "openai", "base_url": "https://api.example.com/v1",
        "api_key": "", "enabled": "on", "priority": "0", "weight": "1",
        "max_concurrency": "64", "connect_timeout_s": "5", "first_byte_timeout_s": "60",
        "total_timeout_s": "600",
    }
    rows = list(worker.models.order_by("pk")) if worker else []
    data.update({
        "models-TOTAL_FORMS": str(max(len(models), len(rows))),
        "models-INITIAL_FORMS": str(len(rows)),
        "models-MIN_NUM_FORMS": "0",
        "models-MAX_NUM_FORMS": "1000",
    })
    for i in range(max(len(models), len(rows))):
        if i < len(rows):
            data[f"models-{i}-id"] = str(rows[i].pk)
            data[f"models-{i}-worker"] = str(worker.pk)
        if i < len(models):
            data[f"models-{i}-model"], data[f"models-{i}-upstream_model"] = models[i]
        else:
            data[f"models-{i}-model"] = rows[i].model
            data[f"models-{i}-DELETE"] = "on"
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def change_data(worker: Worker, **fields: str) -> dict[str, str]:
    current = [(row.model, row.upstream_model) for row in worker.models.order_by("pk")]
    return form_data(
        worker=worker, models=fields.pop("models", current),
        **{"name": worker.name, "kind": worker.kind, "base_url": worker.base_url,
           "priority": str(worker.priority), "weight": str(worker.weight),
           "max_concurrency": str(worker.max_concurrency), **fields},
    )


def add_url() -> str:
    return reverse("admin:proxy_worker_add")


def change_url(worker: Worker) -> str:
    return reverse("admin:proxy_worker_change", args=[worker.pk])


def assert_no_secret(response, *secrets: str) -> None:
    text = response.content.decode()
    for secret in secrets:
        assert secret not in text
    for stored in Worker.objects.values_list("api_key_encrypted", flat=True):
        if stored:
            assert stored not in text


def form_errors(response) -> list[str]:
    errors = [str(e) for e in response.context["adminform"].form.errors.values()]
    errors += [str(e) for formset in response.context["inline_admin_formsets"]
               for e in (*formset.formset.errors, formset.formset.non_form_errors())]
    return errors


# --- list --------------------------------------------------------------------------------

def test_the_changelist_renders_with_key_status_and_models(staff_client, worker):
    worker_create(name="mock", kind="mock", models=[("mock-gpt", "")], enabled=False)

    response = staff_client.get(reverse("admin:proxy_worker_changelist"))

    assert response.status_code == 200
    assert {w.name for w in response.context["cl"].result_list} == {"up", "mock"}
    text = response.content.decode()
    assert "https://up.example/v1" in text
    assert "fast → gpt-x-mini, gpt-x" in text
    assert "icon-yes.svg" in text  # "key set" for up
    assert "icon-no.svg" in text  # and not for mock (and mock is disabled)
    assert_no_secret(response, SECRET)


@pytest.mark.parametrize(("query", "names"), [
    ({"kind__exact": "mock"}, {"mock"}),
    ({"enabled__exact": "1"}, {"up"}),
    ({"q": "mock-gpt"}, {"mock"}),
])
def test_the_changelist_filters_by_kind_and_enabled(staff_client, worker, query, names):
    worker_create(name="mock", kind="mock", models=[("mock-gpt", "")], enabled=False)

    response = staff_client.get(reverse("admin:proxy_worker_changelist"), query)

    assert {w.name for w in response.context["cl"].result_list} == names


@pytest.mark.parametrize(("action", "enabled"), [("enable_workers", True),
                                                 ("disable_workers", False)])
def test_the_actions_enable_and_disable_the_selection(staff_client, worker, action, enabled):
    other = worker_create(name="other", kind="mock", models=[("m", "")], enabled=not enabled)
    worker.enabled = not enabled
    worker.save()

    response = staff_client.post(reverse("admin:proxy_worker_changelist"), {
        "action": action, ACTION_CHECKBOX_NAME: [worker.pk, other.pk]}, follow=True)

    assert response.status_code == 200
    assert set(Worker.objects.values_list("enabled", flat=True)) == {enabled}
    assert f"{'Enabled' if enabled else 'Disabled'} 2 workers." in [
        str(m) for m in response.context["messages"]]


# --- add ---------------------------------------------------------------------------------

def test_the_add_page_offers_a_password_field_and_no_clear_box(staff_client):
    response = staff_client.get(add_url())

    assert response.status_code == 200
    text = response.content.decode()
    assert 'type="password" name="api_key"' in text
    assert "clear_api_key" not in text


def test_adding_a_worker_with_a_key_stores_it_encrypted_and_never_shows_it(staff_client):
    response = staff_client.post(add_url(), form_data(
        name="main", api_key=SECRET, models=[("gpt-4o", ""), ("fast", "gpt-4o-mini")]),
        follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("admin:proxy_worker_changelist")
    worker = Worker.objects.get(name="main")
    assert worker.get_api_key() == SECRET
    assert SECRET not in worker.api_key_encrypted
    assert sorted(worker.models.values_list("model", "upstream_model")) == [
        ("fast", "gpt-4o-mini"), ("gpt-4o", "")]
    assert_no_secret(response, SECRET)
    for url in (change_url(worker), reverse("admin:proxy_worker_history", args=[worker.pk]),
                reverse("admin:proxy_worker_delete", args=[worker.pk])):
        page = staff_client.get(url)
        assert page.status_code == 200
        assert_no_secret(page, SECRET)
    assert "A key is stored" in staff_client.get(change_url(worker)).content.decode()


def test_a_mock_worker_is_added_without_url_or_key(staff_client):
    response = staff_client.post(add_url(), form_data(name="offline", kind="mock",
                                                      base_url="", models=[("m", "m")]))

    assert response.status_code == 302
    worker = Worker.objects.get(name="offline")
    assert (worker.base_url, worker.has_api_key) == ("", False)
    assert list(worker.models.values_list("model", "upstream_model")) == [("m", "")]


@pytest.mark.parametrize(("fields", "error"), [
    ({"base_url": ""}, "needs a base URL"),
    ({"base_url": "ftp://files.example.com"}, "not an http:// or https:// URL"),
    ({"base_url": "https://u:p@api.example.com"}, "must not contain a user name"),
    ({"name": "  "}, "This field is required"),
    ({"kind": "gemini"}, "Select a valid choice"),
    ({"weight": "0"}, "greater than or equal to 1"),
    ({"max_concurrency": "0"}, "greater than or equal to 1"),
    ({"total_timeout_s": "0"}, "more than 0 seconds"),
    ({"models": []}, "at least one model"),
    ({"models": [("", "")]}, "at least one model"),
    ({"models": [("a", ""), ("a", "b")]}, "duplicate data for model"),
])
def test_a_refused_add_writes_nothing_and_does_not_echo_the_key(staff_client, fields, error):
    response = staff_client.post(add_url(), form_data(api_key=SECRET, **fields))

    assert response.status_code == 200
    assert any(error in message for message in form_errors(response)), form_errors(response)
    assert not Worker.objects.exists()
    assert not WorkerModel.objects.exists()
    assert_no_secret(response, SECRET)


def test_a_taken_name_is_refused(staff_client, worker):
    response = staff_client.post(add_url(), form_data(name="up"))

    assert response.status_code == 200
    assert any("already exists" in message for message in form_errors(response))
    assert Worker.objects.count() == 1


# --- change ------------------------------------------------------------------------------

def test_an_empty_key_field_keeps_the_stored_key(staff_client, worker):
    stored = worker.api_key_encrypted

    response = staff_client.post(change_url(worker), change_data(worker, priority="7"))

    assert response.status_code == 302
    worker.refresh_from_db()
    assert worker.priority == 7
    assert worker.api_key_encrypted == stored
    assert worker.get_api_key() == SECRET


def test_a_typed_key_replaces_the_stored_one(staff_client, worker):
    response = staff_client.post(change_url(worker), change_data(worker, api_key=NEW_SECRET),
                                 follow=True)

    worker.refresh_from_db()
    assert worker.get_api_key() == NEW_SECRET
    assert_no_secret(response, SECRET, NEW_SECRET)


def test_the_stored_key_can_be_removed(staff_client, worker):
    response = staff_client.post(change_url(worker), change_data(worker, clear_api_key="on"))

    assert response.status_code == 302
    worker.refresh_from_db()
    assert (worker.has_api_key, worker.get_api_key()) == (False, "")


def test_a_new_key_and_removing_the_key_at_once_is_refused(staff_client, worker):
    response = staff_client.post(change_url(worker), change_data(
        worker, api_key=NEW_SECRET, clear_api_key="on"))

    assert response.status_code == 200
    assert any("not both" in message for message in form_errors(response))
    worker.refresh_from_db()
    assert worker.get_api_key() == SECRET
    assert_no_secret(response, SECRET, NEW_SECRET)


def test_models_are_added_renamed_and_removed_inline(staff_client, worker):
    response = staff_client.post(change_url(worker), change_data(
        worker, models=[("gpt-x", "gpt-x-2025")]))  # the second row is deleted

    assert response.status_code == 302
    assert list(worker.models.values_list("model", "upstream_model")) == [
        ("gpt-x", "gpt-x-2025")]


def test_removing_every_model_is_refused(staff_client, worker):
    data = change_data(worker)
    data["models-0-DELETE"] = data["models-1-DELETE"] = "on"

    response = staff_client.post(change_url(worker), data)

    assert response.status_code == 200
    assert any("at least one model" in message for message in form_errors(response))
    assert worker.models.count() == 2


def test_saving_clears_the_lookup_caches_after_the_commit(
        staff_client, worker, django_capture_on_commit_callbacks):
    def stale() -> str:
        return "stale"

    asyncio.run(_probe.get_or_load("k", stale))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(change_url(worker), change_data(worker, enabled=""))

    assert response.status_code == 302
    assert Worker.objects.get().enabled is False
    assert not _probe._data


# --- health, drain and recent stats ------------------------------------------------------

def changelist(client, **query: str):
    response = client.get(reverse("admin:proxy_worker_changelist"), query)
    assert response.status_code == 200
    return response


def row_of(response, name: str) -> str:
    """The changelist's table row for the worker ``name``."""
    text = response.content.decode()
    start = text.index(f">{name}</a>")
    return text[text.rindex("<tr", 0, start):text.index("</tr>", start)]


def usage(user: User, price: ModelPrice, worker: str, *, status: str = "ok",
          latency_ms: int | None = 100, age: timedelta | None = None) -> UsageRecord:
    record = UsageRecord.objects.create(
        request_id=f"req-{next(_request_ids)}", user=user, model=price.model, worker=worker,
        price=price, status=status, latency_ms=latency_ms)
    if age is not None:
        UsageRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - age)
    return record


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
    assert sum("billing_usagerecord" in q["sql"] for q in six.captured_queries) == 2


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
    asyncio.run(_probe.get_or_load("k", lambda: "stale"))

    staff_client.post(reverse("admin:proxy_worker_changelist"), {
        "action": "drain_workers", ACTION_CHECKBOX_NAME: [worker.pk]})

    assert Worker.objects.get().draining is True
    assert not _probe._data


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

    from proxy import shared_state
    from proxy.breaker import breaker_failure

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
