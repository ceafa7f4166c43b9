"""The request path's Redis client: one connection per event loop, every command written as
it comes and answered in order (pipelining), replies parsed by hiredis.

Why not redis-py's asyncio client: it checks a connection out of a pool for every command,
starts a timer task for the socket timeout (``asyncio.wait_for``) and walks several layers
of wrappers; at concurrency 64 it took 23 % of the router's CPU for two commands a request
(issue 19). Here a command costs a packed buffer (hiredis' C packer), a future and a place
in a queue; the commands of one turn of the event loop go out in one write, and Redis,
which runs commands one at a time anyway, answers them in one read.

What is kept of redis-py: its URL parsing (``redis://``, ``rediss://``, ``unix://``, user,
password, database) and its exception classes, so that callers catch ``RedisError`` as
before. What replaces its pool and socket timeout:

- A command not answered within ``timeout`` seconds means Redis is not answering: every
  command waiting on that connection fails at once (``TimeoutError``) and the connection is
  dropped; the next command opens a new one. Nothing queues behind a hung Redis.
- A cancelled caller stops waiting at once; its reply, when it comes, is read and dropped.
- A command is never sent twice: once written, it may have run (scripts are not
  idempotent), so a connection lost under it fails it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError, InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int | float | bytes
CLIENT_NAME = "binom-router"

# After a loop stall (a burst's first pass over thousands of new requests can hold the loop
# for most of a second), timers may fire before the socket is read: an overdue command gets
# this long, one more pass over the socket, before it counts as unanswered.
_GRACE_SECONDS = 0.05


def _reply_error(error: ResponseError) -> ResponseError:
    """redis-py's class for an error reply, by its prefix."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return error


