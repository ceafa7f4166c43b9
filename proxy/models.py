from __future__ import annotations

from django.db import models
from django.db.models import Q

from proxy.crypto import decrypt_secret, encrypt_secret


class WorkerCapField(models.TextChoices):
    """The request field an upstream reads as its output cap (``Worker.CapField``).

    Defined outside ``Worker`` so that ``Worker.Meta``'s constraint can name it: a class
    body cannot see the names of the class around it."""

    # The labels are the wire names: staff pick the field their upstream's docs name.
    MAX_TOKENS = "max_tokens", "max_tokens"
    MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens"


class Worker(models.Model):
    """An upstream endpoint that serves models: an OpenAI-compatible server or the mock."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic Messages API"
        MOCK = "mock", "Built-in mock (offline)"

    CapField = WorkerCapField

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
