"""Relay one request, whatever its dialect: pick a worker, call it, charge what it used.

Both paths keep to the design's protocol: the hold is taken before the upstream is called;
no transaction is open while it runs; the hold is settled or voided in a ``finally`` that a
client disconnect cannot skip. The upstream is called while the hold's commit reaches the
disk, and nothing of the answer goes out before it has (``_on_disk``). A whole answer goes
to the client while its charge is written (the charge is known from its usage, and the
hold covers it until then); a stream's usage chunk and ``[DONE]`` follow its settlement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse

from billing.models import ModelKind, UsageRecord
from proxy import money
from proxy.dialects.base import Dialect, StreamRender
from proxy.dialects.chat.render import CHAT
from proxy.dialects.chat.request import ChatRequest
from proxy.ground.errors import (
    ApiError,
    bad_request,
    model_not_found,
    no_available_workers,
    permission_denied,
    upstream_error,
)
from proxy.ground.metrics import UPSTREAM_ERRORS
from proxy.ground.responses import LastPart, json_response, set_own_headers
from proxy.money import Verdict
from proxy.relay.admission import admit_and_hold
from proxy.relay.call import Call
from proxy.selectors import Caller, price_for_model, targets_for_model
from proxy.upstream.providers import UpstreamError, native, provider_for
from proxy.upstream.providers.base import UpstreamStream, UpstreamTarget
from proxy.upstream.routing import Candidates, Lease
from router_admin.settings_cache import setting

logger = logging.getLogger(__name__)

async def chat_completion(*, request: Any, caller: Caller, chat: ChatRequest,
                          dialect: Dialect = CHAT) -> HttpResponse | StreamingHttpResponse:
    """Answer ``chat`` (the internal form of any dialect's request) in ``dialect``."""
    if caller.allowed_models and chat.model not in caller.allowed_models:
        raise permission_denied(f"This API key may not use the model `{chat.model}`.")
    price = await price_for_model(chat.model)
    if price is None:
        raise model_not_found(chat.model)
    _check_kind(price.kind, dialect, chat.model)
    targets = await targets_for_model(chat.model)
    if dialect is not CHAT:
        targets = [target for target in targets if dialect.serves(target)]
    if not targets:
        raise no_available_workers(chat.model)
    candidates = Candidates(targets, request.request_id)
    try:
        plan, admission = await admit_and_hold(request.request_id, caller, chat, price,
                                               candidates)
    except ApiError as error:
        # A 402 or 429 is counted for the user's usage list (in memory, written later).
        money.note_refusal(caller=caller, model=chat.model, endpoint=dialect.endpoint,
                           error=error, request_id=request.request_id)
        raise
    # From here on the request holds money: whatever happens, Call resolves it.
    call = Call(request=request, caller=caller, chat=chat, price=price, plan=plan,
                admission=admission, dialect=dialect)
    try:
        response = await (_stream(call, candidates) if chat.stream
                          else _complete(call, candidates))
    except BaseException as error:
        await money.shielded(candidates.release_unused())
        await call.abandon(error)
        if isinstance(error, ApiError):
            error.headers.update(admission.headers)
        raise
    set_own_headers(response, admission.headers)
    return response


def _check_kind(kind: str, dialect: Dialect, model: str) -> None:
    """A chat model called for embeddings, or an embedding model for anything else, is
    the client's mistake: a 400 that says which endpoint the model is for."""
    if kind == ModelKind.BOTH:
        return
    wants_embedding = dialect.endpoint == UsageRecord.Endpoint.EMBEDDINGS
    if wants_embedding and kind != ModelKind.EMBEDDING:
        raise bad_request(f"The model `{model}` is not an embedding model; call it through "
                          "/v1/chat/completions, /v1/responses, /v1/messages or "
                          "/v1/completions.", param="model", code="model_not_embedding")
    if not wants_embedding and kind == ModelKind.EMBEDDING:
        raise bad_request(f"The model `{model}` is an embedding model; call it through "
                          "/v1/embeddings.", param="model", code="model_is_embedding")


async def _ask(call: Call, target: UpstreamTarget) -> dict[str, Any]:
    """The whole answer of one worker, in the internal form."""
    codec = call.native_codec(target)
    if codec is not None:
        return await native.complete(call, target, codec)
    return await provider_for(target).complete(call.upstream_body(target))


async def _open(call: Call, target: UpstreamTarget) -> UpstreamStream:
    """One worker's stream, open, in internal chunks."""
    codec = call.native_codec(target)
    if codec is not None:
        return await native.open_stream(call, target, codec)
    return await provider_for(target).open_stream(call.upstream_body(target))


async def _failed(call: Call, failure: UpstreamError | None) -> ApiError:
    """Void the hold of a request no upstream answered, and say what to tell the client."""
    await call.void(call.report(Verdict(0, 0, 0, "", None), UsageRecord.Status.UPSTREAM_ERROR))
    if failure is None:
        # Nothing was tried: every worker was at capacity, or its circuit open.
        return no_available_workers(call.chat.model)
    if not failure.retryable and failure.status and failure.body:
        # The client's own mistake as the upstream saw it (e.g. context too long): returned
        # in OpenAI's format, not charged, and naming the model as the client does.
        return ApiError(failure.status, **_error_fields(failure.body, call))
    # What failed, and where, is in the log lines of this request id, not in the answer.
    logger.warning("request %s: no worker could take it; the last failure: %s",
                   call.request_id, failure)
    return upstream_error("The upstream failed and no other worker could take the request.")


def _error_fields(body: dict[str, Any], call: Call) -> dict[str, Any]:
    error = body.get("error") or {}
    message = str(error.get("message") or "The upstream refused the request.")
    if call.upstream_model and call.upstream_model != call.chat.model:
        message = message.replace(call.upstream_model, call.chat.model)
    return {"message": message,
            "type": str(error.get("type") or "invalid_request_error"),
            "code": error.get("code") if isinstance(error.get("code"), str) else None,
            "param": error.get("param") if isinstance(error.get("param"), str) else None}


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
        call.attempt(lease)
        call.upstream_called = True
        try:
            answer = await _ask(call, lease.target)
        except UpstreamError as exc:
            failure = exc
            if await _attempt_failed(call, lease, exc):
                continue
            break
        except BaseException:
            await money.shielded(lease.release())
            raise
        await _on_disk(call, lease)
        return await _answer(call, answer, lease)
    raise await _failed(call, failure)


async def _on_disk(call: Call, lease: Lease, upstream: UpstreamStream | None = None) -> None:
    """Wait, before the first byte of the answer, until the request's hold is on the disk
    (it was taken before its commit was done, and the upstream called meanwhile); if it
    never got there, stop the upstream, free the worker, and answer 503 instead."""
    try:
        await money.hold_committed(call.request_id)
    except BaseException:
        if upstream is not None:
            await money.shielded(upstream.aclose())
        await money.shielded(lease.release())
        raise


async def _answer(call: Call, answer: dict[str, Any], lease: Lease) -> HttpResponse:
    call.first_token_at = time.monotonic()
    # Cut at the cap before anything goes out: the client never receives more than its
    # hold covers.
    call.meter.meter_answer(answer)
    if setting("ROUTER_LOG_CONTENT"):
        call.reply_text = "".join(
            str((choice.get("message") or {}).get("content") or "")
            for choice in answer["choices"])
    verdict = call.verdict(answer.get("usage"), complete=True)
    charged = await call.finish_after_answer(verdict, lease)
    answer["model"] = call.chat.model
    answer["usage"] = call.shown_usage(verdict, charged)
    response = json_response(await call.dialect.render(call, answer))
    set_own_headers(response, {"x-router-cost-micros": str(charged)})
    return response


async def _stream(call: Call, candidates: Candidates) -> StreamingHttpResponse:
    failure: UpstreamError | None = None
    while (lease := await candidates.next()) is not None:
        call.attempt(lease)
        call.upstream_called = True
        try:
            upstream = await _open(call, lease.target)
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
        except BaseException:
            await money.shielded(lease.release())
            raise
        await _on_disk(call, lease, upstream)
        try:
            await lease.succeeded()
        except BaseException:
            # The client hung up before the stream began: stop the upstream and free the
            # slot; the request's hold is resolved by Call.abandon.
            await money.shielded(_wrap_up(call, lease, upstream, None,
                                             UsageRecord.Status.CANCELLED))
            raise
        # From its first byte on, what it delivered is charged even if this process dies.
        money.stream_checkpoints().watch(call.request_id, call)
        return EventStream(Relay(call, lease, upstream, chunks, first))
    raise await _failed(call, failure)


class EventStream(StreamingHttpResponse):
    """Server-sent events whose source the ASGI handler closes when it is done with the
    response, whether or not it read any of it (``proxy.entry.asgi.send_response``)."""

    def __init__(self, events: Relay) -> None:
        super().__init__(events, content_type="text/event-stream")
        self.events = events
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"


class Relay:
    """A stream's events for its client, relayed chunk by chunk from the upstream.

    Its hold is resolved whichever way it ends: at the end of the events (``_events``'
    ``finally``), or, if the client went before the first byte so the events never started,
    in ``aclose``.
    """

    def __init__(self, call: Call, lease: Lease, upstream: UpstreamStream,
                 chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any]) -> None:
        self._call, self._lease, self._upstream = call, lease, upstream
        self._events = _events(call, lease, upstream, chunks, first)
        self._started = self._closed = False

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await anext(self._events)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._events.aclose()
            return
        # Never read: the client went before the first byte, with the upstream working.
        await money.shielded(_wrap_up(self._call, self._lease, self._upstream, None,
                                         UsageRecord.Status.CANCELLED))


