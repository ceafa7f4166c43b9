"""One chat completion on its way through the router: what it asks upstream, how what it
used is reported, settled and logged."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from billing.models import ModelPrice, UsageRecord
from billing.services import UsageReport
from proxy import charging
from proxy.access_log import access_log
from proxy.limits import Admission, limits_release, limits_settle
from proxy.metrics import completion_observed
from proxy.providers import UpstreamTarget
from proxy.routing import Lease
from proxy.selectors import Caller
from proxy.tokens import count_text_tokens, exact_prompt_tokens
from proxy.validation import ChatRequest


@dataclass
class Call:
    """One request on its way through the router."""

    request_id: str
    caller: Caller
    chat: ChatRequest
    price: ModelPrice
    plan: charging.ChargePlan
    admission: Admission
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    worker: str = ""
    reply_text: str = ""  # what the client received, for the log only when content is on

    def upstream_body(self, target: UpstreamTarget) -> dict[str, Any]:
        body = dict(self.chat.body)
        body["model"] = target.upstream_model
        cap = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        body[cap] = self.plan.max_tokens
        if self.chat.stream:
            # Forced so the charge comes from the upstream's own count; the usage chunk is
            # dropped on the way back unless the client asked for it.
            body["stream_options"] = {**(body.get("stream_options") or {}),
                                      "include_usage": True}
        return body

    async def settle(self, usage: UsageReport) -> int:
        charged = await charging.settle(request_id=self.request_id, price=self.price,
                                        plan=self.plan, usage=usage)
        # The token counters learn the actual count; the concurrency slot is freed.
        await charging.shielded(limits_settle(
            self.admission, actual_tokens=usage.prompt_tokens + usage.completion_tokens))
        self.log(usage, charged)
        return charged

    async def settle_after_answer(self, usage: UsageReport, lease: Lease) -> int:
        """For an answer sent whole: its charge is known from its usage, so the answer goes
        to the client while the charge is written (in the background, retried if the
        database fails; the hold keeps the money reserved until then). The worker's slot,
        the token counters and the concurrency slot are settled first, so the client's
        next request sees them.
        """
        try:
            await charging.shielded(self._book(usage, lease))
        finally:
            # Started last, so that its first steps (the statement's parameters, the send)
            # run while the answer is on its way; in a finally, so that a client hanging up
            # during the bookkeeping (Redis round trips) cannot skip it.
            charging.in_background(self._record(usage))
        return charging.charge_for(price=self.price, plan=self.plan, usage=usage)

    async def _book(self, usage: UsageReport, lease: Lease) -> None:
        await lease.release()
        await lease.succeeded()
        await limits_settle(self.admission,
                            actual_tokens=usage.prompt_tokens + usage.completion_tokens)

    async def _record(self, usage: UsageReport) -> None:
        charged = await charging.settle_patiently(request_id=self.request_id,
                                                  price=self.price, plan=self.plan,
                                                  usage=usage)
        self.log(usage, charged)

    async def void(self, usage: UsageReport) -> None:
        await charging.void(request_id=self.request_id, usage=usage)
        await charging.shielded(limits_release(self.admission))

    def log(self, usage: UsageReport, charged: int) -> None:
        """The request's access-log line, written when its money is settled (for a stream,
        that is when it ends, which is after its HTTP status was sent)."""
        content = ({"messages": self.chat.messages, "reply": self.reply_text}
                   if settings.ROUTER_LOG_CONTENT else {})
        access_log(request_id=self.request_id, method="POST", path="/v1/chat/completions",
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

    def elapsed_ms(self, since: float | None = None) -> int | None:
        if since is None:
            return None
        return int((since - self.started) * 1000)

    def report(self, usage: dict[str, Any] | None, *, produced_text: str = "",
               status: str = UsageRecord.Status.OK) -> UsageReport:
        now = time.monotonic()
        common = {"status": status, "worker": self.worker, "latency_ms": self.elapsed_ms(now),
                  "ttft_ms": self.elapsed_ms(self.first_token_at)}
        if usage and isinstance(usage.get("prompt_tokens"), int):
            details = usage.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens") if isinstance(details, dict) else 0
            prompt = usage["prompt_tokens"]
            return UsageReport(prompt_tokens=prompt,
                               completion_tokens=int(usage.get("completion_tokens") or 0),
                               cached_tokens=min(int(cached or 0), prompt),
                               source=UsageRecord.Source.PROVIDER, **common)
        # No usage from the upstream (cut off, or it never sends any): the prompt counted the
        # way OpenAI counts chat messages, and the tokens that were actually produced.
        return UsageReport(prompt_tokens=exact_prompt_tokens(self.chat.messages),
                           completion_tokens=count_text_tokens(produced_text),
                           source=UsageRecord.Source.ESTIMATED, **common)
