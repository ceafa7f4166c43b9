"""The HTTP call every upstream adapter makes: one POST of JSON, with the worker's timeouts,
its failures turned into UpstreamErrors that say whether another worker could succeed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import aiohttp
import orjson
from yarl import URL

from proxy.upstream.http_client import UpstreamResponse, upstream_session
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget

ErrorFrom = Callable[[int, bytes], UpstreamError]


def retryable_status(status: int) -> bool:
    """Whether another worker may succeed where one answered ``status``: 401 and 403 are
    about the worker's own key or account, not the client's (who must not be told its key
    was refused); 404 is the worker's base URL or model name being wrong (the client's
    model was checked before any call); 429 and 5xx (529 is Anthropic's "overloaded") are
    the upstream's state. Any other 4xx is the client's request, as the upstream saw it."""
    return status in (401, 403, 404, 429) or status >= 500


@lru_cache(maxsize=256)
def _timeout(total: float | None, connect: float, read: float) -> aiohttp.ClientTimeout:
    # sock_read bounds every wait for bytes: the first byte and each later chunk. A worker
    # has a few distinct settings: the (immutable) objects are made once, not per request.
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)


@lru_cache(maxsize=256)
def endpoint(base_url: str, path: str, api_version: str = "") -> URL:
    """``path`` under a worker's base URL, with ``?api-version=`` when the worker has one
    (Azure OpenAI), parsed once rather than on every request."""
    url = URL(f"{base_url.rstrip('/')}{path}")
    return url.update_query({"api-version": api_version}) if api_version else url


async def post_json(target: UpstreamTarget, url: str | URL, payload: dict[str, Any],
                    headers: Mapping[str, str], *, total: float | None,
                    error_from: ErrorFrom) -> UpstreamResponse:
    """POST ``payload``; the response once its status is 200, or the UpstreamError that
    ``error_from`` makes of any other status and its body."""
    try:
        response = await upstream_session().post(
            url if isinstance(url, URL) else endpoint(url, ""), data=orjson.dumps(payload),
            headers=headers,
            timeout=_timeout(total, target.connect_timeout_s, target.first_byte_timeout_s))
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamError(f"cannot reach {target.worker_name}: {exc.__class__.__name__}",
                            retryable=True) from None
    except TimeoutError:
        raise UpstreamError(f"{target.worker_name} did not answer in time",
                            retryable=True) from None
    if response.status != 200:
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        finally:
            response.release()
        raise error_from(response.status, scrub(raw, target))
    return response


_REDACTED = b"[redacted]"


def scrub(raw: bytes, target: UpstreamTarget) -> bytes:
    """``raw`` without the worker's key or any extra header value. Upstreams quote what they
    refused ("Invalid API key: pk-..."), and an error's text is logged and a 4xx body is
    passed on to the client, who must never see the worker's secrets. Every extra value is
    cut, as any may be a secret; a short routing value ("openai") cut from an error's text
    is the price. Only error bodies pay for the decryption."""
    secrets = [target.api_key, *target.extra_headers.values()]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        for form in {secret.encode(), orjson.dumps(secret)[1:-1]}:  # as sent, as JSON text
            raw = raw.replace(form, _REDACTED)
    return raw


async def read_json(target: UpstreamTarget, response: UpstreamResponse) -> Any:
    """The whole body of a 200 response, parsed; a broken or non-JSON body is retryable."""
    try:
        raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"{target.worker_name} broke off its answer: "
                            f"{exc.__class__.__name__}", retryable=True) from None
    finally:
        response.release()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{target.worker_name} sent a body that is not JSON",
                            retryable=True, status=200) from None
