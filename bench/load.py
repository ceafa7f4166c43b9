"""The load of the benchmarks: targets (straight to the upstream, or through a router),
timed requests and streams, sequential and closed-loop phases, and their percentiles.

Every benchmark compares a target against a baseline measured in the same run, in
alternating blocks, so that the noise of a shared machine falls on both alike.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

MESSAGES = [{"role": "user", "content": "Say hi"}]
REQUEST_TIMEOUT_S = 30  # per request; a stuck request fails the run instead of hanging it


def _has_content(line: bytes) -> bool:
    """Whether an SSE ``data:`` line carries generated text (the role chunk does not)."""
    if not line.startswith(b"data:") or b'"content"' not in line:
        return False
    try:
        chunk = orjson.loads(line[5:])
    except orjson.JSONDecodeError:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


def _event_line(name: bytes) -> Callable[[bytes], bool]:
    """A stream marker: the SSE ``event: <name>`` line (Responses and Messages streams name
    every event)."""
    line = b"event: " + name
    return lambda data: data.startswith(line)


@dataclass(frozen=True)
class Target:
    """Where one kind of request goes and what it sends: the URL (its path included), the
    headers, the JSON bodies (plain and streamed) and how its stream is read. The defaults
    are the chat-completions API's; ``make_responses_target`` and ``make_messages_target``
    make the other dialects' targets."""

    name: str  # "direct", "router", "uvicorn", ...
    url: str  # one, or several the requests alternate over (router instances)
    auth: tuple[str, ...]  # values of the key header to rotate over (none for direct)
    body: bytes
    stream_body: bytes
    urls: tuple[str, ...] = ()
    auth_header: str = "Authorization"  # the header ``auth`` is sent in
    extra_headers: tuple[tuple[str, str], ...] = ()  # sent on every request, after the key
    # A stream line that carries the first generated text (time to first token) ...
    first_token: Callable[[bytes], bool] = _has_content
    # ... and the start of the line that ends a complete stream.
    end_marker: bytes = b"data: [DONE]"
    end_name: str = "[DONE]"  # what the error says when the end never came

    def headers(self, i: int) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers[self.auth_header] = self.auth[i % len(self.auth)]
        if self.extra_headers:
            headers.update(self.extra_headers)
        return headers

    def url_for(self, i: int) -> str:
        return self.urls[i % len(self.urls)] if self.urls else self.url


def make_target(name: str, url: str | Sequence[str], model: str, keys: Sequence[str], *,
                max_tokens: int = 16) -> Target:
    """A chat-completions target. ``url``: one endpoint, or several that successive requests
    alternate between."""
    urls = (url,) if isinstance(url, str) else tuple(url)
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens}
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return Target(name, urls[0], tuple(f"Bearer {k}" for k in keys), orjson.dumps(body),
                  orjson.dumps(stream), urls if len(urls) > 1 else ())


def prompt_text() -> str:
    """The text of ``MESSAGES`` (one user message): what the other dialects send as input."""
    return "\n".join(str(m["content"]) for m in MESSAGES)


def make_responses_target(name: str, url: str, model: str, keys: Sequence[str], *,
                          max_tokens: int = 16) -> Target:
    """A Responses API target (``POST /v1/responses``): the same prompt and cap as
    ``make_target``'s, not stored; a stream's first token is its first
    ``response.output_text.delta``, its end ``response.completed``."""
    body = {"model": model, "input": prompt_text(), "max_output_tokens": max_tokens,
            "store": False}
    return Target(name, url, tuple(f"Bearer {k}" for k in keys), orjson.dumps(body),
                  orjson.dumps({**body, "stream": True}),
                  first_token=_event_line(b"response.output_text.delta"),
                  end_marker=b"event: response.completed", end_name="response.completed")


ANTHROPIC_VERSION = "2023-06-01"


def make_messages_target(name: str, url: str, model: str, keys: Sequence[str], *,
                         max_tokens: int = 16) -> Target:
    """An Anthropic Messages API target (``POST /v1/messages``): the same messages and cap
    as ``make_target``'s, the key in ``x-api-key``, ``anthropic-version`` set; a stream's
    first token is its first ``content_block_delta``, its end ``message_stop``."""
    body = {"model": model, "max_tokens": max_tokens, "messages": MESSAGES}
    return Target(name, url, tuple(keys), orjson.dumps(body),
                  orjson.dumps({**body, "stream": True}), auth_header="x-api-key",
                  extra_headers=(("anthropic-version", ANTHROPIC_VERSION),),
                  first_token=_event_line(b"content_block_delta"),
                  end_marker=b"event: message_stop", end_name="message_stop")


