from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson

from billing.models.prices import CACHE_WRITE_FACTOR
from billing.money import cost_micros
from proxy.crypto import decrypt_secret


@dataclass(frozen=True)
class UpstreamTarget:
    """Everything needed to call one worker for one model; built from the cached worker row."""

    worker_id: int
    worker_name: str
    kind: str
    base_url: str
    # The worker's key as stored (Fernet): it is decrypted only when a request is sent, so
    # the cached targets, their repr and any log line that shows one hold no plaintext.
    api_key_encrypted: str = field(default="", repr=False)
    upstream_model: str = ""
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 60.0
    total_timeout_s: float = 600.0
    priority: int = 0
    weight: int = 1
    max_concurrency: int = 64
    # The one output-cap field the upstream reads (Worker.CapField): the request is sent
    # with exactly this one, as some upstreams refuse the other.
    cap_field: str = "max_tokens"
    # How the key is sent (Worker.Auth); "" is the kind's own.
    auth_header: str = ""
    # Extra headers (a Fernet token of a JSON object), decrypted per call like the key:
    # a gateway's routing headers may carry a secret of their own (x-portkey-api-key).
    extra_headers_encrypted: str = field(default="", repr=False)
    # Sent as ?api-version= on every call when set (Azure OpenAI).
    api_version: str = ""
    # The APIs the upstream speaks natively (Worker.dialects).
    dialects: tuple[str, ...] = ("chat",)
    # The upstream's cost price in force for this model (proxy.UpstreamCost), USD per 1M
    # tokens, with the cached and cache-write defaults already applied; None: unknown.
    cost_input: Decimal | None = None
    cost_cached_input: Decimal | None = None
    cost_cache_write: Decimal | None = None
    cost_output: Decimal | None = None

    def upstream_cost_micros(self, *, prompt_tokens: int, completion_tokens: int,
                             cached_tokens: int = 0, cache_write_tokens: int = 0) -> int | None:
        """What these tokens cost us at this worker, rounded exactly like a charge (one
        ceil, ``billing.money.cost_micros``); None when the worker has no cost price."""
        if self.cost_input is None or self.cost_output is None:
            return None
        return cost_micros(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cached_tokens=cached_tokens, input_price=self.cost_input,
            output_price=self.cost_output,
            cached_input_price=(self.cost_input if self.cost_cached_input is None
                                else self.cost_cached_input),
            cache_write_tokens=cache_write_tokens,
            cache_write_price=(self.cost_input * CACHE_WRITE_FACTOR
                               if self.cost_cache_write is None else self.cost_cache_write))

    @property
    def api_key(self) -> str:
        return decrypt_secret(self.api_key_encrypted)

    @property
    def extra_headers(self) -> dict[str, str]:
        """The extra headers in plaintext: decrypted on each read and kept nowhere."""
        if not self.extra_headers_encrypted:
            return {}
        return orjson.loads(decrypt_secret(self.extra_headers_encrypted))

    def key_header(self, api_key: str) -> tuple[str, str]:
        """The header that carries ``api_key`` (see ``key_header``)."""
        return key_header(self.auth_header, self.kind, api_key)


def key_header(auth_header: str, kind: str, api_key: str) -> tuple[str, str]:
    """The (name, value) a worker's key is sent as: ``Authorization: Bearer`` unless the
    worker says otherwise, and ``x-api-key`` for Anthropic's API. Worker.Auth's other values
    are the header names themselves."""
    scheme = auth_header or ("x-api-key" if kind == "anthropic" else "bearer")
    if scheme == "bearer":
        return "Authorization", f"Bearer {api_key}"
    return scheme, api_key


class UpstreamError(Exception):
    """An upstream call that failed.

    ``retryable`` says whether another worker could succeed where this one failed (connect
    errors, timeouts, 429, 5xx); a 4xx that is the client's fault is not, and its OpenAI-shaped
    ``body`` is returned to the client as it is.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body


class UpstreamStream(Protocol):
    """An open streamed answer: chunks as parsed JSON objects, and a way to stop it."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def ready(self) -> bool:
        """Whether the next chunk can be read without waiting for the upstream (the relay
        sends the events of chunks ready together); False where a stream cannot tell."""
        ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    target: UpstreamTarget

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion (OpenAI's ``chat.completion`` object)."""
        ...

    async def open_stream(self, body: dict[str, Any]) -> UpstreamStream:
        """Start a streamed completion. Returns once the upstream accepted the request, so
        failures before the first byte raise here, while a failover is still possible."""
        ...
