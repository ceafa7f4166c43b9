"""Health probes: one cheap, authenticated ``GET {base_url}/models`` per worker.

Listing models proves that the upstream is up, speaks HTTP and accepts our key, without
spending a token. No database access happens here: the services read the workers before
and write the outcomes after, so no transaction is open while we wait on the network.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from django.core.exceptions import ImproperlyConfigured
from yarl import URL

from proxy.models import Worker
from proxy.upstream.providers.base import key_header
from proxy.upstream.providers.http import endpoint

# A probe is a liveness check, not a request: an upstream that takes longer than this to
# list its models is not one to send traffic to.
PROBE_CONNECT_TIMEOUT_S = 3.0
PROBE_TOTAL_TIMEOUT_S = 5.0
# Probes in flight at once, so a long list of workers cannot open hundreds of sockets.
PROBE_CONCURRENCY = 16
ANTHROPIC_VERSION = "2023-06-01"

_ERROR_MAX_CHARS = 200
_ERROR_BODY_MAX_BYTES = 4096
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: int | None  # None when no answer came back (refused, timed out)
    error: str = ""  # one line, never the API key; "" when ok


@dataclass(frozen=True)
class _Request:
    """What one probe sends, read from the worker before any I/O."""

    url: URL
    headers: dict[str, str]
    secrets: tuple[str, ...]  # only to scrub them from error text


def probe_worker(worker: Worker) -> ProbeResult:
    """Probe one worker now (synchronous)."""
    return probe_workers([worker])[0]


def probe_workers(workers: Sequence[Worker]) -> list[ProbeResult]:
    """Probe ``workers`` concurrently (at most ``PROBE_CONCURRENCY`` at once); one result
    per worker, in the same order. Never raises for an upstream's failure."""
    planned: list[_Request | ProbeResult] = [_plan(worker) for worker in workers]
    requests = [item for item in planned if isinstance(item, _Request)]
    if not requests:
        return [item for item in planned if isinstance(item, ProbeResult)]
    answers = iter(asyncio.run(_probe_all(requests)))
    return [next(answers) if isinstance(item, _Request) else item for item in planned]


def _plan(worker: Worker) -> _Request | ProbeResult:
    if worker.kind == Worker.Kind.MOCK:
        return ProbeResult(ok=True, latency_ms=0)  # answers in-process, no network
    try:
        secret = worker.get_api_key()
        extras = worker.get_extra_headers()
    except ImproperlyConfigured:
        return ProbeResult(ok=False, latency_ms=None,
                           error="the stored API key or extra headers cannot be decrypted "
                                 "with ROUTER_ENCRYPTION_KEYS")
    # The same headers and URL as a request (extras, the key as auth_header says, the
    # api-version): a gateway that refuses calls without its routing header must fail a
    # probe for the same reason, and pass it once the header is there.
    headers = {**extras, "Accept": "application/json", "User-Agent": "binom-router-probe"}
    if worker.kind == Worker.Kind.ANTHROPIC:
        headers["anthropic-version"] = ANTHROPIC_VERSION
    if secret:
        name, value = key_header(worker.auth_header, worker.kind, secret)
        headers[name] = value
    # Any extra value may be a secret (x-portkey-api-key), so each is scrubbed like the key.
    secrets = tuple(value for value in (secret, *extras.values()) if value)
    return _Request(url=endpoint(worker.base_url, "/models", worker.api_version),
                    headers=headers, secrets=secrets)


async def _probe_all(requests: list[_Request]) -> list[ProbeResult]:
    # A session of its own, closed at the end: asyncio.run's loop is gone afterwards, so
    # the request path's pooled session (one per loop) must not be created on it.
    timeout = aiohttp.ClientTimeout(total=PROBE_TOTAL_TIMEOUT_S,
                                    sock_connect=PROBE_CONNECT_TIMEOUT_S)
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=PROBE_CONCURRENCY, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:

        async def bounded(request: _Request) -> ProbeResult:
            async with limit:
                return await _probe(session, request)

        return await asyncio.gather(*(bounded(request) for request in requests))


async def _probe(session: aiohttp.ClientSession, request: _Request) -> ProbeResult:
    started = time.perf_counter()
    try:
        # No redirects: one could carry the x-api-key header to another host.
        async with session.get(request.url, headers=request.headers,
                               allow_redirects=False) as response:
            latency_ms = _elapsed_ms(started)
            if 200 <= response.status < 300:
                return ProbeResult(ok=True, latency_ms=latency_ms)
            body = await response.content.read(_ERROR_BODY_MAX_BYTES)
            error = f"HTTP {response.status}"
            detail = _error_detail(body)
            if detail:
                error = f"{error}: {detail}"
            return ProbeResult(ok=False, latency_ms=latency_ms,
                               error=_one_line(error, request.secrets))
    except TimeoutError as exc:
        phase = "connecting" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "waiting"
        limit = (PROBE_CONNECT_TIMEOUT_S if phase == "connecting" else PROBE_TOTAL_TIMEOUT_S)
        error = f"timed out {phase} (limit {limit:g} s)"
    except aiohttp.ClientConnectorCertificateError as exc:
        error = f"TLS certificate not accepted: {exc.certificate_error}"
    except aiohttp.ClientConnectorError as exc:
        error = f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    except aiohttp.ClientError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return ProbeResult(ok=False, latency_ms=None, error=_one_line(error, request.secrets))


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))


def _os_reason(error: OSError) -> str:
    # asyncio words a refusal "Connect call failed ('127.0.0.1', 9)"; the errno says why.
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


def _error_detail(body: bytes) -> str:
    """The message of an OpenAI or Anthropic error body, else the start of the body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_ERROR_MAX_CHARS].decode("utf-8", "replace")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return ""


def _one_line(text: str, secrets: tuple[str, ...]) -> str:
    # Upstreams quote the key they refused ("Incorrect API key provided: sk-..."): the text
    # is stored and shown to staff, so the key is cut out before anything else.
    # The longest first: a secret that contains another is cut out whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > _ERROR_MAX_CHARS:
        text = text[: _ERROR_MAX_CHARS - 1] + "…"
    return text
