"""Writes for upstream workers. Each function is one transaction, except
``workers_probe_all``, which waits on the network first and then writes row by row.

A change is seen by this process at once (its lookup caches are cleared, again after the
commit) and by other processes within ``ROUTER_LOOKUP_TTL_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_record
from audit.snapshots import Snapshot, snapshot
from proxy.ground.cache import clear_all_caches
from proxy.models import Worker, WorkerModel
from proxy.upstream.probes import ProbeResult, probe_workers

# The columns' limits, checked here so a bad value is a clear refusal, not a database error.
_NAME_MAX = Worker._meta.get_field("name").max_length
_BASE_URL_MAX = Worker._meta.get_field("base_url").max_length
_MODEL_MAX = WorkerModel._meta.get_field("model").max_length
_INT_MAX = 2**31 - 1  # PostgreSQL integer
_PROBE_ERROR_MAX = Worker._meta.get_field("last_probe_error").max_length

_validate_http_url = URLValidator(schemes=["http", "https"])


class WorkerError(Exception):
    """A change to workers that cannot be carried out; the message says why."""


# What staff set on a worker, for the audit trail; the probe's fields change on their own.
# The key is there as its ciphertext, which audit.snapshots masks by its name: the trail
# says "set" or "changed", never the key, encrypted or not.
WORKER_AUDIT_FIELDS = ("name", "kind", "base_url", "cap_field", "api_key_encrypted", "enabled",
                       "draining", "priority", "weight", "max_concurrency", "connect_timeout_s",
                       "first_byte_timeout_s", "total_timeout_s", "auth_header",
                       "extra_headers_encrypted", "api_version", "native_dialects")
# What a worker sends besides its body: set together, checked by Worker.clean().
WORKER_REQUEST_FIELDS = ("auth_header", "extra_headers_encrypted", "api_version",
                         "native_dialects")


def worker_audit_snapshot(worker: Worker) -> Snapshot:
    """A worker's settings and the models it serves (``client=upstream`` when renamed)."""
    values = snapshot(worker, fields=WORKER_AUDIT_FIELDS)
    values["models"] = sorted(
        f"{model}={upstream}" if upstream else model
        for model, upstream in worker.models.values_list("model", "upstream_model"))
    return values


def workers_changed() -> None:
    """Make this process forget cached workers now, and again once the change committed
    (a request in between could otherwise cache the old rows for a whole TTL)."""
    clear_all_caches()
    transaction.on_commit(clear_all_caches)


def worker_clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise WorkerError("A worker needs a name.")
    if len(name) > _NAME_MAX:
        raise WorkerError(f"A worker name is at most {_NAME_MAX} characters.")
    return name


def worker_clean_endpoint(*, kind: str, base_url: str) -> str:
    """Check the kind and its base URL; return the URL as it is to be stored."""
    if kind not in Worker.Kind.values:
        raise WorkerError(f"Unknown worker kind {kind!r}; choose one of "
                          f"{', '.join(Worker.Kind.values)}.")
    base_url = (base_url or "").strip()
    if not base_url:
        if kind == Worker.Kind.MOCK:
            return ""  # the mock answers in-process
        raise WorkerError(f"A worker of kind {kind} needs a base URL "
                          "(e.g. https://api.openai.com/v1).")
    if len(base_url) > _BASE_URL_MAX:
        raise WorkerError(f"A base URL is at most {_BASE_URL_MAX} characters.")
    try:
        _validate_http_url(base_url)
    except ValidationError:
        raise WorkerError(f"{base_url!r} is not an http:// or https:// URL.") from None
    split = urlsplit(base_url)
    if split.username is not None or split.password is not None:
        # The base URL is shown in the admin and the CLI; a secret belongs in the API key.
        raise WorkerError("A base URL must not contain a user name or password; "
                          "give the upstream's secret as the API key.")
    return base_url.rstrip("/")


def worker_clean_cap_field(cap_field: str) -> str:
    """Check the output-cap field the worker's upstream reads; return it as stored."""
    if cap_field not in Worker.CapField.values:
        raise WorkerError(f"Unknown cap field {cap_field!r}; choose one of "
                          f"{', '.join(Worker.CapField.values)}.")
    return str(cap_field)  # a plain string, also when given a Worker.CapField member


