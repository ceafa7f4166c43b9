"""A streamed answer as the router wrote it: the HTTP chunks of its body, each with when it
came (one chunk per write of the router's)."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping

import orjson


def _request(base_url: str, path: str, headers: Mapping[str, str],
             body: dict) -> tuple[tuple[str, int], bytes]:
    """Where to send ``POST {path}`` with ``body`` as JSON, and its bytes."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    payload = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/json", f"Content-Length: {len(payload)}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    return (host, int(port)), ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def http_reads(base_url: str, path: str, headers: Mapping[str, str],
               body: dict) -> list[bytes]:
    """The router's answer to ``POST {path}``, head and chunked body, as the socket's reads
    took it, up to the body's end: on loopback, one write of the router's arrives in one
    read."""
    address, request = _request(base_url, path, headers, body)
    reads: list[bytes] = []
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        while not b"".join(reads).endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "the router closed the connection before the body's end"
            reads.append(data)
    return reads


def http_chunks(base_url: str, path: str, headers: Mapping[str, str],
                body: dict) -> list[tuple[float, bytes]]:
    """The router's answer to ``POST {path}`` as the HTTP chunks it was written in, each
    with when it came (seconds after the request went out)."""
    address, request = _request(base_url, path, headers, body)
    chunks: list[tuple[float, bytes]] = []
    with socket.create_connection(address, timeout=10) as sock:
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

