"""Headers the router writes itself go straight into Django's header store
(``proxy.ground.responses.set_own_headers``) and are read back from it for the ASGI
server (``header_pairs``): Django's own API must see them as if set one by one, so that a
Django release that changes the store fails here rather than in front of a client."""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse

from proxy.ground.responses import header_pairs, set_own_headers


def test_headers_set_in_the_store_are_what_djangos_api_reads():
    response = HttpResponse(b"{}", content_type="application/json")
    set_own_headers(response, {"x-ratelimit-remaining-requests": "9", "X-Request-Id": "req_1"})

    assert response["X-RateLimit-Remaining-Requests"] == "9"
    assert response.has_header("x-request-id")
    assert response["x-request-id"] == "req_1"
    assert dict(response.items()) == {"Content-Type": "application/json",
                                      "x-ratelimit-remaining-requests": "9",
                                      "X-Request-Id": "req_1"}


def test_a_header_set_again_replaces_the_one_set_the_usual_way():
    response = StreamingHttpResponse(iter([b""]), content_type="text/event-stream")
    response["X-Request-Id"] = "old"
    set_own_headers(response, {"x-request-id": "new"})

    assert response["X-Request-Id"] == "new"
    assert [name for name, _ in response.items()].count("x-request-id") == 1


def test_the_pairs_for_the_server_are_the_headers_djangos_api_lists():
    response = HttpResponse(b"{}", content_type="application/json")
    response["Cache-Control"] = "no-cache"
    set_own_headers(response, {"x-router-cost-micros": "42"})

    assert header_pairs(response) == [
        (name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()]
    assert (b"x-router-cost-micros", b"42") in header_pairs(response)