class _Link(asyncio.Protocol):
    """One open connection: each reply resolves the oldest command still owed one."""

    def __init__(self, owner: PipelinedRedis, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        # (future, monotonic time it was sent): in the order the commands were written.
        self.owed: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.failed: BaseException | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        owed = self.owed
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as error:
                self.fail(RedisConnectionError(f"Redis sent what is not RESP: {error}"))
                return
            if reply is False:
                return
            if not owed:
                self.fail(RedisConnectionError("Redis answered a command it was not sent"))
                return
            future = owed.popleft()[0]
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_reply_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis closed the connection ({exc or 'EOF'})"))

    # -- commands

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.failed is not None:
            raise self.failed
        future = self.loop.create_future()
        self.owed.append((future, self.loop.time()))
        if not self.outgoing:
            # Everything sent in this turn of the loop goes out in one write.
            self.loop.call_soon(self.flush)
        self.outgoing.append(packed)
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(self.loop.time() + self.owner.timeout, self.watch)
        return future

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and self.failed is None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def watch(self, grace: bool = False) -> None:
        """Fail the connection when its oldest command is overdue (after one more read)."""
        self.watchdog = None
        if not self.owed or self.failed is not None:
            return
        due = self.owed[0][1] + self.owner.timeout
        now = self.loop.time()
        if now < due:
            self.watchdog = self.loop.call_at(due, self.watch)
        elif not grace:
            self.watchdog = self.loop.call_later(_GRACE_SECONDS, self.watch, True)
        else:
            self.fail(RedisTimeoutError(
                f"Redis did not answer within {self.owner.timeout:g} s"))

    def fail(self, error: BaseException) -> None:
        """Every command owed a reply fails with ``error``; the connection is dropped."""
        if self.failed is not None:
            return
        self.failed = error
        self.owner._forget(self)
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.outgoing.clear()
        if self.transport is not None:
            self.transport.abort()
        while self.owed:
            future = self.owed.popleft()[0]
            if not future.done():
                future.set_exception(error)


class PipelinedRedis:
    """A Redis client for one event loop (see the module's docstring)."""

    def __init__(self, url: str, *, timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._options = parse_url(url)
        self._link: _Link | None = None
        self._opening: asyncio.Task[_Link] | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        link = self._link
        if link is None:
            link = await self._connected()
        return await link.send(hiredis.pack_command(args))

    def send(self, *args: Arg, at_once: bool = False) -> asyncio.Future[Any] | None:
        """Send a command and return the future of its reply without waiting for it; None
        while no connection is open (the caller then awaits ``execute``). It goes with the
        others of this turn of the loop, or, ``at_once``, in a write of its own (with
        whatever was waiting) before the caller goes on: for a command that must reach
        Redis before what the caller writes next reaches anyone else."""
        link = self._link
        if link is None or link.failed is not None:
            return None
        future = link.send(hiredis.pack_command(args))
        if at_once:
            link.flush()
        return future

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; their replies (or the first error) in order."""
        link = self._link
        if link is None:
            link = await self._connected()
        futures = [link.send(hiredis.pack_command(tuple(command))) for command in commands]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    # The commands the router uses, named as in redis-py.

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Arg) -> Any:
        return await self.execute("EVAL", script, numkeys, *keys_and_args)

    async def ping(self) -> bool:
        return await self.execute("PING") == b"PONG"

    async def delete(self, *names: str) -> int:
        return int(await self.execute("DEL", *names))

    async def hget(self, name: str, field: str) -> bytes | None:
        return await self.execute("HGET", name, field)

    async def zrem(self, name: str, *members: Arg) -> int:
        return int(await self.execute("ZREM", name, *members))

    async def zcount(self, name: str, low: Arg, high: Arg) -> int:
        return int(await self.execute("ZCOUNT", name, low, high))

    async def aclose(self) -> None:
        """Close the connection once the replies still owed have come (at most ``timeout``):
        a command sent without waiting (``send``) is not taken for a failed one."""
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
        link = self._link
        if link is not None:
            owed = [future for future, _ in link.owed if not future.done()]
            if owed:
                await asyncio.wait(owed, timeout=self.timeout)
            link.fail(RedisConnectionError("The client was closed"))

    # -- the connection

    def _forget(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    async def _connected(self) -> _Link:
        if self._closed:
            raise RedisConnectionError("The client was closed")
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            self._opening.add_done_callback(self._opened)
        # Shielded: a caller cancelled while the connection opens must not abort it for the
        # others waiting on it.
        return await asyncio.shield(self._opening)

    def _opened(self, task: asyncio.Task[_Link]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._link = task.result()

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            async with asyncio.timeout(self.connect_timeout):
                if "path" in options:
                    _, link = await loop.create_unix_connection(
                        lambda: _Link(self, loop), options["path"])
                else:
                    _, link = await loop.create_connection(
                        lambda: _Link(self, loop), options.get("host", "localhost"),
                        int(options.get("port", 6379)), ssl=self._ssl_context())
                hello: list[tuple[Arg, ...]] = []
                if options.get("password"):
                    hello.append(("AUTH", options["username"], options["password"])
                                 if options.get("username") else ("AUTH", options["password"]))
                if options.get("db"):
                    hello.append(("SELECT", int(options["db"])))
                # Named, so that ``redis-cli client list`` tells the router's connection.
                hello.append(("CLIENT", "SETNAME", f"{CLIENT_NAME}:{os.getpid()}"))
                try:
                    for reply in await asyncio.gather(
                            *(link.send(hiredis.pack_command(command)) for command in hello),
                            return_exceptions=True):
                        if isinstance(reply, BaseException):
                            raise reply
                except BaseException:
                    link.fail(RedisConnectionError("Could not set up the Redis connection"))
                    raise
        except TimeoutError:
            raise RedisTimeoutError(
                f"Redis did not accept a connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as error:
            raise RedisConnectionError(f"Could not connect to Redis: {error}") from error
        return link

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._options.get("connection_class") is not SSLConnection:
            return None
        context = ssl.create_default_context()
        if str(self._options.get("ssl_cert_reqs", "required")).lower() in {"none", "0"}:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
