from __future__ import annotations

import json
import re
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from proxy.crypto import decrypt_secret, encrypt_secret


class WorkerCapField(models.TextChoices):
    """The request field an upstream reads as its output cap (``Worker.CapField``).

    Defined outside ``Worker`` so that ``Worker.Meta``'s constraint can name it: a class
    body cannot see the names of the class around it."""

    # The labels are the wire names: staff pick the field their upstream's docs name.
    MAX_TOKENS = "max_tokens", "max_tokens"
    MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens"


# The APIs ("dialects") a client may call, by the name a worker lists them under.
DIALECTS = ("chat", "responses", "messages", "embeddings", "completions")
# What each kind of worker speaks natively when its row lists nothing.
DEFAULT_DIALECTS = {"openai": ("chat", "completions", "embeddings"), "anthropic": ("messages",),
                    "mock": ("chat", "embeddings")}


class WorkerAuth(models.TextChoices):
    """How the worker's key is sent: OpenAI's ``Authorization: Bearer``, Azure OpenAI's
    ``api-key`` header, or Anthropic's ``x-api-key``."""

    BEARER = "bearer", "Authorization: Bearer <key>"
    API_KEY = "api-key", "api-key: <key> (Azure OpenAI)"
    X_API_KEY = "x-api-key", "x-api-key: <key>"


