"""One request on its way through the router, whatever its dialect: what it asks upstream,
what it delivered, what it is charged, and its log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from billing.models import BAD_USAGE_REASONS, ModelPrice, UsageRecord
from billing.money import MoneyError, format_usd
from billing.services import UsageReport
from proxy import money
from proxy.dialects.base import Dialect, NativeCodec
from proxy.dialects.chat.render import CHAT
from proxy.dialects.chat.request import CAP_FIELDS, ChatRequest
from proxy.ground.access_log import access_log
from proxy.ground.metrics import SETTLE_FAILURES, USAGE_FLAGS, completion_observed
from proxy.ground.tokens import exact_prompt_tokens
from proxy.limits import Admission, limits_release, limits_settle, limits_settle_begin
from proxy.money import ChargePlan, OutputMeter, Verdict, check_usage
from proxy.selectors import Caller
from proxy.upstream.providers import UpstreamTarget
from proxy.upstream.routing import Lease
from router_admin.settings_cache import setting

logger = logging.getLogger("proxy.charging")

Status = UsageRecord.Status


@dataclass
class Call:
    """One request whose hold is taken; every way it ends resolves that hold once and
    writes its one access-log line (a refusal before the hold is logged by the middleware)."""

    request: Any  # the ApiRequest: its id, and the mark that this call logs it
    caller: Caller
    chat: ChatRequest
    price: ModelPrice
    plan: ChargePlan
    admission: Admission
    dialect: Dialect = CHAT  # how the client is answered, and whether to go native
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    worker: str = ""
    upstream_model: str = ""  # the model's name at the worker tried last
    target: UpstreamTarget | None = None  # the worker tried last: its cost price, too
    lease: Lease | None = None  # its slot, freed with the request's limits when it settles
    reply_text: str = ""  # what the client received, for the log only when content is on
    upstream_called: bool = False  # an upstream has started working on it
    resolving: bool = False  # its settlement (or void) has started
    reported: object = None  # a stream's last usage from the upstream, for its checkpoints
    meter: OutputMeter = field(init=False)
    request_id: str = field(init=False)
    _own_prompt: int | None = field(default=None, init=False)
    _checkpointed: int = field(default=0, init=False)  # chunks at its last checkpoint

    def __post_init__(self) -> None:
        self.meter = OutputMeter(allowance=self.plan.allowance, n=self.chat.n)
        self.request_id = self.request.request_id


    def attempt(self, lease: Lease) -> None:
        """The worker this request goes to now (each failover moves it on)."""
        target = lease.target
        self.worker, self.upstream_model, self.target = (target.worker_name,
                                                         target.upstream_model, target)
        self.lease = lease

    def native_codec(self, target: UpstreamTarget) -> NativeCodec | None:
        """The codec to send this request to ``target`` in the client's own dialect, or
        None to send the internal (chat) form."""
        if self.dialect is CHAT:
            return None
        return self.dialect.native(target)

    def upstream_body(self, target: UpstreamTarget) -> dict[str, Any]:
        body = dict(self.chat.body)
        body["model"] = target.upstream_model
        # Exactly one cap, the plan's, in the field this worker's upstream reads: a second
        # field would be read by some servers and ignored by others.
        for name in CAP_FIELDS:
            body.pop(name, None)
        body[target.cap_field] = self.plan.max_tokens
        if self.chat.stream:
            # Forced so the charge can come from the upstream's own count; the router sends
            # its own usage chunk, only if the client asked for one.
            body["stream_options"] = {**(body.get("stream_options") or {}),
                                      "include_usage": True}
        return body

    # --- what it is charged for ---

    def own_prompt(self) -> int:
        """The prompt counted the way OpenAI counts chat messages (only when needed)."""
        if self._own_prompt is None:
            self._own_prompt = (self.chat.prompt_tokens if self.chat.prompt_tokens is not None
                                else exact_prompt_tokens(self.chat.messages))
        return self._own_prompt

    def verdict(self, reported: object, *, complete: bool) -> Verdict:
        try:
            return check_usage(reported=reported, complete=complete,
                               prompt_bound=self.plan.prompt_tokens, cap=self.plan.max_tokens,
                               n=self.chat.n, delivered=self.meter.delivered,
                               own_prompt=self.own_prompt)
        except Exception:
            # A bug here must not leave the answer unpaid: charge what the router counted.
            SETTLE_FAILURES.labels("check").inc()
            logger.exception("request %s: its usage could not be checked", self.request_id)
            return self._own_counts(UsageRecord.EstimateReason.SETTLE_ERROR)

    def _own_counts(self, reason: str) -> Verdict:
        try:
            prompt, completion = self.own_prompt(), self.meter.delivered
        except Exception:
            logger.exception("request %s: its output could not be counted", self.request_id)
            prompt, completion = self.plan.prompt_tokens, self.plan.allowance * self.chat.n
        return Verdict(prompt, completion, 0, reason, None)

    def upstream_cost(self, verdict: Verdict) -> int | None:
        """What the worker charges us for the tokens this request is charged for; None when
        unknown (no worker reached, or no cost price). It must not stop the charge."""
        if self.target is None:
            return None
        try:
            return self.target.upstream_cost_micros(
                prompt_tokens=verdict.prompt_tokens,
                completion_tokens=verdict.completion_tokens,
                cached_tokens=verdict.cached_tokens,
                cache_write_tokens=verdict.cache_write_tokens)
        except MoneyError:
            logger.exception("request %s: its upstream cost could not be computed",
                             self.request_id)
            return None

    def report(self, verdict: Verdict, status: str) -> UsageReport:
        now = time.monotonic()
        return UsageReport(
            prompt_tokens=verdict.prompt_tokens, completion_tokens=verdict.completion_tokens,
            cached_tokens=verdict.cached_tokens,
            cache_write_tokens=verdict.cache_write_tokens, source=verdict.source,
            estimate_reason=verdict.reason, over_cap=self.meter.over_cap, status=status,
            worker=self.worker, latency_ms=self.elapsed_ms(now),
            ttft_ms=self.elapsed_ms(self.first_token_at), endpoint=self.dialect.endpoint,
            upstream_cost_micros=self.upstream_cost(verdict))

    def checkpoint(self) -> money.Resolution | None:
        """A running stream's charge if it were cut now (``money.stream_checkpoints``), as a
        stream its client left is charged; None when it delivered nothing since the last."""
        metered = self.meter.chunks
        if self.resolving or metered == self._checkpointed:
            return None  # (counting what it delivered costs more than this, per stream)
        self._checkpointed = metered
        usage = self.report(self.verdict(self.reported, complete=False), Status.CANCELLED)
        return money.checkpoint_of(self.request_id, price=self.price, plan=self.plan,
                                   usage=usage)

    def shown_usage(self, verdict: Verdict, charged: int) -> dict[str, Any]:
        """The usage the client is shown: exactly what it was charged for, with the
        upstream's details when its usage was believed."""
        usage = dict(verdict.believed or {})
        usage["prompt_tokens"] = verdict.prompt_tokens
        usage["completion_tokens"] = verdict.completion_tokens
        usage["total_tokens"] = verdict.prompt_tokens + verdict.completion_tokens
        if verdict.believed is None and verdict.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": verdict.cached_tokens}
        if verdict.believed is None and verdict.cache_write_tokens:
            usage.setdefault("prompt_tokens_details", {})["cache_write_tokens"] = (
                verdict.cache_write_tokens)
        usage["cost"] = usd(charged)
        return usage

    # --- settling ---

    async def finish(self, reported: object, *, complete: bool, status: str
                     ) -> tuple[int, Verdict]:
        """Charge what the request used, and wait for it (a stream that did not end as it
        should, a request given up); returns what was charged and the verdict behind it."""
        self.resolving = True
        return await money.shielded(self._finish(reported, complete, status))

    async def _finish(self, reported: object, complete: bool, status: str
                      ) -> tuple[int, Verdict]:
        verdict = self.verdict(reported, complete=complete)
        usage = self.report(verdict, status)
        charged = await money.settle(request_id=self.request_id,
                                        wallet_id=self.caller.wallet_id, price=self.price,
                                        usage=usage, fallback=lambda: self._fallback(status))
        # The token counters learn the actual count; the concurrency slot is freed, and
        # the worker's slot with it (one round trip to Redis on the way out).
        await limits_settle(self.admission,
                            actual_tokens=usage.prompt_tokens + usage.completion_tokens,
                            also_release=self.lease.hand_over() if self.lease else ())
        self.log(usage, charged)
        return charged, verdict

    def _fallback(self, status: str) -> UsageReport:
        return self.report(self._own_counts(UsageRecord.EstimateReason.SETTLE_ERROR), status)

    async def finish_after_answer(self, verdict: Verdict, lease: Lease) -> int:
        """For an answer sent whole, or a stream that ended as it should: its charge is known
        from its verdict, so the answer (a stream's closing events) goes to the client while
        the charge is written (in the background, retried if the database fails; the hold
        keeps the money reserved until then). The worker's slot, the token counters and the
        concurrency slot are settled first, so the client's next request sees them.
        Returns what the charge will be."""
        self.resolving = True
        usage = self.report(verdict, Status.OK)
        try:
            rest = self._book_now(usage, lease)
            if rest is not None:
                await money.shielded(rest)
        finally:
            # Started last, so that its first steps (the statement's parameters, the send)
            # run while the answer is on its way; in a finally, so that a client hanging up
            # during the bookkeeping (Redis round trips) cannot skip it.
            task = money.in_background(self._record(usage))
            money.hold_keeper().own(self.request_id, task)
        return money.charge_for(price=self.price, plan=self.plan, usage=usage)

    def _book_now(self, usage: UsageReport, lease: Lease) -> Coroutine[Any, Any, object] | None:
        """Free the worker's slot and correct the token counters, here and now when nothing
        needs waiting for (the usual case: a task to shield it would cost more than the
        work); else the rest, to run shielded from the client's hang-up."""
        if not lease.breaker_clean:  # its circuit has failures on record: clear them first
            return self._book_after_success(usage, lease)
        return self._settle_limits(usage, lease)

    async def _book_after_success(self, usage: UsageReport, lease: Lease) -> None:
        await lease.succeeded()
        rest = self._settle_limits(usage, lease)
        if rest is not None:
            await rest

    def _settle_limits(self, usage: UsageReport, lease: Lease
                       ) -> Coroutine[Any, Any, object] | None:
        return limits_settle_begin(
            self.admission, actual_tokens=usage.prompt_tokens + usage.completion_tokens,
            also_release=lease.hand_over())

    async def _record(self, usage: UsageReport) -> None:
        charged = await money.settle(request_id=self.request_id,
                                        wallet_id=self.caller.wallet_id, price=self.price,
                                        usage=usage, fallback=lambda: self._fallback(Status.OK),
                                        deferred=True)
        self.log(usage, charged)

    async def void(self, usage: UsageReport) -> None:
        """Release the hold, charging nothing (the client is told why by an error, which the
        middleware logs)."""
        self.resolving = True
        await money.shielded(self._void(usage))

    async def _void(self, usage: UsageReport) -> None:
        await money.void(request_id=self.request_id, wallet_id=self.caller.wallet_id,
                            usage=usage)
        await limits_release(self.admission)

    async def abandon(self, error: BaseException) -> None:
        """Resolve the hold of a request that stopped before any output reached its client.

        A client that hung up while an upstream was already working pays for the prompt
        it sent (the upstream bills us for it), and one that hung up before pays nothing;
        either is logged here. A bug of ours pays nothing, and its 500 is logged by the
        middleware.
        """
        if self.resolving:
            return
        self.resolving = True
        gone = isinstance(error, asyncio.CancelledError)
        if gone and self.upstream_called:
            await money.shielded(self._finish(None, False, Status.CANCELLED))
            return
        usage = self.report(Verdict(0, 0, 0, UsageRecord.EstimateReason.INCOMPLETE, None),
                            Status.CANCELLED if gone else Status.UPSTREAM_ERROR)
        await money.shielded(self._void(usage))
        if gone:
            self.log(usage, 0)

    # --- what is said about it ---

    def log(self, usage: UsageReport, charged: int) -> None:
        """The request's access-log line, written when its money is settled (for a stream,
        that is when it ends, which is after its HTTP status was sent)."""
        self.request.logged_by_call = True
        content = ({"messages": self.chat.messages, "reply": self.reply_text}
                   if setting("ROUTER_LOG_CONTENT") else {})
        access_log(request_id=self.request_id, method="POST", path=self.dialect.path,
                   # 200 once the answer or the stream's first chunk went out; none when
                   # the client hung up before any output.
                   status=200 if self.first_token_at is not None else None,
                   user_id=self.caller.user_id, key_prefix=self.caller.key_prefix,
                   model=self.chat.model, worker=usage.worker, outcome=usage.status,
                   prompt_tokens=usage.prompt_tokens,
                   completion_tokens=usage.completion_tokens,
                   cached_tokens=usage.cached_tokens, cost_micros=charged,
                   latency_ms=usage.latency_ms, ttft_ms=usage.ttft_ms, **content)
        completion_observed(model=self.chat.model, worker=usage.worker, outcome=usage.status,
                            prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens, charged_micros=charged,
                            latency_ms=usage.latency_ms, ttft_ms=usage.ttft_ms)
        self._flag(usage)

    def _flag(self, usage: UsageReport) -> None:
        """Count what says the upstream misbehaved, by worker, for the operator."""
        if usage.over_cap:
            USAGE_FLAGS.labels(usage.worker, "over_cap").inc()
        if usage.estimate_reason in BAD_USAGE_REASONS:
            USAGE_FLAGS.labels(usage.worker, usage.estimate_reason).inc()

    def elapsed_ms(self, since: float | None = None) -> int | None:
        if since is None:
            return None
        return int((since - self.started) * 1000)


def usd(micros: int) -> orjson.Fragment:
    """Micro-USD as exact decimal text in JSON, never a float on our side."""
    return orjson.Fragment(format_usd(micros).encode())
