"""The worker admin's request settings: the extra headers are write-only (names shown,
values never), checked with clear errors, kept when left blank and removed on request."""

from __future__ import annotations

import html

import pytest

from audit.models import AuditEntry
from proxy.models import Worker
from proxy.services import worker_create
from tests.proxy.workers_admin.helpers import (
    add_url,
    change_data,
    change_url,
    changelist,
    form_data,
    form_errors,
    row_of,
)
from tests.proxy.workers_headers.gateways import PORTKEY_API_KEY

pytestmark = pytest.mark.django_db

HEADERS_TEXT = f"x-portkey-provider: openai\n\nx-portkey-api-key: {PORTKEY_API_KEY}\n"
NAMES = "x-portkey-provider, x-portkey-api-key"


def assert_no_header_values(response) -> None:
    text = response.content.decode()
    assert PORTKEY_API_KEY not in text
    for stored in Worker.objects.values_list("extra_headers_encrypted", flat=True):
        if stored:
            assert stored not in text


@pytest.fixture
def gateway(staff_client) -> Worker:
    response = staff_client.post(add_url(), form_data(
        name="gateway", extra_headers=HEADERS_TEXT, auth_header="api-key",
        api_version="2024-10-21", native_dialects=" chat, responses "))
    assert response.status_code == 302, form_errors(response)
    return Worker.objects.get(name="gateway")


def test_adding_a_worker_stores_the_request_settings(gateway):
    assert gateway.get_extra_headers() == {"x-portkey-provider": "openai",
                                           "x-portkey-api-key": PORTKEY_API_KEY}
    assert (gateway.auth_header, gateway.api_version, gateway.native_dialects) == (
        "api-key", "2024-10-21", "chat,responses")


def test_the_list_and_the_change_page_show_header_names_only(staff_client, gateway):
    listed = changelist(staff_client)
    page = staff_client.get(change_url(gateway))

    assert row_of(listed, "gateway")  # listed (its headers are on its page, not the list)
    assert f"Stored: {NAMES} (values never shown)" in page.content.decode()
    for response in (listed, page):
        assert_no_header_values(response)
    # Nor the audit trail, whose entries staff can read too.
    assert PORTKEY_API_KEY not in str(list(AuditEntry.objects.values()))


def test_a_form_shown_again_with_errors_does_not_echo_the_typed_headers(staff_client):
    response = staff_client.post(add_url(), form_data(
        name="gateway", weight="0", extra_headers=HEADERS_TEXT))

    assert response.status_code == 200
    assert form_errors(response)
    assert_no_header_values(response)


def test_leaving_the_headers_blank_keeps_them_and_new_ones_replace_them(staff_client, gateway):
    kept = staff_client.post(change_url(gateway), change_data(gateway, priority="3"))
    assert kept.status_code == 302, form_errors(kept)
    gateway.refresh_from_db()
    assert gateway.extra_header_names == ("x-portkey-provider", "x-portkey-api-key")

    replaced = staff_client.post(change_url(gateway), change_data(
        gateway, extra_headers="x-portkey-provider: anthropic"))
    assert replaced.status_code == 302, form_errors(replaced)
    gateway.refresh_from_db()
    assert gateway.get_extra_headers() == {"x-portkey-provider": "anthropic"}


def test_the_clear_checkbox_removes_the_headers(staff_client, gateway):
    response = staff_client.post(change_url(gateway), change_data(
        gateway, clear_extra_headers="on"))

    assert response.status_code == 302, form_errors(response)
    gateway.refresh_from_db()
    assert gateway.extra_headers_encrypted == ""
    assert ">-</td>" in row_of(changelist(staff_client), "gateway")


def test_clearing_and_typing_headers_at_once_is_refused(staff_client, gateway):
    response = staff_client.post(change_url(gateway), change_data(
        gateway, extra_headers="x-a: 1", clear_extra_headers="on"))

    assert "Either type new extra headers or remove the stored ones" in str(
        form_errors(response))


def test_the_add_page_has_the_request_fields_but_nothing_to_clear(staff_client):
    text = staff_client.get(add_url()).content.decode()

    for name in ("auth_header", "extra_headers", "api_version", "native_dialects"):
        assert f'name="{name}"' in text
    assert 'name="clear_extra_headers"' not in text


@pytest.mark.parametrize(("fields", "message"), [
    ({"extra_headers": "x portkey provider: openai"},
     "'x portkey provider' is not a header name"),
    ({"extra_headers": "x-portkey-provider openai"},
     "Line 1 has no colon: write each header as Name: value."),
    ({"extra_headers": "Authorization: Bearer sk-x"},
     "The header Authorization is set by the router itself"),
    ({"extra_headers": "Host: evil.example"}, "The header Host is set by the router itself"),
    ({"extra_headers": "x-a: 1\nX-A: 2"}, "The header X-A is given twice."),
    ({"native_dialects": "chat,assistants"}, "Unknown dialect 'assistants'"),
    ({"api_version": "2024 10 21"}, "is not an API version"),
    ({"auth_header": "basic"}, "Select a valid choice."),
])
def test_bad_request_settings_are_refused_with_clear_errors(staff_client, fields, message):
    response = staff_client.post(add_url(), form_data(name="gateway", **fields))

    assert response.status_code == 200
    assert message in html.unescape(" ".join(form_errors(response)))
    assert not Worker.objects.filter(name="gateway").exists()


def test_a_plain_worker_lists_no_headers(staff_client):
    worker_create(name="plain", kind="openai", base_url="https://p.example/v1",
                  models=[("m", "")])

    assert ">-</td>" in row_of(changelist(staff_client), "plain")