@dataclass
class Run:
    """One phase against one target, merged over its alternating blocks."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    ttfts: list[float] = field(default_factory=list)  # seconds, streams only
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    wall: float = 0.0  # seconds the blocks took, summed
    router_cpu: float = 0.0  # CPU seconds of the router process(es) during the blocks
    postgres_cpu: float = 0.0  # CPU seconds of the bench database's backends
    busy: int = 0  # machine-wide busy jiffies during the blocks
    ticks: int = 0  # machine-wide jiffies during the blocks
    db_samples: int = 0  # looks at pg_stat_activity (concurrent router blocks only)
    db_waits: Counter[str] = field(default_factory=Counter)  # what active backends wait on

    def record(self, error: str | None, seconds: float, ttft: float | None = None) -> None:
        if error is None:
            self.ok += 1
            self.latencies.append(seconds)
            if ttft is not None:
                self.ttfts.append(ttft)
        else:
            self.errors[error] += 1

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": dict(self.errors), "wall_s": round(self.wall, 3),
                "rps": self.ok / self.wall if self.wall else None,
                "p50_ms": pct(self.latencies, 50), "p99_ms": pct(self.latencies, 99),
                "ttft_p50_ms": pct(self.ttfts, 50), "ttft_p99_ms": pct(self.ttfts, 99),
                "router_cpu_us_per_request": (1e6 * self.router_cpu / self.requests
                                              if self.requests else None)}


_request_counter = itertools.count()  # rotates keys and instances over requests


async def timed_request(session: aiohttp.ClientSession, target: Target
                        ) -> tuple[str | None, float]:
    i = next(_request_counter)
    start = time.perf_counter()
    try:
        async with session.post(target.url_for(i), data=target.body,
                                headers=target.headers(i)) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - start
    return (None if status == 200 else f"HTTP {status}"), time.perf_counter() - start


async def timed_stream(session: aiohttp.ClientSession, target: Target,
                       on_first_token: Any = None) -> tuple[str | None, float, float | None]:
    """(error, seconds to the end of the stream, seconds to the first content), as
    ``target`` marks them ([DONE] and the first content chunk for chat).
    ``on_first_token``, if given, is called when the first content arrives."""
    i = next(_request_counter)
    start = time.perf_counter()
    ttft: float | None = None
    done = False
    first_token, end_marker = target.first_token, target.end_marker
    try:
        async with session.post(target.url_for(i), data=target.stream_body,
                                headers=target.headers(i)) as response:
            if response.status != 200:
                await response.read()
                return f"HTTP {response.status}", time.perf_counter() - start, None
            async for line in response.content:
                if ttft is None and first_token(line):
                    ttft = time.perf_counter() - start
                    if on_first_token is not None:
                        on_first_token()
                if line.startswith(end_marker):
                    done = True
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - start, ttft
    elapsed = time.perf_counter() - start
    if not done or ttft is None:
        return (f"stream without {target.end_name}" if not done else "stream without content"
                ), elapsed, ttft
    return None, elapsed, ttft


async def sequential(session: aiohttp.ClientSession, target: Target, count: int, run: Run,
                     *, stream: bool = False) -> None:
    for _ in range(count):
        if stream:
            error, seconds, ttft = await timed_stream(session, target)
            run.record(error, seconds, ttft)
        else:
            run.record(*await timed_request(session, target))


async def closed_loop(session: aiohttp.ClientSession, target: Target, concurrency: int,
                      seconds: float, run: Run) -> None:
    """``concurrency`` clients, each sending its next request when the last one is answered."""
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            run.record(*await timed_request(session, target))

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def burst(session: aiohttp.ClientSession, target: Target, count: int) -> Counter[int]:
    """``count`` requests at once; how many got each HTTP status (0: no answer)."""
    async def one() -> int:
        i = next(_request_counter)
        try:
            async with session.post(target.url_for(i), data=target.body,
                                    headers=target.headers(i)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


def session_for(concurrency: int) -> aiohttp.ClientSession:
    """A client session that keeps up to ``concurrency`` connections (0: no limit)."""
    # Idle connections are dropped after 4 s, before uvicorn's 5 s keep-alive closes them
    # from its side: aiohttp's 15 s let a block reuse a connection the router was closing
    # just then (one ClientOSError in an ab_routers.py run, each target idle for seconds
    # while the others were measured).
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                     keepalive_timeout=4)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                                 skip_auto_headers=("User-Agent",))


def abba(targets: Sequence[Target], rounds: int) -> Iterator[Target]:
    """A B B A A B ... (with more targets, each round rotates the order): each target goes
    first as often as last, so drift over the run cancels out."""
    for i in range(rounds):
        order = list(targets[i % len(targets):]) + list(targets[:i % len(targets)])
        yield from (order if i % 2 == 0 else order[::-1])


def split(total: int, size: int) -> list[int]:
    blocks = [size] * (total // size)
    if total % size:
        blocks.append(total % size)
    return blocks


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def verdict(value: float | None, target: float, *, at_most: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value <= target if at_most else value >= target) else "MISS"


def fmt(value: float | None, unit: str = "ms", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}".strip()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in [header, *rows])
