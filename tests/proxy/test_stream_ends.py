"""A stream's body ends with its last part, in the same message (one write), while what
produced it still winds up: the settlement and the slot's release no longer stand between
a client and the end of the body it reads to (the async SDK, httpx, curl, a proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import psycopg
from django.http import StreamingHttpResponse

from billing.models import Hold, UsageRecord, Wallet
from billing.services.hot_path.connections import conninfo
from proxy.entry.asgi import send_response
from proxy.ground.responses import LastPart
from tests.proxy.stream_wire import http_reads

MESSAGES = [{"role": "user", "content": "Hello there"}]


class Source:
    """A relay's events: two parts, the second its last, then a wrap-up that waits."""

    def __init__(self, *, after_last: list[bytes] | None = None) -> None:
        self.wrap_up = asyncio.Event()
        self.wound_up = False
        self.after_last = after_last or []

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            yield LastPart(b"data: [DONE]\n\n")
            for part in self.after_last:
                yield part
        finally:
            await self.wrap_up.wait()
            self.wound_up = True


def stream_of(source: Source) -> StreamingHttpResponse:
    events = source.events()
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response.events = events  # type: ignore[attr-defined]  # as proxy.relay's EventStream
    return response


def test_the_body_ends_with_the_last_part_before_the_source_has_wound_up() -> None:
    async def run() -> tuple[list[dict[str, Any]], bool, list[dict[str, Any]]]:
        source = Source()
        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        sending = asyncio.ensure_future(send_response(stream_of(source), send))
        for _ in range(50):
            await asyncio.sleep(0)
        at_the_end = [dict(m) for m in messages]
        wound_up_then = source.wound_up
        source.wrap_up.set()
        await sending
        return at_the_end, wound_up_then, messages

    at_the_end, wound_up_then, messages = asyncio.run(run())

    assert [(m.get("body"), m.get("more_body")) for m in at_the_end[1:]] == [
        (b"data: 1\n\n", True), (b"data: [DONE]\n\n", False)]
    assert not wound_up_then
    assert messages == at_the_end  # nothing after the end, once wound up either


def test_a_part_after_the_last_is_dropped_not_sent_after_the_end(caplog) -> None:
    async def run() -> list[dict[str, Any]]:
        source = Source(after_last=[b"data: late\n\n"])
        source.wrap_up.set()
        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await send_response(stream_of(source), send)
        return messages

    messages = asyncio.run(run())

    assert [m.get("body") for m in messages[1:]] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert "a stream yielded a part after its last" in caplog.text


def test_a_stream_without_a_marked_last_part_still_ends() -> None:
    async def run() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        async def plain() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"

        await send_response(StreamingHttpResponse(plain()), send)
        return messages

    messages = asyncio.run(run())

    assert [(m.get("body"), m.get("more_body")) for m in messages[1:]] == [
        (b"data: 1\n\n", True), (b"", False)]


def test_a_relayed_streams_last_event_and_the_bodys_end_arrive_together(
        openai_worker, upstream, make_key, router) -> None:
    _, secret = make_key()
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": 20, "stream": True,
            "stream_options": {"include_usage": True}}

    for _ in range(5):
        reads = http_reads(router.base_url, "/v1/chat/completions",
                           {"Authorization": f"Bearer {secret}"}, body)
        # The read that brought [DONE] brought the end of the body with it (it left the
        # router in one write; on loopback one write arrives in one read).
        assert reads[-1].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_the_async_sdk_reads_streams_to_their_end_on_one_connection(
        openai_worker, upstream, make_key, router) -> None:
    _, secret = make_key()
    connects: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            connects.append(event)

    async def hook(request: httpx.Request) -> None:
        request.extensions["trace"] = trace

    async def run() -> list[str]:
        async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
            client = openai.AsyncOpenAI(base_url=router.base_url, api_key=secret,
                                        max_retries=0, timeout=20, http_client=http)
            texts = []
            for _ in range(10):
                stream = await client.chat.completions.create(
                    model="test-model", messages=MESSAGES, max_tokens=20, stream=True)
                texts.append("".join([c.choices[0].delta.content or "" async for c in stream
                                      if c.choices]))
            return texts

    texts = asyncio.run(run())

    assert len(texts) == 10
    assert all(texts)
    assert len(connects) == 1


def test_a_streams_closing_events_go_while_its_charge_is_written(
        openai_worker, upstream, make_key, router) -> None:
    """As a whole answer's: its charge is known from its verdict, so neither its usage
    chunk (with the cost) nor ``[DONE]`` waits for the charge's commit. Here the charge
    cannot commit (another transaction holds the usage records' table) until the stream
    has been read to its end; then it lands, exactly as the stream said."""
    user_id, secret = make_key()
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": 20, "stream": True,
            "stream_options": {"include_usage": True}}
    with psycopg.connect(conninfo(), autocommit=False) as blocker:
        blocker.execute("LOCK TABLE billing_usagerecord IN EXCLUSIVE MODE")  # reads pass
        try:
            with httpx.stream("POST", f"{router.base_url}/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {secret}"},
                              timeout=5) as response:
                lines = list(response.iter_lines())
            holds = list(Hold.objects.filter(wallet__user_id=user_id)
                         .values_list("status", flat=True))
        finally:
            blocker.rollback()
    router.drain()

    assert lines[-2:] == ["data: [DONE]", ""]
    usage = orjson.loads(lines[-4].removeprefix("data: "))["usage"]
    assert holds == ["pending"]  # the stream ended before its charge was written
    record = UsageRecord.objects.get(user_id=user_id)
    assert record.cost_micros == round(usage["cost"] * 1e6) > 0
    assert record.completion_tokens == usage["completion_tokens"]
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
