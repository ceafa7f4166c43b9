"""A client that hangs up, at whatever moment, leaves no hold behind and one log line."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
from django.db import transaction

from billing.models import Hold, UsageRecord, Wallet
from proxy.dialects.chat.render import CHAT
from proxy.entry.asgi import ApiASGIHandler
from proxy.ground.shared_state import close_redis_clients
from proxy.money import OutputMeter, wait_for_settlements
from proxy.upstream.http_client import close_upstream_sessions
from tests.loop_thread import LoopThread
from tests.proxy.money.conftest import MESSAGES, all_settled


def _access_lines(caplog) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "proxy.access"]


def _hang_up(router, secret: str, *, after: float, stream: bool = False) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{router.base_url}/chat/completions", timeout=after,
                   headers={"Authorization": f"Bearer {secret}"},
                   json={"model": "test-model", "messages": MESSAGES, "max_tokens": 50,
                         "stream": stream})


def _wait_until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_gone_while_its_reservation_is_in_the_database_leaves_no_hold(
    liar_worker, liar, make_key, router, caplog
):
    """The reservation's statement waits on the wallet's row (held here), the client gives
    up meanwhile, then the statement commits: the hold it took is released at once."""
    user_id, secret = make_key()
    locked, release = threading.Event(), threading.Event()

    def hold_the_wallet() -> None:
        with transaction.atomic():
            Wallet.objects.select_for_update().get(user_id=user_id)
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    locked.wait(5)
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        try:
            _hang_up(router, secret, after=0.5)
        finally:
            release.set()
            holder.join()
        _wait_until(lambda: Hold.objects.exists()
                    and not Hold.objects.filter(status="pending").exists())
        router.drain()
    assert list(Hold.objects.values_list("status", flat=True)) == ["voided"]
    record = UsageRecord.objects.get()
    assert (record.status, record.cost_micros) == ("cancelled", 0)
    all_settled()
    assert liar.requests == []
    lines = _access_lines(caplog)
    assert len(lines) == 1
    assert (lines[0]["status"], lines[0]["outcome"]) == (None, "cancelled")


def test_a_client_gone_while_waiting_for_a_worker_slot_pays_nothing_and_is_logged_once(
    liar_worker, liar, make_key, client_for, router, caplog, settings
):
    settings.ROUTER_CAPACITY_WAIT_MS = 5000
    liar_worker.max_concurrency = 1
    liar_worker.save()
    liar.configure(chunk_delay=0.05)  # the first request keeps the only slot ~3 s
    _, busy = make_key()
    user_id, secret = make_key()
    first = threading.Thread(target=lambda: list(client_for(busy).chat.completions.create(
        model="test-model", messages=MESSAGES, stream=True)))
    first.start()
    _wait_until(lambda: len(liar.requests) == 1)
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        _hang_up(router, secret, after=0.5)
        _wait_until(lambda: Hold.objects.filter(wallet__user_id=user_id,
                                                status="voided").exists())
        first.join()
        router.drain()
    assert len(liar.requests) == 1  # the second never reached the upstream
    record = UsageRecord.objects.get(user_id=user_id)
    assert (record.status, record.cost_micros) == ("cancelled", 0)
    all_settled()
    lines = [line for line in _access_lines(caplog) if line["user_id"] == user_id]
    assert [(line["status"], line["outcome"]) for line in lines] == [(None, "cancelled")]


@pytest.mark.django_db(transaction=True)
def test_a_stream_whose_client_left_before_its_first_byte_is_settled_at_once(
    liar_worker, liar, make_key, settings
):
    """The ASGI server is told of the disconnect while the response's start is being sent:
    the relay's events were never read, yet the upstream is stopped and the hold settled
    (the prompt is paid for: the upstream had started)."""
    settings.ALLOWED_HOSTS = ["router.test"]
    liar.configure(chunk_delay=0.05)
    _, secret = make_key()
    body = orjson.dumps({"model": "test-model", "messages": MESSAGES, "stream": True,
                         "max_tokens": 50})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("router.test", 80),
             "headers": [(b"host", b"router.test"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {secret}".encode())]}
    sent: list[dict[str, Any]] = []

    async def serve() -> None:
        gone = asyncio.Event()
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, Any]:
            message = next(messages, None)
            if message is not None:
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.start":
                gone.set()  # the client is gone by the time the headers would reach it
                await asyncio.sleep(1)

        await ApiASGIHandler()(scope, receive, send)
        # As the server's shutdown does, for this loop.
        await wait_for_settlements()
        await close_upstream_sessions()
        await close_redis_clients()

    loop = LoopThread()
    try:
        loop.run(serve())
    finally:
        loop.close()
    assert [m["type"] for m in sent] == ["http.response.start"]
    hold = Hold.objects.get()
    assert hold.status == "posted"
    record = UsageRecord.objects.get()
    assert (record.status, record.completion_tokens) == ("cancelled", 0)
    assert record.cost_micros == record.prompt_tokens > 0
    all_settled()
    _wait_until(lambda: liar.client_disconnects == 1)


class _StreamCall:
    """What the relay's events need of a Call, recording its settlement."""

    def __init__(self) -> None:
        self.chat = type("Chat", (), {"model": "m", "include_usage": False})()
        self.dialect = CHAT
        self.meter = OutputMeter(allowance=100, n=1)
        self.first_token_at: float | None = None
        self.request_id, self.worker, self.reply_text = "req-1", "w", ""
        self.resolving = False
        self.finished: list[tuple[object, bool, str]] = []

    async def finish(self, reported: object, *, complete: bool, status: str) -> None:
        self.resolving = True
        await asyncio.sleep(0.05)  # the charge's statement
        self.finished.append((reported, complete, status))


def test_a_disconnect_while_a_broken_stream_is_wrapped_up_does_not_skip_its_charge():
    """After an upstream dies mid-stream, the relay frees the worker's slot (a Redis round
    trip) and then charges what was delivered: the client's disconnect, arriving during
    that round trip, must not skip the charge."""
    from proxy.relay.completion import _events
    from proxy.upstream.providers.base import UpstreamError

    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hello"}}]}

    async def scenario() -> _StreamCall:
        releasing = asyncio.Event()
        call = _StreamCall()

        class Lease:
            async def release(self) -> None:
                releasing.set()
                await asyncio.sleep(0.05)

            async def failed(self) -> None:
                pass

        class Upstream:
            def ready(self) -> bool:
                return False

            async def aclose(self) -> None:
                pass

        async def chunks():
            yield dict(chunk)
            raise UpstreamError("the upstream died", retryable=False)

        events = _events(call, Lease(), Upstream(), chunks(), dict(chunk))

        async def client() -> None:
            async for _ in events:
                pass

        reading = asyncio.ensure_future(client())
        await releasing.wait()
        reading.cancel()  # the client's disconnect
        with pytest.raises(asyncio.CancelledError):
            await reading
        await wait_for_settlements()
        return call

    call = asyncio.run(scenario())
    assert call.finished == [(None, False, "upstream_error")]
