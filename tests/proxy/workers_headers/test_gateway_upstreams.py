"""Requests and probes to upstreams that want more than a key, through the router: a
Portkey-like gateway that refuses calls without its routing headers, and an Azure-like
upstream that wants its key in ``api-key`` and an ``api-version`` on every call."""

from __future__ import annotations

import openai
import pytest

from proxy.ground.cache import clear_all_caches
from proxy.models import Worker, WorkerModel
from proxy.upstream.probes import probe_worker
from tests.log_records import every_log_record
from tests.proxy.workers_headers.gateways import (
    AZURE_API_VERSION,
    AZURE_KEY,
    PORTKEY_API_KEY,
    PORTKEY_PROVIDER,
    AzureUpstream,
    PortkeyUpstream,
)

MESSAGES = [{"role": "user", "content": "Say something deterministic."}]
PORTKEY_HEADERS = {"x-portkey-provider": PORTKEY_PROVIDER,
                   "x-portkey-api-key": PORTKEY_API_KEY}


def gateway_worker(base_url: str, *, headers: dict[str, str] | None = None, key: str = "",
                   **fields: str) -> Worker:
    worker = Worker(name="gateway", kind="openai", base_url=base_url, **fields)
    worker.set_api_key(key)
    worker.set_extra_headers(headers or {})
    worker.save()
    WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-4o-mini")
    clear_all_caches()
    return worker


def ask(client: openai.OpenAI, **kwargs) -> str:
    completion = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                                max_tokens=20, **kwargs)
    return completion.choices[0].message.content


# --- Portkey-like --------------------------------------------------------------------------

def test_a_gateway_that_wants_its_headers_refuses_a_worker_without_them(
    portkey: PortkeyUpstream, model_price, make_key, client_for, router
):
    gateway_worker(portkey.base_url, key="sk-provider")
    _, secret = make_key()

    with pytest.raises(openai.BadRequestError, match="x-portkey-provider header is required"):
        ask(client_for(secret))


def test_a_request_succeeds_once_the_worker_carries_the_gateway_headers(
    portkey: PortkeyUpstream, model_price, make_key, client_for, router
):
    worker = gateway_worker(portkey.base_url, key="sk-provider")
    _, secret = make_key()
    with pytest.raises(openai.BadRequestError):
        ask(client_for(secret))

    worker.set_extra_headers(PORTKEY_HEADERS)
    worker.save()
    clear_all_caches()

    assert ask(client_for(secret))
    sent = portkey.requests[-1].headers
    assert sent["x-portkey-provider"] == PORTKEY_PROVIDER
    assert sent["x-portkey-api-key"] == PORTKEY_API_KEY
    assert sent["Authorization"] == "Bearer sk-provider"  # the key still goes as it did


def test_a_streamed_request_carries_the_gateway_headers_too(
    portkey: PortkeyUpstream, model_price, make_key, client_for, router
):
    gateway_worker(portkey.base_url, headers=PORTKEY_HEADERS)
    _, secret = make_key()

    stream = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_tokens=20, stream=True,
        stream_options={"include_usage": True})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text
    assert portkey.requests[-1].headers["x-portkey-provider"] == PORTKEY_PROVIDER
    assert "Authorization" not in portkey.requests[-1].headers  # no key: none sent


def test_no_header_value_reaches_a_log_line(
    portkey: PortkeyUpstream, model_price, make_key, client_for, router
):
    gateway_worker(portkey.base_url, headers={**PORTKEY_HEADERS,
                                              "x-portkey-api-key": "pk-wrong-LOGGED-NOWHERE"})
    _, secret = make_key()

    with every_log_record() as lines:
        with pytest.raises(openai.InternalServerError):  # 401: the worker's fault
            ask(client_for(secret))
        probe_worker(Worker.objects.get(name="gateway"))
        router.drain()

    assert lines  # the request was logged, with the upstream's refusal
    assert not [line for line in lines if "pk-wrong-LOGGED-NOWHERE" in line.text]


