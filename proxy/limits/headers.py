"""OpenAI's ``x-ratelimit-*`` headers, for the scope with the least room left."""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.limits.base import Scope, Verdict


def duration(ms: int) -> str:
    """A duration the way OpenAI writes it (Go's style): ``20ms``, ``1.5s``, ``6m0s``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0") + "s" if millis else f"{seconds}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def ratelimit_headers(scopes: Sequence[Scope], verdict: Verdict, *, tokens: int,
                      window_ms: int) -> dict[str, str]:
    """Limit, remaining and reset of requests and of tokens, each for the scope that has the
    least remaining (counting this request when it was admitted). Reset is the time until
    the scope's window is empty again, i.e. back to its whole limit."""
    headers: dict[str, str] = {}
    admitted = 1 if verdict.allowed else 0
    for kind, limit_of, used_of in (
        ("requests", lambda s: s.limits.rpm, lambda c: c.requests + admitted),
        ("tokens", lambda s: s.limits.tpm, lambda c: c.tokens + admitted * tokens),
    ):
        tightest: tuple[int, int, int] | None = None  # remaining, limit, reset ms
        for scope, count in zip(scopes, verdict.counts, strict=True):
            limit = limit_of(scope)
            if limit is None:
                continue
            remaining = max(0, limit - used_of(count))
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, limit, window_ms if admitted else count.reset_ms)
        if tightest is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(tightest[1])
            headers[f"x-ratelimit-remaining-{kind}"] = str(tightest[0])
            headers[f"x-ratelimit-reset-{kind}"] = duration(tightest[2])
    return headers


def retry_headers(retry_ms: int) -> dict[str, str]:
    """What OpenAI's clients honour on a 429: ``retry-after-ms`` first, then ``retry-after``
    (whole seconds, rounded up so that waiting that long is always enough)."""
    return {"retry-after": str(math.ceil(retry_ms / 1000)), "retry-after-ms": str(retry_ms)}
