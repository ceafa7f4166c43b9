"""The lean /v1 handler builds what Django would, and a client that leaves cancels its
request whichever way the server's ``receive`` is made."""

from __future__ import annotations

import asyncio
import io

import pytest
from django.core.handlers.asgi import ASGIRequest

from proxy.entry.asgi import _Disconnect
from proxy.entry.views import ChatCompletionsView, ModelDetailView, ModelListView
from proxy.ground.api_request import ApiRequest
from proxy.ground.forwarded import ForwardedHeaders

SCOPE = {
    "type": "http", "method": "post", "path": "/v1/chat/completions", "root_path": "",
    "query_string": b"a=1", "client": ("10.0.0.7", 4321), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"router.example"), (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", b"2"), (b"authorization", b"Bearer sk-x"),
                (b"x-dup", b"one"), (b"x-dup", b"two"), (b"x_spoofed", b"dropped")],
}


def test_the_api_request_has_what_djangos_asgi_request_has():
    ours, django = ApiRequest(SCOPE, io.BytesIO(b"{}")), ASGIRequest(SCOPE, io.BytesIO(b"{}"))
    assert ours.META == django.META
    for name in ("path", "path_info", "method", "script_name", "content_type",
                 "content_params", "encoding", "body"):
        assert getattr(ours, name) == getattr(django, name), name
    assert ours.headers["X-Dup"] == "one,two"


def test_every_api_view_is_async():
    # OpenAIView.dispatch goes straight to async_dispatch on this promise.
    assert all(view.view_is_async for view in (ChatCompletionsView, ModelListView,
                                                ModelDetailView))


async def _cancelled_by_disconnect(receive_for) -> tuple[bool, bool]:
    seen_cancel = False

    async def request() -> bool:
        nonlocal seen_cancel
        disconnect = _Disconnect(receive_for())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen_cancel = True
            return disconnect.caused()
        finally:
            disconnect.disarm()
        return False

    return await asyncio.wait_for(request(), 2), seen_cancel


@pytest.mark.parametrize("kind", ["future", "coroutine"])
def test_a_disconnect_cancels_the_request_and_only_that_cancellation_is_swallowed(kind):
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()

        def receive_for():
            def receive():
                if kind == "future":  # granian: receive() is already a future
                    future = loop.create_future()
                    loop.call_later(0.05, future.set_result, {"type": "http.disconnect"})
                    return future

                async def later() -> dict:  # uvicorn: a coroutine
                    await asyncio.sleep(0.05)
                    return {"type": "http.disconnect"}
                return later()
            return receive

        return await _cancelled_by_disconnect(receive_for)

    caused, seen = asyncio.run(main())
    assert seen
    assert caused


def test_a_disarmed_watcher_cancels_nothing():
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()
        disconnect = _Disconnect(lambda: future)
        disconnect.disarm()
        future.set_result({"type": "http.disconnect"})
        await asyncio.sleep(0.01)  # would raise CancelledError had it fired

    asyncio.run(main())


def test_a_receive_coroutine_watched_then_closed_or_failed_leaves_nothing_behind():
    async def main() -> tuple[list[str], list[object]]:
        loop = asyncio.get_running_loop()
        problems: list[object] = []
        loop.set_exception_handler(lambda _, context: problems.append(context))
        steps: list[str] = []
        waited = loop.create_future()

        async def receive() -> dict:  # uvicorn's shape: waits on a future of the server's
            steps.append("waiting")
            try:
                await waited
            finally:
                steps.append("done waiting")
            return {"type": "http.disconnect"}

        closed = _Disconnect(receive)
        closed.disarm()  # the answer went: the coroutine is closed, its waiter forgotten
        failed = _Disconnect(receive)
        # Still waiting on the same future the closed one waited on, as a second task would.
        assert steps == ["waiting", "done waiting", "waiting"]
        waited.cancel()  # what it waited on is cancelled: nothing to say, nothing raised
        await asyncio.sleep(0.01)
        failed.disarm()
        assert not closed.fired
        assert not failed.fired
        return steps, problems

    steps, problems = asyncio.run(main())
    assert steps == ["waiting", "done waiting", "waiting", "done waiting"]
    assert problems == []


def _client_after(trusted: list[str], client: str, *headers: tuple[bytes, bytes]) -> tuple:
    scope = {"type": "http", "client": (client, 5000), "scheme": "http",
             "headers": list(headers)}
    ForwardedHeaders(trusted).apply(scope)
    return scope["client"][0], scope["scheme"]


def test_forwarded_headers_are_believed_only_from_trusted_proxies():
    xff = (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2")
    proto = (b"x-forwarded-proto", b"https")
    assert _client_after(["10.0.0.0/8"], "10.0.0.1", xff, proto) == ("203.0.113.7", "https")
    assert _client_after(["127.0.0.1"], "10.0.0.1", xff, proto) == ("10.0.0.1", "http")
    assert _client_after(["*"], "10.0.0.1", xff) == ("203.0.113.7", "http")
    assert _client_after(["127.0.0.1,10.0.0.2"], "127.0.0.1", xff) == ("203.0.113.7", "http")
    assert _client_after(["127.0.0.1"], "127.0.0.1", proto) == ("127.0.0.1", "http")


def test_a_whole_answer_states_its_length_and_a_stream_does_not():
    from django.http import HttpResponse, StreamingHttpResponse

    from proxy.entry.asgi import send_response

    async def sent(response) -> list[dict]:
        messages: list[dict] = []

        async def send(message: dict) -> None:
            messages.append(message)

        await send_response(response, send)
        return messages

    answer = asyncio.run(sent(HttpResponse(b'{"ok":true}', content_type="application/json")))
    assert (b"Content-Length", b"11") in answer[0]["headers"]
    assert answer[1]["body"] == b'{"ok":true}'
    empty = asyncio.run(sent(HttpResponse(status=204)))
    assert not any(name.lower() == b"content-length" for name, _ in empty[0]["headers"])
    stream = asyncio.run(sent(StreamingHttpResponse(iter([b"a", b"b"]))))
    assert not any(name.lower() == b"content-length" for name, _ in stream[0]["headers"])
    assert [m.get("body") for m in stream[1:]] == [b"a", b"b", b""]