# RFC 7230's token: the only characters a header name may have.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than TAB: CR or LF in a value would let it start a header (or a
# request) of its own.
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Names the router sets itself (the key goes in through auth_header, never as an extra) and
# hop-by-hop names that describe one connection, not the request: an extra one would
# contradict what aiohttp sends or smuggle a second key past the auth_header setting.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding",
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect",
    "authorization", "proxy-authorization", "api-key", "x-api-key", "anthropic-version",
})
EXTRA_HEADERS_MAX = 32
_HEADER_NAME_MAX = 100
_HEADER_VALUE_MAX = 4000
# Azure's versions look like 2024-10-21 or 2024-12-01-preview; anything else is a typo.
_API_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Worker(models.Model):
    """An upstream endpoint that serves models: an OpenAI-compatible server or the mock."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic Messages API"
        MOCK = "mock", "Built-in mock (offline)"

    CapField = WorkerCapField
    Auth = WorkerAuth

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.URLField(max_length=500, blank=True,
                               help_text="e.g. https://api.openai.com/v1 (not used by mock)")
    # One field, never both and never the wrong one: OpenAI's reasoning models refuse
    # max_tokens, and an upstream that ignores the field it got generates past the cap the
    # request's hold was sized for.
    cap_field = models.CharField(
        max_length=32, choices=CapField.choices, default=CapField.MAX_TOKENS,
        help_text="The output-cap field this upstream reads: llama.cpp and Ollama read "
        "max_tokens; OpenAI's reasoning models require max_completion_tokens. The router "
        "sends exactly this one. Ignored by anthropic and mock workers.",
    )
    # Fernet token; the plaintext never reaches the database, the admin or a log line.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    auth_header = models.CharField(
        max_length=16, choices=Auth.choices, blank=True, default="",
        help_text="How the key is sent; empty means the kind's own (Bearer for "
        "OpenAI-compatible, x-api-key for Anthropic). Azure OpenAI wants api-key.")
    # Extra request headers as a Fernet token of a JSON object: a gateway upstream's
    # routing headers (x-portkey-provider, ...) may carry secrets, so none is shown back.
    extra_headers_encrypted = models.TextField(blank=True, editable=False)
    api_version = models.CharField(
        max_length=40, blank=True,
        help_text="Sent as the api-version query parameter on every call (Azure OpenAI).")
    native_dialects = models.CharField(
        max_length=100, blank=True,
        help_text="The APIs the upstream speaks natively, comma-separated, from: chat, "
        "responses, messages, embeddings, completions. Empty means the kind's own "
        "(OpenAI-compatible: chat, completions, embeddings; Anthropic: messages). Others "
        "are translated.")
    enabled = models.BooleanField(default=True)
    # Draining: no new requests are routed here; those in flight finish.
    draining = models.BooleanField(default=False)
    # Written by the periodic probe (proxy.tasks.workers_probe); routing skips unhealthy ones.
    healthy = models.BooleanField(default=True)
    last_probe_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_probe_latency_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    last_probe_error = models.CharField(max_length=500, blank=True, editable=False)
    priority = models.IntegerField(default=0, help_text="Higher tiers are tried first.")
    weight = models.PositiveIntegerField(default=1)
    max_concurrency = models.PositiveIntegerField(default=64)
    connect_timeout_s = models.FloatField(default=5.0)
    first_byte_timeout_s = models.FloatField(default=60.0)
    total_timeout_s = models.FloatField(default=600.0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(kind="mock") | ~Q(base_url=""),
                                   name="proxy_worker_base_url_unless_mock"),
            models.CheckConstraint(condition=Q(weight__gte=1), name="proxy_worker_weight_min"),
            models.CheckConstraint(
                condition=Q(connect_timeout_s__gt=0, first_byte_timeout_s__gt=0,
                            total_timeout_s__gt=0),
                name="proxy_worker_timeouts_positive",
            ),
            models.CheckConstraint(condition=Q(cap_field__in=WorkerCapField.values),
                                   name="proxy_worker_cap_field_known"),
            models.CheckConstraint(condition=Q(auth_header="")
                                   | Q(auth_header__in=WorkerAuth.values),
                                   name="proxy_worker_auth_header_known"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def set_api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = encrypt_secret(plaintext)

    def get_api_key(self) -> str:
        return decrypt_secret(self.api_key_encrypted)

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    @property
    def dialects(self) -> tuple[str, ...]:
        """The dialects this worker's upstream is sent natively."""
        listed = tuple(d for d in (p.strip() for p in self.native_dialects.split(","))
                       if d)
        return listed or DEFAULT_DIALECTS.get(self.kind, ("chat",))

    def clean(self) -> None:
        """Normalise and check what a form or the CLI typed for the upstream's dialects and
        API version (the database cannot: both are free text to it)."""
        super().clean()
        errors: dict[str, list[str]] = {}
        for field, check in (("native_dialects", self.clean_native_dialects),
                             ("api_version", self.clean_api_version)):
            try:
                setattr(self, field, check(getattr(self, field)))
            except ValidationError as exc:
                errors[field] = exc.messages
        if errors:
            raise ValidationError(errors)

    @staticmethod
    def clean_native_dialects(text: str) -> str:
        """``" chat, responses"`` -> ``"chat,responses"``; unknown or repeated names refused."""
        names = [part.strip() for part in (text or "").split(",") if part.strip()]
        for name in names:
            if name not in DIALECTS:
                raise ValidationError(f"Unknown dialect {name[:40]!r}; choose from "
                                      f"{', '.join(DIALECTS)} (comma-separated).")
        if len(set(names)) != len(names):
            raise ValidationError("A dialect is listed twice.")
        return ",".join(names)

    @staticmethod
    def clean_api_version(text: str) -> str:
        version = (text or "").strip()
        if version and not (len(version) <= 40 and _API_VERSION.fullmatch(version)):
            raise ValidationError(f"{version[:40]!r} is not an API version such as "
                                  "2024-10-21 (letters, digits, '.', '-' and '_', at most 40).")
        return version

    def set_extra_headers(self, headers: Mapping[str, str]) -> None:
        """Store ``headers`` encrypted, after ``check_extra_headers``; an empty mapping
        removes them. Nothing is stored when one is refused."""
        checked = self.check_extra_headers(headers)
        self.extra_headers_encrypted = encrypt_secret(json.dumps(checked)) if checked else ""

    def get_extra_headers(self) -> dict[str, str]:
        if not self.extra_headers_encrypted:
            return {}
        return json.loads(decrypt_secret(self.extra_headers_encrypted))

    @property
    def extra_header_names(self) -> tuple[str, ...]:
        """The names alone: all the admin and the CLI show, as any value may be a secret."""
        return tuple(self.get_extra_headers())

    @classmethod
    def check_extra_headers(cls, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` stripped, or a ValidationError naming the first bad one. Messages
        name the header, never quote its value: it may be a secret."""
        if len(headers) > EXTRA_HEADERS_MAX:
            raise ValidationError(f"At most {EXTRA_HEADERS_MAX} extra headers.")
        checked: dict[str, str] = {}
        seen: set[str] = set()
        for raw_name, raw_value in headers.items():
            name, value = str(raw_name).strip(), str(raw_value).strip()
            cls._check_header(name, value)
            if name.lower() in seen:  # header names are case-insensitive
                raise ValidationError(f"The header {name} is given twice.")
            seen.add(name.lower())
            checked[name] = value
        return checked

    @staticmethod
    def _check_header(name: str, value: str) -> None:
        if not (len(name) <= _HEADER_NAME_MAX and _HEADER_NAME.fullmatch(name)):
            raise ValidationError(
                f"{name[:40]!r} is not a header name: use letters, digits and "
                "!#$%&'*+-.^_`|~ only (no spaces or colons).")
        if name.lower() in RESERVED_HEADERS:
            key = name.lower() in ("authorization", "api-key", "x-api-key")
            raise ValidationError(
                f"The header {name} is set by the router itself and cannot be an extra "
                "header" + ("; give the key as the API key and choose how it is sent with "
                            "the auth header setting." if key else "."))
        if not value:
            raise ValidationError(f"The header {name} has no value.")
        if len(value) > _HEADER_VALUE_MAX:
            raise ValidationError(f"The value of the header {name} is longer than "
                                  f"{_HEADER_VALUE_MAX} characters.")
        if _HEADER_VALUE_BAD.search(value):
            raise ValidationError(f"The value of the header {name} has a line break or "
                                  "another control character.")


class UpstreamCost(models.Model):
    """What the upstream charges us for a worker's model, in USD per 1M tokens, from
    ``effective_from`` on: versioned like our prices (a change is a new row), so every usage
    record's upstream cost is computed at the version in force when it was served."""

    worker_model = models.ForeignKey("WorkerModel", on_delete=models.CASCADE,
                                     related_name="costs")
    input_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True,
        help_text="Empty means the input price.")
    cache_write_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True,
        help_text="Empty means 1.25x the input price (Anthropic's 5-minute cache).")
    output_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    effective_from = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["worker_model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["worker_model", "effective_from"],
                                    name="proxy_cost_one_version_per_instant"),
            models.CheckConstraint(
                condition=Q(input_usd_per_mtok__gte=0, output_usd_per_mtok__gte=0)
                & (Q(cached_input_usd_per_mtok__isnull=True)
                   | Q(cached_input_usd_per_mtok__gte=0))
                & (Q(cache_write_usd_per_mtok__isnull=True)
                   | Q(cache_write_usd_per_mtok__gte=0)),
                name="proxy_cost_not_negative"),
        ]

    def __str__(self) -> str:
        return (f"{self.worker_model_id}: ${self.input_usd_per_mtok} in / "
                f"${self.output_usd_per_mtok} out per 1M tokens")


