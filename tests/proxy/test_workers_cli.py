"""Upstream workers: the service's checks, the key at rest, ``router worker ...`` and the demo."""

from __future__ import annotations

import asyncio
import re
import socket
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from proxy.ground.cache import TTLCache
from proxy.models import Worker, WorkerModel
from proxy.services import (
    WorkerError,
    worker_create,
    worker_set_draining,
    worker_set_enabled,
    workers_probe_all,
)
from tests.proxy.upstream import UpstreamServer
from tests.router_admin.cli import manage

SECRET = "sk-upstream-PLAINTEXT-0123456789abcdef"

# A cache of the kind the request path keeps; every service call must empty it.
_probe: TTLCache[str, str] = TTLCache(ttl=lambda: 3600)


def router(*args: str) -> list[str]:
    stdout = StringIO()
    call_command("router", *args, stdout=stdout, stderr=StringIO())
    return stdout.getvalue().splitlines()


def snapshot() -> tuple:
    return (
        list(Worker.objects.order_by("pk").values()),
        list(WorkerModel.objects.order_by("pk").values()),
    )


def refused(*args: str, match: str) -> str:
    """A ``router`` command that must fail with one line and write nothing."""
    before = snapshot()
    stdout = StringIO()
    with pytest.raises(CommandError, match=match) as excinfo:
        call_command("router", *args, stdout=stdout, stderr=StringIO())
    assert snapshot() == before
    assert stdout.getvalue() == ""
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def openai_worker(**kwargs) -> Worker:
    return worker_create(**{"name": "up", "kind": "openai", "base_url": "https://up.example/v1",
                            "api_key": SECRET, "models": [("gpt-x", "")], **kwargs})


def served(worker: Worker) -> list[tuple[str, str]]:
    return sorted(worker.models.values_list("model", "upstream_model"))


# --- the service -------------------------------------------------------------------------

@pytest.mark.django_db
def test_worker_create_stores_settings_and_models():
    worker = worker_create(
        name=" main ", kind="openai", base_url="https://api.example.com/v1/",
        api_key=SECRET, models=[("gpt-4o", ""), ("fast", "gpt-4o-mini"), ("same", "same")],
        priority=5, weight=3, max_concurrency=10, enabled=False,
    )

    worker.refresh_from_db()
    assert (worker.name, worker.kind, worker.base_url) == (
        "main", "openai", "https://api.example.com/v1")
    assert (worker.priority, worker.weight, worker.max_concurrency, worker.enabled) == (
        5, 3, 10, False)
    assert served(worker) == [("fast", "gpt-4o-mini"), ("gpt-4o", ""), ("same", "")]


@pytest.mark.django_db
def test_a_mock_worker_needs_no_url_or_key():
    worker = worker_create(name="mock", kind="mock", models=[("mock-gpt", "")])

    assert (worker.base_url, worker.has_api_key, worker.get_api_key()) == ("", False, "")


@pytest.mark.django_db
def test_a_worker_sends_max_tokens_unless_told_otherwise():
    worker = openai_worker()

    worker.refresh_from_db()
    assert worker.cap_field == Worker.CapField.MAX_TOKENS == "max_tokens"


@pytest.mark.django_db
def test_worker_create_stores_the_cap_field_it_is_given():
    worker = openai_worker(cap_field="max_completion_tokens")

    worker.refresh_from_db()
    assert worker.cap_field == "max_completion_tokens"


@pytest.mark.django_db
@pytest.mark.parametrize("statement", [
    "UPDATE proxy_worker SET cap_field = 'max_output_tokens' WHERE id = %s",
    "UPDATE proxy_worker SET cap_field = '' WHERE id = %s",
])
def test_the_database_refuses_a_cap_field_it_does_not_know(statement):
    worker = openai_worker()

    # The CHECK constraint, not the service, decides here: nothing reaches the request
    # path that the router could not send.
    with pytest.raises(IntegrityError, match="proxy_worker_cap_field_known"), \
            transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [worker.pk])
    worker.refresh_from_db()
    assert worker.cap_field == "max_tokens"


@pytest.mark.django_db
def test_the_key_is_encrypted_at_rest_and_round_trips():
    worker = openai_worker()

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM proxy_worker WHERE id = %s", [worker.pk])
        row = cursor.fetchone()
        cursor.execute("SELECT api_key_encrypted FROM proxy_worker WHERE id = %s", [worker.pk])
        (stored,) = cursor.fetchone()
    assert SECRET not in repr(row)
    assert stored
    assert stored != SECRET
    assert Worker.objects.get(pk=worker.pk).get_api_key() == SECRET


