"""``router worker add``, ``list``, ``enable``, ``disable``, ``drain``, ``undrain`` and
``probe``: the upstream workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import CommandError

from audit.actors import Actor
from proxy.forms import parse_header_lines
from proxy.models import Worker
from proxy.services import (
    WorkerError,
    worker_create,
    worker_set_draining,
    worker_set_enabled,
    workers_probe_all,
)
from proxy.upstream.breaker import breaker_states_now
from proxy.upstream.probes import ProbeResult
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    worker = group(subparsers, "worker", help="Manage upstream workers.")
    add = subcommand(worker, "add", handler=worker_add_command,
                     help="Add an upstream worker and the models it serves.")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=Worker.Kind.values,
                     help="openai: an OpenAI-compatible server; mock: the offline mock.")
    add.add_argument("--base-url", default="", metavar="URL",
                     help="e.g. https://api.openai.com/v1; required for openai, not for mock.")
    add.add_argument("--api-key", default="", metavar="KEY",
                     help="The upstream's secret; stored encrypted, never shown again.")
    add.add_argument("--models", required=True, metavar="LIST",
                     help="Comma-separated model names clients send; NAME=UPSTREAM when the "
                     "upstream calls it otherwise, e.g. gpt-4o,fast=gpt-4o-mini.")
    add.add_argument("--priority", type=int, default=0, metavar="N",
                     help="Higher tiers are tried first (default 0).")
    add.add_argument("--weight", type=int, default=1, metavar="N",
                     help="Share of traffic within its priority tier (default 1).")
    add.add_argument("--max-concurrency", type=int, default=64, metavar="N",
                     help="Requests in flight at most (default 64).")
    add.add_argument("--cap-field", choices=Worker.CapField.values,
                     default=Worker.CapField.MAX_TOKENS.value,
                     help="The output-cap field this upstream reads: llama.cpp and Ollama read "
                     "max_tokens; OpenAI's reasoning models require max_completion_tokens. "
                     "The router sends exactly this one (default max_tokens; ignored by "
                     "anthropic and mock workers).")
    add.add_argument("--auth-header", choices=Worker.Auth.values, default="",
                     help="How the key is sent: bearer (Authorization: Bearer), api-key "
                     "(Azure OpenAI) or x-api-key; default: the kind's own.")
    add.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                     help="An extra header sent on every call (repeatable), e.g. "
                     "'x-portkey-provider: openai'; stored encrypted, only its name is shown.")
    add.add_argument("--api-version", default="", metavar="VERSION",
                     help="Sent as ?api-version= on every call (Azure OpenAI), e.g. 2024-10-21.")
    add.add_argument("--native-dialects", default="", metavar="LIST",
                     help="The APIs the upstream speaks natively, comma-separated, from: "
                     "chat, responses, messages, embeddings, completions; default: the "
                     "kind's own.")

    subcommand(worker, "list", handler=worker_list_command,
               help="List workers, their health and models (never their keys).")

    for name, enabled in (("enable", True), ("disable", False)):
        toggle = subcommand(worker, name, handler=_toggle_command(enabled),
                            help=f"{name.capitalize()} a worker by name.")
        toggle.add_argument("name")

    drain = subcommand(worker, "drain", handler=_drain_command(True),
                       help="Send a worker no new requests; those in flight finish.")
    drain.add_argument("name")
    undrain = subcommand(worker, "undrain", handler=_drain_command(False),
                         help="Send a drained worker requests again.")
    undrain.add_argument("name")

    subcommand(worker, "probe", handler=worker_probe_command,
               help="Probe every enabled worker now and record its health.")


@contextmanager
def _refusals() -> Iterator[None]:
    # The command turns CommandError into one line and a non-zero exit; the transaction it
    # opened is rolled back, so nothing is written.
    try:
        yield
    except WorkerError as exc:
        raise CommandError(" ".join(str(exc).split())) from exc


def parse_models(spec: str) -> list[tuple[str, str]]:
    """``a,b=upstream-b`` -> ``[("a", ""), ("b", "upstream-b")]``."""
    pairs = []
    for item in spec.split(","):
        model, sep, upstream = (part.strip() for part in item.partition("="))
        if not model or (sep and not upstream):
            raise CommandError(f"--models: {item.strip()!r} is not NAME or NAME=UPSTREAM "
                               "(comma-separated, e.g. gpt-4o,fast=gpt-4o-mini).")
        pairs.append((model, upstream))
    return pairs


def _models_text(worker: Worker) -> str:
    names = [row.model if not row.upstream_model else f"{row.model}={row.upstream_model}"
             for row in sorted(worker.models.all(), key=lambda row: row.model)]
    return ",".join(names) or "-"


def _describe(worker: Worker, *, health: bool = False, circuit: str = "closed") -> str:
    states = ["enabled" if worker.enabled else "disabled"]
    if health:
        if worker.draining:
            states.append("draining")
        # The probe's verdict and the breaker's are separate: a worker that passes its probe
        # can still be out of rotation, its circuit opened by failing requests.
        states.append("healthy" if worker.healthy else "unhealthy")
        states.append(f"circuit {circuit}")
    text = (
        f"{worker.name}: kind {worker.kind}, {', '.join(states)}, "
        f"priority {worker.priority}, weight {worker.weight}, "
        f"max concurrency {worker.max_concurrency}, cap field {worker.cap_field}, "
        f"base url {worker.base_url or '-'}, "
        f"key: {'set' if worker.has_api_key else 'none'}{_request_text(worker)}, "
        f"models: {_models_text(worker)}"
    )
    return f"{text}, {_last_probe(worker)}" if health else text


def _request_text(worker: Worker) -> str:
    """The request settings that differ from the kind's own; extra headers by name only,
    as a value may be a secret."""
    parts = []
    if worker.auth_header:
        parts.append(f"auth header {worker.auth_header}")
    if worker.extra_headers_encrypted:
        try:
            names = ", ".join(worker.extra_header_names)
        except ImproperlyConfigured:
            names = "(cannot be decrypted)"
        parts.append(f"extra headers: {names}")
    if worker.api_version:
        parts.append(f"api version {worker.api_version}")
    if worker.native_dialects:
        parts.append(f"native dialects {worker.native_dialects}")
    return "".join(f", {part}" for part in parts)


def _last_probe(worker: Worker) -> str:
    if worker.last_probe_at is None:
        return "last probe: never"
    parts = [worker.last_probe_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]
    if worker.last_probe_latency_ms is not None:
        parts.append(f"{worker.last_probe_latency_ms} ms")
    if worker.last_probe_error:
        parts.append(worker.last_probe_error)
    return f"last probe: {', '.join(parts)}"


# The option each request setting comes from, to name it in a refusal.
_REQUEST_OPTIONS = {"native_dialects": "--native-dialects", "api_version": "--api-version"}


def request_settings(options: Options) -> Worker:
    """An unsaved worker holding the checked request settings (the key's header, extra
    headers, api-version, dialects), or a CommandError saying which option is wrong."""
    settings = Worker(auth_header=options["auth_header"], api_version=options["api_version"],
                      native_dialects=options["native_dialects"])
    try:
        settings.set_extra_headers(parse_header_lines(options["header"], what="--header"))
    except ValidationError as exc:
        raise CommandError(f"--header: {' '.join(exc.messages)}") from None
    try:
        settings.clean()
    except ValidationError as exc:
        raise CommandError("; ".join(f"{_REQUEST_OPTIONS.get(field, field)}: {' '.join(errors)}"
                                     for field, errors in exc.message_dict.items())) from None
    return settings


def worker_add_command(options: Options) -> list[str]:
    models = parse_models(options["models"])
    settings = request_settings(options)  # checked before anything is written
    with _refusals():
        worker = worker_create(
            name=options["name"], kind=options["kind"], base_url=options["base_url"],
            api_key=options["api_key"], models=models, priority=options["priority"],
            weight=options["weight"], max_concurrency=options["max_concurrency"],
            cap_field=options["cap_field"], request_settings=settings, actor=Actor.cli(),
        )
    return [f"Added worker {_describe(worker)}"]


def worker_list_command(options: Options) -> list[str]:
    workers = list(Worker.objects.prefetch_related("models").order_by("-priority", "name"))
    # Read where the routers keep it: Redis when configured, so this process sees theirs.
    circuits = breaker_states_now([worker.pk for worker in workers])
    return [_describe(worker, health=True, circuit=circuits.get(worker.pk, "closed"))
            for worker in workers] or ["No workers."]


def _toggle_command(enabled: bool) -> Callable[[Options], list[str]]:
    def command(options: Options) -> list[str]:
        with _refusals():
            worker = worker_set_enabled(name=options["name"], enabled=enabled,
                                        actor=Actor.cli())
        return [f"{'Enabled' if enabled else 'Disabled'} worker {worker.name}."]

    return command


def _drain_command(draining: bool) -> Callable[[Options], list[str]]:
    def command(options: Options) -> list[str]:
        with _refusals():
            worker = worker_set_draining(name=options["name"], draining=draining,
                                         actor=Actor.cli())
        if draining:
            return [f"Draining worker {worker.name}: no new requests; those in flight finish."]
        return [f"Undrained worker {worker.name}: it takes new requests again."]

    return command


def _probe_line(worker: Worker, result: ProbeResult) -> str:
    latency = "-" if result.latency_ms is None else f"{result.latency_ms} ms"
    line = f"{worker.name}: {'ok' if result.ok else 'FAILED'}, {latency}"
    return f"{line}, {result.error}" if result.error else line


def worker_probe_command(options: Options) -> list[str]:
    # The command's transaction holds no lock while the probes wait on the network: the
    # service only reads until every probe is done, then writes one row per worker.
    outcomes = workers_probe_all()
    return [_probe_line(worker, result) for worker, result in outcomes] or [
        "No enabled workers to probe."]