def test_a_refusal_passed_on_to_the_client_does_not_quote_the_worker_s_headers(
    portkey: PortkeyUpstream, model_price, make_key, client_for, router
):
    gateway_worker(portkey.base_url, headers={**PORTKEY_HEADERS,
                                              "x-portkey-provider": "provider-QUOTED-BACK"})
    _, secret = make_key()

    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client_for(secret))

    assert excinfo.value.response.json()["error"]["message"] == "Unknown provider: [redacted]"
    assert "provider-QUOTED-BACK" not in excinfo.value.response.text


# --- Azure-like ----------------------------------------------------------------------------

def test_an_azure_worker_sends_the_key_as_api_key_and_the_api_version(
    azure: AzureUpstream, model_price, make_key, client_for, router
):
    gateway_worker(azure.base_url, key=AZURE_KEY, auth_header="api-key",
                   api_version=AZURE_API_VERSION)
    _, secret = make_key()

    assert ask(client_for(secret))
    assert ask(client_for(secret), stream=False)
    assert azure.requests[-1].headers["api-key"] == AZURE_KEY
    assert "Authorization" not in azure.requests[-1].headers
    assert azure.queries[-1] == {"api-version": AZURE_API_VERSION}


@pytest.mark.parametrize("fields", [
    {"auth_header": "", "api_version": AZURE_API_VERSION},  # Bearer: refused
    {"auth_header": "api-key", "api_version": ""},  # no api-version: Azure's 404
])
def test_an_azure_worker_missing_either_setting_is_refused(
    azure: AzureUpstream, model_price, make_key, client_for, router, fields
):
    gateway_worker(azure.base_url, key=AZURE_KEY, **fields)
    _, secret = make_key()

    # 401 and 404 are the worker's fault, not the client's: the router says it could not
    # serve the request rather than passing the upstream's answer on.
    with pytest.raises(openai.APIStatusError) as excinfo:
        ask(client_for(secret))
    assert excinfo.value.status_code >= 500
    assert AZURE_KEY not in excinfo.value.response.text


# --- probes --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_probe_sends_the_same_headers_as_a_request(portkey: PortkeyUpstream):
    without = Worker(name="bare", kind="openai", base_url=portkey.base_url)
    with_headers = Worker(name="full", kind="openai", base_url=portkey.base_url)
    with_headers.set_extra_headers(PORTKEY_HEADERS)

    refused, passed = probe_worker(without), probe_worker(with_headers)

    assert not refused.ok
    assert refused.error == ("HTTP 400: Either x-portkey-config or x-portkey-provider header "
                             "is required")
    assert passed.ok, passed.error
    assert portkey.requests[-1].path == "/v1/models"
    assert portkey.requests[-1].headers["x-portkey-api-key"] == PORTKEY_API_KEY


@pytest.mark.django_db
def test_a_probe_error_that_quotes_a_header_value_is_scrubbed(portkey: PortkeyUpstream):
    worker = Worker(name="wrong", kind="openai", base_url=portkey.base_url)
    worker.set_extra_headers({**PORTKEY_HEADERS, "x-portkey-api-key": "pk-QUOTED-BACK-123"})

    result = probe_worker(worker)

    assert not result.ok
    assert result.error == "HTTP 401: Invalid API key: [redacted]"


@pytest.mark.django_db
def test_an_azure_probe_carries_the_key_header_and_the_api_version(azure: AzureUpstream):
    worker = Worker(name="az", kind="openai", base_url=azure.base_url, auth_header="api-key",
                    api_version=AZURE_API_VERSION)
    worker.set_api_key(AZURE_KEY)

    assert probe_worker(worker).ok
    assert azure.queries[-1] == {"api-version": AZURE_API_VERSION}
    assert azure.requests[-1].headers["api-key"] == AZURE_KEY

    worker.api_version = ""
    assert probe_worker(worker).error == "HTTP 404: Resource not found"
