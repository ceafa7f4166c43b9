"""Relay one chat completion: pick a worker, call it, charge what it used.

Both paths keep to the design's protocol: the hold exists before the upstream is called;
no transaction is open while it runs; the hold is settled or voided in a ``finally`` that a
client disconnect cannot skip. A whole answer goes to the client while its charge is
written (the charge is known from its usage, and the hold covers it until then); a
stream's usage chunk and ``[DONE]`` follow its settlement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpResponse, StreamingHttpResponse

from billing.models import UsageRecord
from billing.money import format_usd
from proxy import charging
from proxy.call import Call
from proxy.errors import (
    ApiError,
    model_not_found,
    no_available_workers,
    permission_denied,
    upstream_error,
)
from proxy.limits import limits_admit, limits_error, limits_release
from proxy.metrics import UPSTREAM_ERRORS
from proxy.providers import UpstreamError, provider_for
from proxy.providers.base import UpstreamStream
from proxy.routing import Candidates, Lease
from proxy.selectors import Caller, price_for_model, targets_for_model
from proxy.validation import ChatRequest

logger = logging.getLogger(__name__)

JSON = "application/json"


def json_response(body: dict[str, Any], *, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type=JSON)


def error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(error.json_bytes(), status=error.status, content_type=JSON)
    for name, value in error.headers.items():
        response[name] = value
    return response


async def chat_completion(*, request_id: str, caller: Caller, chat: ChatRequest
                          ) -> HttpResponse | StreamingHttpResponse:
    if caller.allowed_models and chat.model not in caller.allowed_models:
        raise permission_denied(f"This API key may not use the model `{chat.model}`.")
    price = await price_for_model(chat.model)
    if price is None:
        raise model_not_found(chat.model)
    targets = await targets_for_model(chat.model)
    if not targets:
        raise no_available_workers(chat.model)
    plan = await charging.plan_charge(caller=caller, chat=chat, price=price)
    admission = await limits_admit(scopes=caller.limit_scopes(), request_id=request_id,
                                   tokens=plan.prompt_tokens + plan.max_tokens * chat.n)
    if not admission.allowed:
        raise limits_error(admission)
    try:
        await charging.reserve(request_id=request_id, caller=caller, chat=chat, price=price,
                               plan=plan)
        call = Call(request_id=request_id, caller=caller, chat=chat, price=price, plan=plan,
                    admission=admission)
        candidates = Candidates(targets, request_id)
        response = await (_stream(call, candidates) if chat.stream
                          else _complete(call, candidates))
    except BaseException as error:
        # A no-op when the request already settled; otherwise frees its slot at once.
        await charging.shielded(limits_release(admission))
        if isinstance(error, ApiError):
            error.headers.update(admission.headers)
        raise
    for name, value in admission.headers.items():
        response[name] = value
    return response


async def _failed(call: Call, failure: UpstreamError | None) -> ApiError:
    """Void the hold of a request no upstream answered, and say what to tell the client."""
    await call.void(call.report({"prompt_tokens": 0, "completion_tokens": 0},
                                status=UsageRecord.Status.UPSTREAM_ERROR))
    if failure is None:
        # Nothing was tried: every worker was at capacity, or its circuit open.
        return no_available_workers(call.chat.model)
    if not failure.retryable and failure.status and failure.body:
        # The client's own mistake as the upstream saw it (e.g. context too long): returned
        # as it is, in OpenAI's format, and not charged.
        return ApiError(failure.status, **_error_fields(failure.body))
    return upstream_error("The upstream failed and no other worker could take the request"
                          f": {failure}")


def _error_fields(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error") or {}
    return {"message": str(error.get("message") or "The upstream refused the request."),
            "type": str(error.get("type") or "invalid_request_error"),
            "code": error.get("code") if isinstance(error.get("code"), str) else None,
            "param": error.get("param") if isinstance(error.get("param"), str) else None}


async def _abandoned(call: Call, error: BaseException) -> None:
    """Resolve the hold of a request that stopped before any output reached the client.

    A client that hung up while the upstream was already working pays for the prompt it
    sent (the upstream bills us for it); a bug of ours charges nothing.
    """
    if isinstance(error, asyncio.CancelledError):
        await call.settle(call.report(None, status=UsageRecord.Status.CANCELLED))
    else:
        await call.void(call.report(None, status=UsageRecord.Status.UPSTREAM_ERROR))


async def _attempt_failed(call: Call, lease: Lease, exc: UpstreamError) -> bool:
    """Account for a failed attempt; True when another worker may be tried."""
    logger.warning("request %s: worker %s failed before any output: %s", call.request_id,
                   lease.target.worker_name, exc)
    await lease.release()
    UPSTREAM_ERRORS.labels(lease.target.worker_name).inc()
    if exc.retryable:
        await lease.failed()
        return True
    # The upstream answered, only to refuse this request: the worker itself is fine.
    await lease.succeeded()
    return False


async def _complete(call: Call, candidates: Candidates) -> HttpResponse:
    failure: UpstreamError | None = None
    while (lease := await candidates.next()) is not None:
        call.worker = lease.target.worker_name
        try:
            answer = await provider_for(lease.target).complete(
                call.upstream_body(lease.target))
        except UpstreamError as exc:
            failure = exc
            if await _attempt_failed(call, lease, exc):
                continue
            break
        except BaseException as exc:
            await lease.release()
            await _abandoned(call, exc)
            raise
        return await _answer(call, answer, lease)
    raise await _failed(call, failure)


async def _answer(call: Call, answer: dict[str, Any], lease: Lease) -> HttpResponse:
    call.first_token_at = time.monotonic()
    text = "".join((choice.get("message") or {}).get("content") or ""
                   for choice in answer.get("choices", []) if isinstance(choice, dict))
    report = call.report(answer.get("usage"), produced_text=text)
    call.reply_text = text
    charged = await call.settle_after_answer(report, lease)
    answer["model"] = call.chat.model
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
    if usage is None:
        usage = {"prompt_tokens": report.prompt_tokens,
                 "completion_tokens": report.completion_tokens,
                 "total_tokens": report.prompt_tokens + report.completion_tokens}
        answer["usage"] = usage
    usage["cost"] = _usd(charged)
    response = json_response(answer)
    response["x-router-cost-micros"] = str(charged)
    return response


async def _stream(call: Call, candidates: Candidates) -> StreamingHttpResponse:
    failure: UpstreamError | None = None
    while (lease := await candidates.next()) is not None:
        call.worker = lease.target.worker_name
        try:
            upstream = await provider_for(lease.target).open_stream(
                call.upstream_body(lease.target))
            chunks = aiter(upstream)
            first = await anext(chunks)
        except UpstreamError as exc:
            failure = exc
            if await _attempt_failed(call, lease, exc):
                continue
            break
        except StopAsyncIteration:
            failure = UpstreamError(f"{lease.target.worker_name} sent an empty stream",
                                    retryable=True)
            await _attempt_failed(call, lease, failure)
            continue
        except BaseException as exc:
            await lease.release()
            await _abandoned(call, exc)
            raise
        try:
            await lease.succeeded()
        except BaseException as exc:
            # The client hung up before the stream began: stop the upstream, free the slot
            # and settle, as when it hangs up earlier.
            await charging.shielded(upstream.aclose())
            await charging.shielded(lease.release())
            await _abandoned(call, exc)
            raise
        response = StreamingHttpResponse(_relay(call, lease, upstream, chunks, first),
                                         content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    raise await _failed(call, failure)


def _usd(micros: int) -> orjson.Fragment:
    # Exact decimal text in the JSON, never a float on our side.
    return orjson.Fragment(format_usd(micros).encode())


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _produced(chunk: dict[str, Any], into: list[str]) -> None:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key in ("content", "refusal", "reasoning_content"):
            if isinstance(delta.get(key), str):
                into.append(delta[key])
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                into.append(str(function.get("name") or ""))
                into.append(str(function.get("arguments") or ""))


async def _relay(call: Call, lease: Lease, upstream: UpstreamStream,
                 chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any]
                 ) -> AsyncIterator[bytes]:
    produced: list[str] = []
    usage: dict[str, Any] | None = None
    settled = False
    status = UsageRecord.Status.CANCELLED  # until the stream is seen to the end
    call.first_token_at = time.monotonic()
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            if chunk.get("usage") and not chunk.get("choices"):
                # The last chunk: settle now, so the client's usage chunk can carry the cost.
                usage = chunk["usage"]
                call.reply_text = "".join(produced)
                charged = await call.settle(call.report(usage))
                settled = True
                if call.chat.include_usage:
                    chunk["model"] = call.chat.model
                    usage["cost"] = _usd(charged)
                    yield _sse(chunk)
            else:
                _produced(chunk, produced)
                chunk["model"] = call.chat.model
                if not call.chat.include_usage:
                    chunk.pop("usage", None)
                yield _sse(chunk)
            chunk = await anext(chunks, None)
        status = UsageRecord.Status.OK
        yield b"data: [DONE]\n\n"
    except UpstreamError as exc:
        status = UsageRecord.Status.UPSTREAM_ERROR
        logger.warning("request %s: worker %s failed mid-stream: %s", call.request_id,
                       call.worker, exc)
        await lease.failed()
        yield _sse(upstream_error(f"The upstream failed mid-stream: {exc}").body())
    finally:
        await upstream.aclose()
        await lease.release()
        if not settled:
            # Cut off (client gone, upstream dead) or no usage sent: charge the prompt and
            # the tokens actually produced, never more than was delivered.
            call.reply_text = "".join(produced)
            await call.settle(call.report(usage, produced_text=call.reply_text,
                                          status=status))
