"""The limits of this process alone: the embedded default, and the fallback while Redis does
not answer. The same rules as the Redis scripts, on this process's monotonic clock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.limits.base import (
    CONCURRENCY,
    NEVER,
    REQUESTS,
    TOKENS,
    Scope,
    ScopeCount,
    Verdict,
)


@dataclass
class _ScopeState:
    # request id -> (admitted at ms, tokens), oldest first.
    window: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)
    tokens: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)  # request id -> lease ends, ms

    def expire(self, now: int, window_ms: int) -> None:
        while self.window:
            request_id, (admitted, tokens) = next(iter(self.window.items()))
            if admitted > now - window_ms:
                break
            del self.window[request_id]
            self.tokens -= tokens
        for request_id, lease_ends in list(self.in_flight.items()):
            if lease_ends <= now:
                del self.in_flight[request_id]

    def tokens_free_in(self, now: int, window_ms: int, excess: int) -> int:
        freed = 0
        for admitted, tokens in self.window.values():
            freed += tokens
            if freed >= excess:
                return admitted + window_ms - now
        return window_ms


_scopes: dict[str, _ScopeState] = {}
# ASGI servers run one event loop per process, but a test or a thread-hopping caller may
# use several: every step below is short and takes the lock.
_lock = threading.Lock()
_last_sweep = 0


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _sweep(now: int, window_ms: int) -> None:
    """Forget the scopes nobody used for a window, so idle keys do not pile up."""
    global _last_sweep
    if now - _last_sweep < window_ms:
        return
    _last_sweep = now
    for name, state in list(_scopes.items()):
        state.expire(now, window_ms)
        if not state.window and not state.in_flight:
            del _scopes[name]


def admit(scopes: Sequence[Scope], *, request_id: str, tokens: int, window_ms: int,
          lease_ms: int, busy_retry_ms: int) -> Verdict:
    with _lock:
        now = _now_ms()
        _sweep(now, window_ms)
        refusal: tuple[float, int, int, int, int] | None = None  # rank, scope, dim, retry, used
        counts: list[ScopeCount] = []
        states = [_scopes.setdefault(scope.name, _ScopeState()) for scope in scopes]
        for index, (scope, state) in enumerate(zip(scopes, states, strict=True)):
            state.expire(now, window_ms)
            limits, candidates = scope.limits, []
            requests = len(state.window)
            if limits.rpm is not None and requests >= limits.rpm:
                retry = NEVER
                if limits.rpm > 0:
                    admitted = list(state.window.values())[requests - limits.rpm][0]
                    retry = admitted + window_ms - now
                candidates.append((REQUESTS, retry, requests))
            if limits.tpm is not None and state.tokens + tokens > limits.tpm:
                retry = NEVER if tokens > limits.tpm else state.tokens_free_in(
                    now, window_ms, state.tokens + tokens - limits.tpm)
                candidates.append((TOKENS, retry, state.tokens))
            in_flight = len(state.in_flight)
            if (limits.concurrency is not None and in_flight >= limits.concurrency
                    and request_id not in state.in_flight):
                retry = NEVER if limits.concurrency == 0 else busy_retry_ms
                candidates.append((CONCURRENCY, retry, in_flight))
            for dimension, retry, used in candidates:
                rank = float("inf") if retry == NEVER else retry
                if refusal is None or rank > refusal[0]:
                    refusal = (rank, index, dimension, retry, used)
            newest = next(reversed(state.window.values()), None)
            counts.append(ScopeCount(requests, state.tokens,
                                     newest[0] + window_ms - now if newest else 0))
        if refusal is not None:
            _, index, dimension, retry, used = refusal
            return Verdict(False, index, dimension, retry, used, tuple(counts))
        for scope, state in zip(scopes, states, strict=True):
            if scope.limits.counts_window:
                _, before = state.window.pop(request_id, (0, 0))
                state.window[request_id] = (now, tokens)
                state.tokens += tokens - before
            if scope.limits.concurrency is not None:
                state.in_flight[request_id] = now + lease_ms
        return Verdict(True, -1, 0, 0, 0, tuple(counts))


def correct_tokens(scopes: Sequence[Scope], *, request_id: str, actual_tokens: int,
                   window_ms: int) -> None:
    with _lock:
        now = _now_ms()
        for scope in scopes:
            state = _scopes.get(scope.name)
            entry = state.window.get(request_id) if state else None
            if state is None or entry is None or entry[0] <= now - window_ms:
                continue
            state.window[request_id] = (entry[0], actual_tokens)
            state.tokens += actual_tokens - entry[1]


def release(scopes: Sequence[Scope], *, request_id: str) -> None:
    with _lock:
        for scope in scopes:
            state = _scopes.get(scope.name)
            if state is not None:
                state.in_flight.pop(request_id, None)


def reset() -> None:
    global _last_sweep
    with _lock:
        _scopes.clear()
        _last_sweep = 0
