"""A worker's extra headers at rest and on the target: checked, encrypted, never shown; and
what the providers build from them for each call."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from multidict import CIMultiDictProxy

from proxy.crypto import encrypt_secret
from proxy.models import Worker
from proxy.selectors import _target
from proxy.upstream.providers.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from proxy.upstream.providers.base import UpstreamTarget
from proxy.upstream.providers.http import endpoint
from proxy.upstream.providers.openai import _JSON_ONLY, _headers
from tests.proxy.workers_headers.gateways import PORTKEY_API_KEY

PORTKEY = {"x-portkey-provider": "openai", "x-portkey-api-key": PORTKEY_API_KEY}


def worker_with(headers: dict[str, str], **fields: str) -> Worker:
    worker = Worker(name="gw", kind=fields.pop("kind", "openai"),
                    base_url="https://gw.example/v1", **fields)
    worker.set_extra_headers(headers)
    return worker


# --- the model ---------------------------------------------------------------------------

def test_extra_headers_round_trip_and_only_the_names_are_exposed():
    worker = worker_with({" x-portkey-provider ": " openai ",
                          "x-portkey-api-key": PORTKEY_API_KEY})

    assert worker.get_extra_headers() == PORTKEY
    assert worker.extra_header_names == ("x-portkey-provider", "x-portkey-api-key")
    assert PORTKEY_API_KEY not in worker.extra_headers_encrypted


def test_no_extra_headers_store_nothing():
    worker = worker_with(PORTKEY)
    worker.set_extra_headers({})

    assert worker.extra_headers_encrypted == ""
    assert worker.get_extra_headers() == {}
    assert worker.extra_header_names == ()


@pytest.mark.django_db
def test_the_database_holds_no_header_value_in_plaintext():
    worker = worker_with(PORTKEY)
    worker.save()

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM proxy_worker WHERE id = %s", [worker.pk])
        row = cursor.fetchone()
    assert PORTKEY_API_KEY not in repr(row)
    assert "x-portkey-provider" not in repr(row)
    assert Worker.objects.get(pk=worker.pk).get_extra_headers() == PORTKEY


@pytest.mark.parametrize(("headers", "message"), [
    ({"x portkey": "v"}, "'x portkey' is not a header name"),
    ({"x-a:b": "v"}, "'x-a:b' is not a header name"),
    ({"": "v"}, "'' is not a header name"),
    ({"x-é": "v"}, "is not a header name"),
    ({"Authorization": "Bearer sk-1"}, "The header Authorization is set by the router itself"),
    ({"api-key": "k"}, "give the key as the API key"),
    ({"X-Api-Key": "k"}, "The header X-Api-Key is set by the router itself"),
    ({"Host": "evil.example"}, "The header Host is set by the router itself"),
    ({"content-length": "1"}, "set by the router itself"),
    ({"Content-Type": "text/plain"}, "set by the router itself"),
    ({"Transfer-Encoding": "chunked"}, "set by the router itself"),
    ({"Connection": "close"}, "set by the router itself"),
    ({"x-a": "one\r\nx-injected: two"}, "The value of the header x-a has a line break"),
    ({"x-a": "one\ntwo"}, "has a line break"),
    ({"x-a": "nul\x00"}, "control character"),
    ({"x-a": "   "}, "The header x-a has no value."),
    ({"x-a": "v" * 4001}, "longer than 4000 characters"),
    ({"x-a": "1", "X-A": "2"}, "The header X-A is given twice."),
    ({f"x-{i}": "v" for i in range(33)}, "At most 32 extra headers."),
])
def test_bad_headers_are_refused_with_a_message_that_names_them(headers, message):
    worker = Worker(name="gw", kind="openai")

    with pytest.raises(ValidationError) as excinfo:
        worker.set_extra_headers(headers)

    assert message in " ".join(excinfo.value.messages)
    assert worker.extra_headers_encrypted == ""


def test_a_refusal_never_quotes_a_value():
    with pytest.raises(ValidationError) as excinfo:
        Worker().set_extra_headers({"x-secret": "sk-SECRET\nmore"})

    assert "sk-SECRET" not in str(excinfo.value)


@pytest.mark.parametrize(("text", "stored"), [
    ("", ""), (" chat , responses ", "chat,responses"), ("messages", "messages"),
    ("chat,responses,messages,embeddings,completions",
     "chat,responses,messages,embeddings,completions"),
])
def test_native_dialects_are_normalised(text, stored):
    worker = Worker(native_dialects=text)
    worker.clean()
    assert worker.native_dialects == stored


@pytest.mark.parametrize(("field", "text", "message"), [
    ("native_dialects", "chat,assistants", "Unknown dialect 'assistants'; choose from chat, "
                                           "responses, messages, embeddings, completions"),
    ("native_dialects", "chat,chat", "A dialect is listed twice."),
    ("api_version", "2024-10-21&x=1", "is not an API version"),
    ("api_version", "v" * 41, "is not an API version"),
])
def test_unknown_dialects_and_odd_api_versions_are_refused(field, text, message):
    with pytest.raises(ValidationError) as excinfo:
        Worker(**{field: text}).clean()
    assert message in " ".join(excinfo.value.message_dict[field])


# --- the target --------------------------------------------------------------------------

def test_the_target_carries_the_settings_and_no_plaintext_in_its_repr():
    worker = worker_with(PORTKEY, auth_header="api-key", api_version="2024-10-21",
                         native_dialects="chat,responses")
    worker.pk = 7
    worker.set_api_key("sk-KEY-PLAINTEXT")

    target = _target(worker, "gpt-x")

    assert (target.auth_header, target.api_version, target.dialects) == (
        "api-key", "2024-10-21", ("chat", "responses"))
    assert target.extra_headers == PORTKEY
    shown = repr(target)
    for hidden in (PORTKEY_API_KEY, "x-portkey", "sk-KEY-PLAINTEXT",
                   worker.extra_headers_encrypted, worker.api_key_encrypted):
        assert hidden not in shown


def test_a_plain_worker_keeps_the_kinds_dialects():
    assert _target(Worker(pk=1, name="a", kind="anthropic"), "m").dialects == ("messages",)


# --- what the providers send -------------------------------------------------------------

def target(*, headers: dict[str, str] | None = None, key: str = "sk-1",
           **fields: str) -> UpstreamTarget:
    worker = worker_with(headers or {}, **fields)
    worker.pk = 1
    worker.set_api_key(key)
    return _target(worker, "m")


def test_a_worker_without_key_or_extras_shares_the_constant_headers():
    worker = Worker(pk=1, name="a", kind="openai", base_url="http://a/v1")
    assert _headers(_target(worker, "m")) is _JSON_ONLY


@pytest.mark.parametrize(("auth_header", "name", "value"), [
    ("", "Authorization", "Bearer sk-1"),
    ("bearer", "Authorization", "Bearer sk-1"),
    ("api-key", "api-key", "sk-1"),
    ("x-api-key", "x-api-key", "sk-1"),
])
def test_the_openai_provider_sends_the_key_as_the_worker_says(auth_header, name, value):
    headers = _headers(target(auth_header=auth_header, headers=PORTKEY))

    assert isinstance(headers, CIMultiDictProxy)
    assert headers[name] == value
    assert headers["Content-Type"] == "application/json"
    assert {k: headers[k] for k in PORTKEY} == PORTKEY
    others = {"authorization", "api-key", "x-api-key"} - {name.lower()}
    assert not others & {k.lower() for k in headers}


def test_the_router_s_own_headers_win_over_a_stored_extra_of_the_same_name():
    # A row written around the checks (by hand, say) cannot replace the key or content type.
    forged = dataclasses.replace(target(), extra_headers_encrypted=encrypt_secret(
        json.dumps({"authorization": "Bearer forged", "content-type": "text/plain"})))

    headers = _headers(forged)

    assert headers.getall("Authorization") == ["Bearer sk-1"]
    assert headers.getall("Content-Type") == ["application/json"]


def test_the_url_carries_the_api_version_when_the_worker_has_one():
    assert str(endpoint("https://az.example/openai/deployments/gpt/", "/chat/completions",
                        "2024-10-21")) == (
        "https://az.example/openai/deployments/gpt/chat/completions?api-version=2024-10-21")
    assert str(endpoint("https://a.example/v1", "/chat/completions")) == (
        "https://a.example/v1/chat/completions")
    # Cached: the hot path parses each worker's URL once.
    assert endpoint("https://a.example/v1", "/x", "1") is endpoint("https://a.example/v1",
                                                                    "/x", "1")


def test_the_anthropic_provider_adds_extras_and_honours_the_auth_header():
    default = AnthropicProvider(target(kind="anthropic", headers=PORTKEY))
    bearer = AnthropicProvider(target(kind="anthropic", auth_header="bearer",
                                      api_version="2024-01-01"))

    assert default._headers() == {**PORTKEY, "Content-Type": "application/json",
                                  "anthropic-version": ANTHROPIC_VERSION, "x-api-key": "sk-1"}
    assert bearer._headers()["Authorization"] == "Bearer sk-1"
    assert "x-api-key" not in bearer._headers()
    assert bearer._url() == "https://gw.example/v1/messages?api-version=2024-01-01"
    assert default._url() == "https://gw.example/v1/messages"