@pytest.mark.django_db
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "  "}, "needs a name"),
    ({"name": "x" * 101}, "at most 100 characters"),
    ({"kind": "gemini"}, "Unknown worker kind 'gemini'; choose one of openai, anthropic, mock"),
    ({"base_url": ""}, "needs a base URL"),
    ({"base_url": "api.example.com/v1"}, "not an http:// or https:// URL"),
    ({"base_url": "ftp://api.example.com/v1"}, "not an http:// or https:// URL"),
    ({"base_url": "https://user:pw@api.example.com"}, "must not contain a user name"),
    ({"kind": "mock", "base_url": "nope"}, "not an http:// or https:// URL"),
    ({"models": []}, "at least one model"),
    ({"models": [("", "x")]}, "cannot be empty"),
    ({"models": [("a", ""), ("b", ""), ("a", "z")]}, "'a' is listed twice"),
    ({"models": [("a" * 201, "")]}, "at most 200 characters"),
    ({"weight": 0}, "weight must be between 1"),
    ({"max_concurrency": 0}, "max concurrency must be between 1"),
    ({"priority": 2**31}, "priority must be between"),
    ({"priority": "1"}, "priority must be a whole number"),
    ({"cap_field": "max_output_tokens"}, "Unknown cap field 'max_output_tokens'; choose one "
                                         "of max_tokens, max_completion_tokens"),
    ({"cap_field": ""}, "Unknown cap field ''"),
])
def test_worker_create_refuses_bad_input_and_writes_nothing(kwargs, match):
    with pytest.raises(WorkerError, match=match):
        openai_worker(**kwargs)
    assert not Worker.objects.exists()
    assert not WorkerModel.objects.exists()


@pytest.mark.django_db
def test_worker_create_refuses_a_taken_name():
    openai_worker()

    with pytest.raises(WorkerError, match="A worker named 'up' already exists"):
        openai_worker(models=[("other", "")])
    assert Worker.objects.count() == 1
    assert served(Worker.objects.get()) == [("gpt-x", "")]


@pytest.mark.django_db
def test_worker_set_enabled_toggles_and_refuses_an_unknown_name():
    openai_worker()

    assert worker_set_enabled(name="up", enabled=False).enabled is False
    assert Worker.objects.get().enabled is False
    assert worker_set_enabled(name="up", enabled=False).enabled is False  # twice is harmless
    assert worker_set_enabled(name="up", enabled=True).enabled is True
    with pytest.raises(WorkerError, match="No worker is named 'nope'"):
        worker_set_enabled(name="nope", enabled=True)


def _stale() -> str:
    return "stale"


def _prime() -> None:
    asyncio.run(_probe.get_or_load("k", _stale))
    assert _probe._data


@pytest.mark.django_db
def test_every_change_clears_the_lookup_caches_now_and_on_commit(
        django_capture_on_commit_callbacks):
    for change in (lambda: openai_worker(),
                   lambda: worker_set_enabled(name="up", enabled=False),
                   lambda: worker_set_draining(name="up", draining=True)):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            _prime()
            change()
            assert not _probe._data  # at once, for this process
            _prime()  # a request that reads the rows before the change commits
        assert callbacks
        for callback in callbacks:
            callback()
        assert not _probe._data  # forgotten again once it committed


# --- the CLI -----------------------------------------------------------------------------

@pytest.mark.django_db
def test_worker_add_openai_with_models_and_upstream_names():
    lines = router("worker", "add", "main", "--kind", "openai",
                   "--base-url", "https://api.example.com/v1", "--api-key", SECRET,
                   "--models", "gpt-4o, fast=gpt-4o-mini", "--priority", "2", "--weight", "3",
                   "--max-concurrency", "8")

    worker = Worker.objects.get(name="main")
    assert (worker.kind, worker.base_url, worker.priority, worker.weight,
            worker.max_concurrency, worker.enabled) == (
        "openai", "https://api.example.com/v1", 2, 3, 8, True)
    assert worker.get_api_key() == SECRET
    assert served(worker) == [("fast", "gpt-4o-mini"), ("gpt-4o", "")]
    assert worker.cap_field == "max_tokens"
    assert lines == ["Added worker main: kind openai, enabled, priority 2, weight 3, "
                     "max concurrency 8, cap field max_tokens, "
                     "base url https://api.example.com/v1, key: set, "
                     "models: fast=gpt-4o-mini,gpt-4o"]
    assert SECRET not in "\n".join(lines)


