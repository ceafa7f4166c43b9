"""One pooled aiohttp session per process (per event loop), created on first use."""

from __future__ import annotations

import asyncio

import aiohttp

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def upstream_session() -> aiohttp.ClientSession:
    # Keyed by loop: a session is bound to the loop it was made on, and tests run servers on
    # loops of their own. In production there is one loop per process, so one session.
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300,
                                         enable_cleanup_closed=True)
        session = aiohttp.ClientSession(
            connector=connector,
            # One session serves every user: a cookie an upstream sets must not ride along
            # on other users' requests (and keeping none costs nothing per request).
            cookie_jar=aiohttp.DummyCookieJar(),
            # Compression would make the upstream buffer to compress; streams must flow.
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "binom-router"},
        )
        _sessions[loop] = session
    return session


async def close_upstream_sessions() -> None:
    for loop, session in list(_sessions.items()):
        if loop is asyncio.get_running_loop():
            await session.close()
            del _sessions[loop]