def worker_clean_models(models: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Client and upstream model names, stripped; the upstream name is "" when it is the
    same. At least one, and no client name twice."""
    cleaned: list[tuple[str, str]] = []
    seen: set[str] = set()
    for model, upstream in models:
        model, upstream = (model or "").strip(), (upstream or "").strip()
        if not model:
            raise WorkerError("A model name cannot be empty.")
        for value in (model, upstream):
            if len(value) > _MODEL_MAX:
                raise WorkerError(f"A model name is at most {_MODEL_MAX} characters: "
                                  f"{value[:40]!r}...")
        if model in seen:
            raise WorkerError(f"The model {model!r} is listed twice.")
        seen.add(model)
        cleaned.append((model, "" if upstream == model else upstream))
    if not cleaned:
        raise WorkerError("A worker must serve at least one model.")
    return cleaned


def _check_int(label: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkerError(f"The {label} must be a whole number.")
    if not minimum <= value <= _INT_MAX:
        raise WorkerError(f"The {label} must be between {minimum} and {_INT_MAX}; got {value}.")


def worker_create(
    *,
    name: str,
    kind: str,
    base_url: str = "",
    api_key: str = "",
    models: Iterable[tuple[str, str]],
    priority: int = 0,
    weight: int = 1,
    max_concurrency: int = 64,
    enabled: bool = True,
    cap_field: str = Worker.CapField.MAX_TOKENS,
    request_settings: Worker | None = None,
    actor: Actor | None = None,
) -> Worker:
    """Create a worker and the models it serves. ``models`` are (client name, upstream
    name) pairs; an empty upstream name means the same as the client's. The API key is
    stored only encrypted. ``cap_field`` is the output-cap field the upstream reads
    (``Worker.CapField``); anthropic and mock workers ignore it. ``request_settings``: an
    unsaved, checked worker whose key header, extra headers, api-version and native
    dialects the new one takes. Audited with an ``actor``."""
    name = worker_clean_name(name)
    base_url = worker_clean_endpoint(kind=kind, base_url=base_url)
    cap_field = worker_clean_cap_field(cap_field)
    cleaned_models = worker_clean_models(models)
    _check_int("priority", priority, minimum=-_INT_MAX)
    _check_int("weight", weight, minimum=1)
    _check_int("max concurrency", max_concurrency, minimum=1)
    if Worker.objects.filter(name=name).exists():
        raise WorkerError(f"A worker named {name!r} already exists.")
    worker = Worker(name=name, kind=kind, base_url=base_url, priority=priority, weight=weight,
                    max_concurrency=max_concurrency, enabled=enabled, cap_field=cap_field)
    if request_settings is not None:
        for field in WORKER_REQUEST_FIELDS:
            setattr(worker, field, getattr(request_settings, field))
    worker.set_api_key((api_key or "").strip())
    try:
        with transaction.atomic():
            worker.save()
            WorkerModel.objects.bulk_create(
                WorkerModel(worker=worker, model=model, upstream_model=upstream)
                for model, upstream in cleaned_models
            )
            if actor is not None:
                audit_record(actor=actor, action="worker.create", obj=worker, before=None,
                             after=worker_audit_snapshot(worker))
    except IntegrityError:
        # Lost a race with another creation of the same name: the unique index decided.
        raise WorkerError(f"A worker named {name!r} already exists.") from None
    workers_changed()
    return worker


def _worker_set_flag(*, name: str, field: str, value: bool, action: str,
                     actor: Actor | None) -> Worker:
    with transaction.atomic():
        worker = Worker.objects.select_for_update().filter(name=(name or "").strip()).first()
        if worker is None:
            raise WorkerError(f"No worker is named {name!r}.")
        if getattr(worker, field) != value:
            setattr(worker, field, value)
            worker.save(update_fields=[field, "updated_at"])
            if actor is not None:
                audit_record(actor=actor, action=action, obj=worker, before={field: not value},
                             after={field: value})
    workers_changed()
    return worker


def worker_set_enabled(*, name: str, enabled: bool, actor: Actor | None = None) -> Worker:
    """Enable or disable a worker by name; doing it twice is harmless (and audited once)."""
    return _worker_set_flag(name=name, field="enabled", value=enabled, actor=actor,
                            action="worker.enable" if enabled else "worker.disable")


def worker_set_draining(*, name: str, draining: bool, actor: Actor | None = None) -> Worker:
    """Drain a worker (no new requests; those in flight finish) or put it back; doing it
    twice is harmless (and audited once)."""
    return _worker_set_flag(name=name, field="draining", value=draining, actor=actor,
                            action="worker.drain" if draining else "worker.undrain")


def workers_probe_all(*, names: Collection[str] | None = None
                      ) -> list[tuple[Worker, ProbeResult]]:
    """Probe every enabled worker (or the enabled ones among ``names``) and record each
    outcome on its row: healthy, when, how fast, and why not.

    The network I/O comes first, with no lock taken and no write pending; then each outcome
    is one UPDATE of its own row. Probing inside a write transaction would hold row locks
    for up to the probe timeout, blocking staff edits and the other probes' writes. The
    lookup caches are cleared only when a worker's health flipped, so a routine probe costs
    the request path nothing.
    """
    workers = Worker.objects.filter(enabled=True)
    if names is not None:
        workers = workers.filter(name__in=list(names))
    probed = list(workers.order_by("-priority", "name"))
    results = probe_workers(probed)
    now = timezone.now()
    flipped = False
    for worker, result in zip(probed, results, strict=True):
        fields = {"healthy": result.ok, "last_probe_at": now,
                  "last_probe_latency_ms": result.latency_ms,
                  "last_probe_error": result.error[:_PROBE_ERROR_MAX]}
        # Not save(): updated_at records staff changes, and a concurrent edit of another
        # field (priority, say) must not be overwritten with what we read before probing.
        updated = Worker.objects.filter(pk=worker.pk).update(**fields)
        flipped = flipped or (updated > 0 and worker.healthy != result.ok)
        for field, value in fields.items():
            setattr(worker, field, value)
    if flipped:
        workers_changed()
    return list(zip(probed, results, strict=True))