@pytest.mark.django_db
def test_worker_add_sets_the_cap_field_a_reasoning_model_needs():
    (line,) = router("worker", "add", "o-series", "--kind", "openai",
                     "--base-url", "https://api.example.com/v1", "--models", "o3-mini",
                     "--cap-field", "max_completion_tokens")

    assert Worker.objects.get(name="o-series").cap_field == "max_completion_tokens"
    assert ", cap field max_completion_tokens, " in line


@pytest.mark.django_db
def test_worker_add_mock_needs_only_models():
    router("worker", "add", "offline", "--kind", "mock", "--models", "mock-gpt")

    worker = Worker.objects.get(name="offline")
    assert (worker.kind, worker.base_url, worker.has_api_key) == ("mock", "", False)
    assert served(worker) == [("mock-gpt", "")]


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "match"), [
    (["--kind", "openai", "--models", "a"], "needs a base URL"),
    (["--kind", "openai", "--base-url", "not a url", "--models", "a"], "not an http"),
    (["--kind", "gemini", "--models", "a"], "invalid choice: 'gemini'"),
    (["--kind", "mock"], "--models"),
    (["--kind", "mock", "--models", ""], "'' is not NAME or NAME=UPSTREAM"),
    (["--kind", "mock", "--models", "a,,b"], "'' is not NAME or NAME=UPSTREAM"),
    (["--kind", "mock", "--models", "a="], "'a=' is not NAME or NAME=UPSTREAM"),
    (["--kind", "mock", "--models", "=b"], "'=b' is not NAME or NAME=UPSTREAM"),
    (["--kind", "mock", "--models", "a,b=x,a"], "'a' is listed twice"),
    (["--kind", "mock", "--models", "a", "--weight", "0"], "weight must be between 1"),
    (["--kind", "mock", "--models", "a", "--max-concurrency", "-1"], "between 1"),
    (["--kind", "mock", "--models", "a", "--priority", "high"], "invalid int value"),
    (["--kind", "mock", "--models", "a", "--cap-field", "max_output_tokens"],
     "invalid choice: 'max_output_tokens'"),
])
def test_worker_add_refuses_bad_input_and_writes_nothing(args, match):
    refused("worker", "add", "w", *args, match=match)
    assert not Worker.objects.exists()


@pytest.mark.django_db
def test_worker_add_refuses_a_taken_name():
    openai_worker()

    refused("worker", "add", "up", "--kind", "mock", "--models", "x",
            match="A worker named 'up' already exists")


@pytest.mark.django_db
def test_worker_list_shows_everything_but_the_key():
    openai_worker(priority=1, models=[("gpt-x", ""), ("alias", "real-name")],
                  cap_field="max_completion_tokens")
    worker_create(name="mock", kind="mock", models=[("mock-gpt", "")], enabled=False)

    lines = router("worker", "list")

    assert lines == [
        "up: kind openai, enabled, healthy, circuit closed, priority 1, weight 1, "
        "max concurrency 64, cap field max_completion_tokens, base url https://up.example/v1, "
        "key: set, models: alias=real-name,gpt-x, last probe: never",
        "mock: kind mock, disabled, healthy, circuit closed, priority 0, weight 1, "
        "max concurrency 64, cap field max_tokens, base url -, key: none, models: mock-gpt, "
        "last probe: never",
    ]
    output = "\n".join(lines)
    assert SECRET not in output
    assert Worker.objects.get(name="up").api_key_encrypted not in output


@pytest.mark.django_db
def test_worker_list_with_no_workers():
    assert router("worker", "list") == ["No workers."]


@pytest.mark.django_db
def test_worker_disable_and_enable():
    openai_worker()

    assert router("worker", "disable", "up") == ["Disabled worker up."]
    assert Worker.objects.get().enabled is False
    assert router("worker", "enable", "up") == ["Enabled worker up."]
    assert Worker.objects.get().enabled is True


@pytest.mark.django_db
def test_worker_set_draining_toggles_and_refuses_an_unknown_name():
    openai_worker()

    assert worker_set_draining(name="up", draining=True).draining is True
    assert Worker.objects.get().draining is True
    assert worker_set_draining(name="up", draining=True).draining is True  # twice is harmless
    assert worker_set_draining(name=" up ", draining=False).draining is False
    assert Worker.objects.get().enabled is True  # draining is not disabling
    with pytest.raises(WorkerError, match="No worker is named 'nope'"):
        worker_set_draining(name="nope", draining=True)