class WorkerModel(models.Model):
    """A model a worker serves: the name clients use, and the upstream's own name for it."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="models")
    model = models.CharField(max_length=200, help_text="The name clients send.")
    upstream_model = models.CharField(max_length=200, blank=True,
                                      help_text="The upstream's name; empty means the same.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["worker", "model"], name="proxy_worker_model_once"),
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.upstream_name} on {self.worker.name}"

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.model


class StoredResponse(models.Model):
    """A Responses API answer kept for its owner (``store``, the default), so that a later
    request can name it as ``previous_response_id`` and ``GET /v1/responses/{id}`` can
    return it. Deleted past ``ROUTER_RESPONSES_RETENTION_DAYS`` by a beat task."""

    id = models.CharField(primary_key=True, max_length=64)  # "resp_...", as the client saw it
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="stored_responses")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True,
                                blank=True, related_name="+")
    model = models.CharField(max_length=200)
    # The whole context as chat messages (earlier turns, this input, this output; not the
    # instructions, which OpenAI does not carry over): replayed, and charged, as input.
    messages = models.JSONField()
    response = models.JSONField()  # the rendered response object
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.id


# The fleet roll-ups live in their own module; imported here, Django finds them as models of
# this app.
from proxy.rollups import WorkerRollup  # noqa: E402, F401
