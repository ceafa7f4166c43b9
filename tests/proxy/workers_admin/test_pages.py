"""The worker admin's list, add and change pages: the upstream key is write-only, and saving
reaches the router at once."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from proxy.models import Worker, WorkerModel
from proxy.services import worker_create
from tests.proxy.workers_admin.helpers import (
    NEW_SECRET,
    SECRET,
    add_url,
    assert_no_secret,
    change_data,
    change_url,
    form_data,
    form_errors,
    probe_cache,
    row_of,
)

pytestmark = pytest.mark.django_db

# --- list --------------------------------------------------------------------------------

def test_the_changelist_renders_with_key_status_and_models(staff_client, worker):
    worker_create(name="mock", kind="mock", models=[("mock-gpt", "")], enabled=False)

    response = staff_client.get(reverse("admin:proxy_worker_changelist"))

    assert response.status_code == 200
    assert {w.name for w in response.context["cl"].result_list} == {"up", "mock"}
    text = response.content.decode()
    assert "fast → gpt-x-mini, gpt-x" in text
    assert ">disabled</span>" in row_of(response, "mock")
    assert_no_secret(response, SECRET)
    # The endpoint and whether a key is set are on the worker's page (the list fits 1280 px).
    page = staff_client.get(reverse("admin:proxy_worker_change", args=[worker.pk]))
    assert "https://up.example/v1" in page.content.decode()
    assert_no_secret(page, SECRET)


def test_the_worker_page_shows_the_cap_field_it_sends(staff_client, worker):
    other = worker_create(name="o-series", kind="openai", base_url="https://o.example/v1",
                          models=[("o3-mini", "")], cap_field="max_completion_tokens")

    for shown, expected in ((worker, "max_tokens"), (other, "max_completion_tokens")):
        page = staff_client.get(reverse("admin:proxy_worker_change", args=[shown.pk]))
        assert f'<option value="{expected}" selected>' in page.content.decode()


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
    assert '<option value="max_tokens" selected>' in text  # the default
    assert "reasoning models require max_completion_tokens" in text  # the help


def test_adding_a_worker_sets_the_cap_field_its_upstream_reads(staff_client):
    response = staff_client.post(add_url(), form_data(
        name="o-series", models=[("o3-mini", "")], cap_field="max_completion_tokens"))

    assert response.status_code == 302
    assert Worker.objects.get(name="o-series").cap_field == "max_completion_tokens"


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
    ({"cap_field": "max_output_tokens"}, "Select a valid choice"),
    ({"cap_field": None}, "This field is required"),
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


def test_the_cap_field_can_be_changed_and_reaches_the_router_at_once(
        staff_client, worker, django_capture_on_commit_callbacks):
    asyncio.run(probe_cache.get_or_load("k", lambda: "stale"))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(change_url(worker), change_data(
            worker, cap_field="max_completion_tokens"))

    assert response.status_code == 302
    worker.refresh_from_db()
    assert worker.cap_field == "max_completion_tokens"
    assert worker.get_api_key() == SECRET  # the key is kept
    assert not probe_cache._data


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

    asyncio.run(probe_cache.get_or_load("k", stale))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(change_url(worker), change_data(worker, enabled=""))

    assert response.status_code == 302
    assert Worker.objects.get().enabled is False
    assert not probe_cache._data


