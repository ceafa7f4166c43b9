"""The router's HTTP/1.1 client for its upstreams: one per event loop, keep-alive connections
per origin, responses parsed by httptools (llhttp, the parser of Node.js and of uvicorn).

Why not aiohttp's client, which this replaced on the request path: the router makes one
kind of call (a POST of JSON, answered by JSON or by Server-Sent Events), and aiohttp's
general machinery (request and response objects of many layers, header multidicts, auto
headers, timer contexts, payload writers) cost about 145 us of CPU per call at concurrency
64 where this costs about 30 (``bench/proxy_bench.py``; issue 19). aiohttp still serves the
probes and the tests' servers, and its exception classes are raised here, so that callers
catch ``aiohttp.ClientError`` and ``TimeoutError`` as before.

What a call honours: the connect timeout; the read timeout (``sock_read``), which bounds
every wait for bytes, the first and each later one; the total timeout, from the call to the
end of the body; ``Connection: close`` and HTTP/1.0; chunked and length-delimited bodies, or
one read to the end of the connection; gzip or deflate bodies (asked for ``identity``, as
compressing makes an upstream buffer what should stream). A connection goes back to its pool
only after a complete response (``release``); ``close`` drops it, which is how an upstream
learns that nobody reads its stream any more. A reused connection that the upstream had
closed while idle (no byte of an answer came back) is replaced and the call made once more:
the upstream never saw it.
"""

from proxy.upstream.http_client.response import UpstreamResponse
from proxy.upstream.http_client.session import (
    UpstreamConnectError,
    UpstreamSession,
    close_upstream_sessions,
    existing_upstream_session,
    upstream_session,
)

__all__ = ["UpstreamConnectError", "UpstreamResponse", "UpstreamSession",
           "close_upstream_sessions", "existing_upstream_session", "upstream_session"]