@pytest.mark.django_db
def test_worker_drain_and_undrain():
    openai_worker()

    assert router("worker", "drain", "up") == [
        "Draining worker up: no new requests; those in flight finish."]
    assert Worker.objects.get().draining is True
    assert router("worker", "undrain", "up") == [
        "Undrained worker up: it takes new requests again."]
    assert Worker.objects.get().draining is False


@pytest.mark.django_db
def test_worker_list_shows_draining_unhealthy_and_the_last_probe():
    openai_worker(base_url="http://127.0.0.1:9/v1")
    worker_set_draining(name="up", draining=True)
    workers_probe_all()  # nothing listens on port 9

    (line,) = router("worker", "list")

    assert line.startswith(
        "up: kind openai, enabled, draining, unhealthy, circuit closed, priority 0, ")
    assert re.search(r", last probe: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, "
                     r"cannot connect to 127\.0\.0\.1:9: Connection refused$", line), line
    assert SECRET not in line


@pytest.mark.django_db
def test_worker_probe_prints_one_line_per_enabled_worker():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with UpstreamServer(require_api_key=SECRET) as upstream:
        openai_worker(name="good", base_url=upstream.base_url, priority=2)
        openai_worker(name="gone", base_url=refused, priority=1)
        worker_create(name="mock", kind="mock", models=[("m", "")])
        worker_create(name="off", kind="mock", models=[("m", "")], enabled=False)

        lines = router("worker", "probe")

    assert len(lines) == 3
    assert re.fullmatch(r"good: ok, \d+ ms", lines[0]), lines
    assert re.fullmatch(r"gone: FAILED, -, cannot connect to 127\.0\.0\.1:\d+: "
                        r"Connection refused", lines[1]), lines
    assert lines[2] == "mock: ok, 0 ms"
    assert dict(Worker.objects.values_list("name", "healthy")) == {
        "good": True, "gone": False, "mock": True, "off": True}
    assert Worker.objects.get(name="off").last_probe_at is None
    assert SECRET not in "\n".join(lines)


@pytest.mark.django_db
def test_worker_probe_with_no_enabled_workers():
    assert router("worker", "probe") == ["No enabled workers to probe."]


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["enable", "disable", "drain", "undrain"])
def test_worker_toggles_refuse_an_unknown_name(action):
    openai_worker()

    refused("worker", action, "nope", match="No worker is named 'nope'")


@pytest.mark.django_db
@pytest.mark.parametrize("args", [("worker",), ("worker", "frobnicate"), ("worker", "enable"),
                                  ("worker", "drain"), ("worker", "probe", "extra")])
def test_an_incomplete_worker_command_is_refused(args):
    refused(*args, match="Error:")


@pytest.mark.django_db(transaction=True)
def test_from_the_shell_bad_input_is_one_line_and_the_key_is_never_listed():
    refused_add = manage("worker", "add", "w", "--kind", "openai", "--api-key", SECRET,
                         "--models", "a")
    assert refused_add.returncode == 1
    assert refused_add.stdout == ""
    assert refused_add.stderr.splitlines() == [
        "CommandError: A worker of kind openai needs a base URL (e.g. https://api.openai.com/v1)."
    ]
    assert not Worker.objects.exists()

    added = manage("worker", "add", "w", "--kind", "openai", "--api-key", SECRET,
                   "--base-url", "http://127.0.0.1:9/v1", "--models", "a")
    listed = manage("worker", "list")

    assert added.returncode == 0, added.stderr
    assert listed.returncode == 0, listed.stderr
    assert "key: set" in listed.stdout
    assert SECRET not in added.stdout + added.stderr + listed.stdout + listed.stderr
    assert Worker.objects.get().get_api_key() == SECRET


# --- the demo ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_demo_creates_the_mock_worker_once():
    first = router("demo", "--force")
    second = router("demo", "--force")

    worker = Worker.objects.get()
    assert (worker.name, worker.kind, worker.enabled, worker.base_url) == (
        "mock", "mock", True, "")
    assert served(worker) == [("mock-embed", ""), ("mock-gpt", "")]
    assert "Worker: mock (mock) (created)" in first
    assert "Worker: mock (mock) (exists)" in second


@pytest.mark.django_db
def test_demo_leaves_a_worker_staff_changed_alone():
    router("demo", "--force")
    worker_set_enabled(name="mock", enabled=False)

    router("demo", "--force")

    assert Worker.objects.get().enabled is False
