"""``router worker add`` with a worker's request settings, and ``router worker list``
showing the extra headers by name only."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from proxy.models import Worker, WorkerModel
from tests.proxy.workers_headers.gateways import AZURE_KEY, PORTKEY_API_KEY

pytestmark = pytest.mark.django_db

ADD = ("worker", "add", "gateway", "--kind", "openai", "--base-url", "https://gw.example/v1",
       "--models", "gpt-x")


def router(*args: str) -> list[str]:
    stdout = StringIO()
    call_command("router", *args, stdout=stdout, stderr=StringIO())
    return stdout.getvalue().splitlines()


def refused(*args: str, match: str) -> str:
    """A command that fails with one line, writes nothing and prints nothing."""
    stdout = StringIO()
    with pytest.raises(CommandError, match=match) as excinfo:
        call_command("router", *args, stdout=stdout, stderr=StringIO())
    assert not Worker.objects.exists()
    assert not WorkerModel.objects.exists()
    assert stdout.getvalue() == ""
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_add_stores_the_request_settings_and_shows_header_names_only():
    lines = router(*ADD, "--header", "x-portkey-provider: openai",
                   "--header", f"x-portkey-api-key: {PORTKEY_API_KEY}",
                   "--auth-header", "x-api-key", "--api-version", "2024-10-21",
                   "--native-dialects", "chat, responses")

    worker = Worker.objects.get(name="gateway")
    assert worker.get_extra_headers() == {"x-portkey-provider": "openai",
                                          "x-portkey-api-key": PORTKEY_API_KEY}
    assert (worker.auth_header, worker.api_version, worker.native_dialects) == (
        "x-api-key", "2024-10-21", "chat,responses")
    assert lines == [
        "Added worker gateway: kind openai, enabled, priority 0, weight 1, max concurrency 64, "
        "cap field max_tokens, base url https://gw.example/v1, key: none, "
        "auth header x-api-key, extra headers: x-portkey-provider, x-portkey-api-key, "
        "api version 2024-10-21, native dialects chat,responses, models: gpt-x"]


def test_list_shows_header_names_never_values():
    router(*ADD, "--api-key", AZURE_KEY, "--header", f"x-portkey-api-key: {PORTKEY_API_KEY}")

    listed = "\n".join(router("worker", "list"))

    assert "extra headers: x-portkey-api-key" in listed
    for secret in (PORTKEY_API_KEY, AZURE_KEY):
        assert secret not in listed
    stored = Worker.objects.get()
    assert stored.extra_headers_encrypted not in listed


def test_a_plain_worker_is_listed_as_before():
    lines = router(*ADD)

    assert lines[0].endswith("base url https://gw.example/v1, key: none, models: gpt-x")


@pytest.mark.parametrize(("args", "match"), [
    (("--header", "x portkey: openai"), "--header: 'x portkey' is not a header name"),
    (("--header", "x-portkey-provider"),
     "--header 1 has no colon: write each header as Name: value."),
    (("--header", "x-a: 1", "--header", "Authorization: Bearer sk-x"),
     "--header: The header Authorization is set by the router itself"),
    (("--header", "Host: evil.example"), "--header: The header Host is set by the router"),
    (("--header", "x-a: 1", "--header", "x-A: 2"), "--header: The header x-A is given twice"),
    (("--native-dialects", "chat,assistants"),
     "--native-dialects: Unknown dialect 'assistants'; choose from chat, responses"),
    (("--api-version", "2024-10-21&x=1"), "--api-version: '2024-10-21&x=1' is not an API"),
])
def test_bad_request_settings_are_refused_and_nothing_is_written(args, match):
    refused(*ADD, *args, match=match)


def test_a_refused_header_value_is_not_repeated():
    message = refused(*ADD, "--header", "x-secret: sk-LEAK\x01", match="control character")

    assert "sk-LEAK" not in message


def test_an_unknown_auth_header_is_refused_by_the_parser():
    with pytest.raises(CommandError, match="invalid choice: 'basic'"):
        call_command("router", *ADD, "--auth-header", "basic", stdout=StringIO(),
                     stderr=StringIO())
