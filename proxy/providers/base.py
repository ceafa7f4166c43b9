from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class UpstreamTarget:
    """Everything needed to call one worker for one model; built from the cached worker row."""

    worker_id: int
    worker_name: str
    kind: str
    base_url: str
    api_key: str = ""  # decrypted only when the target is built for a request
    upstream_model: str = ""
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 60.0
    total_timeout_s: float = 600.0
    priority: int = 0
    weight: int = 1
    max_concurrency: int = 64


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