async def _events(call: Call, lease: Lease, upstream: UpstreamStream,
                  chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any]
                  ) -> AsyncIterator[bytes]:
    meter = call.meter
    render: StreamRender = call.dialect.stream(call)
    reported: object = None  # the last usage the upstream sent, wherever it rode
    last = first
    status = UsageRecord.Status.CANCELLED  # until the stream is seen to the end
    replies: list[str] | None = [] if setting("ROUTER_LOG_CONTENT") else None
    call.first_token_at = time.monotonic()
    # What the chunks already buffered render to goes out in one write: a chunk the
    # upstream has sent is never held back for one it has not (each write is a system
    # call, and an upstream under load, or a fast one, hands over several chunks at once).
    # The first token is the exception: it goes out as soon as it is rendered, with what
    # came before it (a role chunk, Anthropic's message_start), not with the rest of a
    # stream buffered whole, for which it waited for all of it to be metered and rendered
    # (2 ms more to the first token in bench/ab_routers.py).
    first_out = False  # a token went out
    pending: list[bytes] = list(render.opening())
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            last = chunk
            # Usage may come in its own chunk, beside a choice, or early: the last one
            # counts, and the client gets the router's own usage chunk at the end.
            usage = chunk.pop("usage", None)
            if usage is not None:
                reported = call.reported = usage
            if chunk.get("choices"):
                if meter.meter_chunk(chunk):
                    if replies is not None:
                        replies += _texts(chunk)
                    pending += render.chunk(chunk)
                if meter.exhausted:
                    # Every choice ended, some at the cap: nothing more may go out.
                    if pending:
                        yield b"".join(pending)
                        pending = []
                    await upstream.aclose()
                    break
            elif usage is None:
                pending += render.aside(chunk)  # no choices, no usage: a filter result
            if pending and ((not first_out and meter.any_output)
                            or len(pending) >= _PARTS_PER_WRITE or not upstream.ready()):
                first_out = first_out or meter.any_output
                yield b"".join(pending)
                pending = []
            chunk = await anext(chunks, None)
        status = UsageRecord.Status.OK
        call.reply_text = "".join(replies or ())
        # Its charge is known from its verdict, as a whole answer's: the closing events
        # (usage and cost, [DONE]) go while the charge is written, not after its commit.
        verdict = call.verdict(reported, complete=not meter.exhausted)
        charged = await call.finish_after_answer(verdict, lease)
        pending += await render.closing(call, call.shown_usage(verdict, charged), charged,
                                        last)
        if pending:
            yield LastPart(b"".join(pending))
            pending = []
    except UpstreamError as exc:
        status = UsageRecord.Status.UPSTREAM_ERROR
        logger.warning("request %s: worker %s failed mid-stream: %s", call.request_id,
                       call.worker, exc)
        await lease.failed()
        pending += render.failure(upstream_error("The upstream failed mid-stream."))
        yield LastPart(b"".join(pending))
        pending = []
    finally:
        call.reply_text = "".join(replies or ())
        # One shielded step: a cancellation arriving during any of it (the client's
        # disconnect, typically) must not skip what follows, least of all the charge.
        await money.shielded(_wrap_up(call, lease, upstream, reported, status))


# At most this many events in one write, however many the upstream had buffered.
_PARTS_PER_WRITE = 64


async def _wrap_up(call: Call, lease: Lease, upstream: UpstreamStream, reported: object,
                   status: str) -> None:
    """Stop the upstream, free the worker's slot, and, unless its settlement has started,
    charge a stream that did not end as it should have: the prompt and the output
    delivered (``reported``: the last usage seen)."""
    await upstream.aclose()
    await lease.release()
    if not call.resolving:
        await call.finish(reported, complete=False, status=status)


def _texts(chunk: dict[str, Any]) -> list[str]:
    return [str((choice.get("delta") or {}).get("content") or "")
            for choice in chunk["choices"]]
