"""A streamed answer as the router wrote it: the HTTP chunks of its body, each with when it
came (one chunk per write of the router's)."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping

import orjson


def http_chunks(base_url: str, path: str, headers: Mapping[str, str],
                body: dict) -> list[tuple[float, bytes]]:
    """The router's answer to ``POST {path}`` as the HTTP chunks it was written in, each
    with when it came (seconds after the request went out)."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    payload = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/json", f"Content-Length: {len(payload)}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    chunks: list[tuple[float, bytes]] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)
        reader = sock.makefile("rb")
        head = reader.readline()
        assert head.startswith(b"HTTP/1.1 200"), head + reader.read()
        while reader.readline() not in (b"\r\n", b""):
            pass  # the headers
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                return chunks
            chunks.append((time.monotonic() - started, reader.read(size)))
            assert reader.read(2) == b"\r\n"


def events_in(chunks: list[tuple[float, bytes]]) -> list[bytes]:
    """The Server-Sent Events of ``chunks``, in order."""
    return [event for _, data in chunks for event in data.split(b"\n\n") if event]

