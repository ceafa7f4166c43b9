"""Resolutions that could not reach the database, kept on local disk until they do.

An answer goes out before its charge is written (``settlement``). While the database is
away the charge keeps trying in memory, for as long as its hold lives; a process that
stops meanwhile (a deploy's shutdown gives up after a minute, a process manager's kill, an
out-of-memory kill) took those charges with it, and the sweeper later released their holds
uncharged: answers delivered and never paid for.

So the first time a resolution (a charge, or a release) fails for want of the database, it
is appended to this process's spool file, a line of JSON in ``ROUTER_CHARGE_SPOOL_DIR``.
The process holds an exclusive ``flock`` on its file for as long as it lives; the kernel
drops that lock when the process dies, however it dies. Every router process replays, at
its start and every ``REPLAY_EVERY_S``, each spool file whose lock it can take: a file of a
process that is gone. Replaying a line is resolving its hold the way its own process would
have (``hot_path.hold_resolve``), which moves only a pending hold: a line whose hold was
resolved meanwhile changes nothing, so a line replayed twice, or after its own process's
retry landed, charges once. A file is deleted once every line in it was written or found
resolved; while the database is still away it stays for the next try.

Running streams write their checkpoints here too (``checkpoints``): what each would be
charged if cut there, every ``ROUTER_STREAM_CHECKPOINT_MS``. A hold's last line is the one
replayed, so a stream's charge (spooled after its checkpoints) wins over them, and its lines
are forgotten once its own settlement is written. A file that grows with lines since
replaced is written afresh with each hold's last line (``_compact``).

What this does not cover, as the README says: a machine that loses its disk, or the spool
of a process replayed only after its holds' life (``ROUTER_HOLD_TTL_SECONDS``) was over,
once the sweeper has released them; a process killed between a whole answer and its
charge's first try (which comes within ``ROUTER_SETTLE_LINGER_MS``, 20 ms, of the answer),
or before a stream's first checkpoint: nothing was spooled yet; and a stream's output since
its last checkpoint. Nothing is written here for a whole answer while the database answers:
the request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from billing.errors import UNREACHABLE
from billing.services import UsageReport
from billing.services.hot_path import hold_resolve, hold_times
from router_admin.settings_cache import setting

logger = logging.getLogger("proxy.charging")

PREFIX = "charges-"
SUFFIX = ".jsonl"
# How often a running process looks for the spool files of processes that are gone.
REPLAY_EVERY_S = 30.0
# A file is written afresh, with only each waiting hold's last line, once it holds more
# than this many bytes beyond LINE_ROOM per waiting hold.
COMPACT_AT = 1 << 20
LINE_ROOM = 4096


@dataclass(frozen=True)
class Resolution:
    """One hold's resolution as its request decided it: charge ``cost_micros`` (at most
    the hold) or, when None, release it."""

    hold_id: str
    cost_micros: int | None
    usage: UsageReport
    created_at: datetime | None = None  # the hold's, when known: its partition

    def line(self) -> bytes:
        # orjson writes the usage's dataclass as its fields (what asdict would, faster:
        # a running stream's checkpoints write one every period).
        return orjson.dumps({"hold_id": self.hold_id, "cost_micros": self.cost_micros,
                             "created_at": self.created_at, "usage": self.usage}) + b"\n"

    @classmethod
    def of(cls, hold_id: str, cost_micros: int | None, usage: UsageReport) -> Resolution:
        """The resolution of a hold this process reserved, naming its partition."""
        return cls(hold_id, cost_micros, usage, hold_times.recall(hold_id))

    @classmethod
    def parse(cls, line: bytes) -> Resolution:
        data = orjson.loads(line)
        created_at = data.get("created_at")
        return cls(hold_id=str(data["hold_id"]), cost_micros=data["cost_micros"],
                   usage=UsageReport(**data["usage"]),
                   created_at=datetime.fromisoformat(created_at) if created_at else None)


def spooling() -> bool:
    """Whether resolutions are spooled (``ROUTER_CHARGE_SPOOL_DIR`` is not empty), without
    building its path (asked once per stream)."""
    return bool(setting("ROUTER_CHARGE_SPOOL_DIR"))


def spool_directory() -> Path | None:
    """Where spool files live; None when spooling is off."""
    return Path(setting("ROUTER_CHARGE_SPOOL_DIR")) if spooling() else None


class ChargeSpool:
    """This process's spool file: opened (and locked) at its first line, deleted once
    every line it holds was written to the database, left for the next process when this
    one stops first. Thread-safe: tests run several event loops in one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        # In the file and not yet written, by hold id; those whose own tries ended (past
        # the hold's life) are tried again by the replayer while this process lives.
        self._waiting: dict[str, Resolution] = {}
        self._given_up: set[str] = set()
        self._written = 0  # bytes in the file: rewritten with only its last lines when big

    @property
    def path(self) -> Path | None:
        return self._path

    def holds(self, hold_id: str) -> bool:
        return hold_id in self._waiting

    def add(self, resolution: Resolution) -> bool:
        """Keep ``resolution`` until ``landed``; whether it was kept (False: spooling is
        off, or the file could not be written, which is logged)."""
        return self.add_many([resolution])

    def add_many(self, resolutions: list[Resolution]) -> bool:
        """``add`` for each, in one write; a hold's line replaces any it had here before
        (a stream's checkpoints, then its charge: the last line of a hold counts)."""
        directory = spool_directory()
        if directory is None or not resolutions:
            return False
        with self._lock:
            try:
                lines = b"".join(resolution.line() for resolution in resolutions)
                if self._fd is None:
                    self._open(directory)
                elif self._written > COMPACT_AT + LINE_ROOM * len(self._waiting):
                    self._compact(directory)
                assert self._fd is not None
                os.write(self._fd, lines)  # O_APPEND: whole lines
                self._written += len(lines)
            except Exception:
                # Never the charge's own failure: its tries go on in memory as before.
                logger.exception("request %s: its resolution could not be spooled to %s",
                                 ", ".join(r.hold_id for r in resolutions[:5]), directory)
                return False
            for resolution in resolutions:
                self._waiting[resolution.hold_id] = resolution
            return True

    def gave_up(self, hold_id: str) -> None:
        """The request's own tries ended with the database still away: the line stays,
        for the replayer of this process (``replay_given_up``) or of the next one."""
        with self._lock:
            if hold_id in self._waiting:
                self._given_up.add(hold_id)

    def given_up(self) -> list[Resolution]:
        with self._lock:
            return [self._waiting[hold_id] for hold_id in self._given_up]

    def landed(self, hold_id: str) -> None:
        """The hold was resolved (by this line or by someone else): the file is deleted
        once nothing in it is waiting."""
        with self._lock:
            self._waiting.pop(hold_id, None)
            self._given_up.discard(hold_id)
            if not self._waiting and self._fd is not None:
                self._close(keep=False)

    def close(self) -> None:
        """The process stops: what is still waiting is flushed to the disk and left, with
        the file's lock released, for the next process to replay."""
        with self._lock:
            if self._fd is not None:
                self._close(keep=bool(self._waiting))
            self._waiting.clear()
            self._given_up.clear()

    def _open(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new name: nobody else holds it
        self._fd, self._path, self._written = fd, path, 0

    def _compact(self, directory: Path) -> None:
        """A file that grew with lines since replaced (a long stream's checkpoints) is
        written afresh with each waiting hold's last line, and the old one emptied before
        its lock goes: a replayer that opened it meanwhile reads nothing from it."""
        old_fd, old_path = self._fd, self._path
        assert old_fd is not None
        assert old_path is not None
        self._open(directory)
        assert self._fd is not None
        lines = b"".join(resolution.line() for resolution in self._waiting.values())
        os.write(self._fd, lines)
        self._written = len(lines)
        try:
            os.ftruncate(old_fd, 0)
            old_path.unlink(missing_ok=True)
        finally:
            os.close(old_fd)

    def _close(self, *, keep: bool) -> None:
        fd, path = self._fd, self._path
        self._fd = self._path = None
        assert fd is not None
        assert path is not None
        try:
            if keep:
                os.fsync(fd)
            else:
                # Deleted while still locked: a replayer that opened it just before finds
                # only lines whose holds are resolved, which change nothing.
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


_spool = ChargeSpool()


def charge_spool() -> ChargeSpool:
    return _spool


@dataclass
class ReplayResult:
    files: int = 0  # spool files of processes that are gone, replayed to the end
    written: int = 0  # holds resolved by their line
    already: int = 0  # holds someone had resolved first (nothing changed)
    failed: int = 0  # lines the database refused, or that could not be read (logged)
    left: int = 0  # files left for a later try: the database is still away


async def replay_given_up() -> ReplayResult:
    """Try again the lines of this process whose own tries ended (past their holds' life):
    a hold the sweeper has not released yet still takes its charge."""
    result = ReplayResult()
    spool = charge_spool()
    for resolution in spool.given_up():
        try:
            await _replay(resolution, result)
        except UNREACHABLE:
            break
        spool.landed(resolution.hold_id)
    return result


async def replay_orphaned_spools(directory: Path | None = None) -> ReplayResult:
    """Resolve the holds in every spool file of a process that is gone."""
    result = ReplayResult()
    directory = directory or spool_directory()
    if directory is None or not directory.is_dir():
        return result
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        with _claimed(path) as lines:
            if lines is None:
                continue  # its process lives (or another replayer has it)
            try:
                for resolution in _last_per_hold(path, lines, result):
                    await _replay(resolution, result)
            except UNREACHABLE as error:
                logger.warning("the spool %s waits for the database (%s)", path.name, error)
                result.left += 1
                continue
            path.unlink(missing_ok=True)
            result.files += 1
    if result.files or result.left:
        logger.warning("spooled resolutions replayed: %s", result)
    return result


def _last_per_hold(path: Path, lines: list[bytes], result: ReplayResult
                   ) -> list[Resolution]:
    """Each hold's last line: a stream's checkpoints come before its charge, and each says
    more than the one before it."""
    last: dict[str, Resolution] = {}
    for number, line in enumerate(lines, start=1):
        try:
            resolution = Resolution.parse(line)
        except (ValueError, TypeError, KeyError):
            # A line cut short by the kill that left the file, or not ours: nothing to charge.
            logger.error("spool %s, line %d: not a resolution: %r", path.name, number,
                         line[:200])
            result.failed += 1
            continue
        last.pop(resolution.hold_id, None)
        last[resolution.hold_id] = resolution
    return list(last.values())


async def _replay(resolution: Resolution, result: ReplayResult) -> None:
    """Resolve the hold as its request decided; UNREACHABLE: the database is still away."""
    if resolution.created_at is not None:
        hold_times.remember(resolution.hold_id, resolution.created_at)
    try:
        charged = await hold_resolve(hold_id=resolution.hold_id, usage=resolution.usage,
                                     cost_micros=resolution.cost_micros)
    except UNREACHABLE:
        raise
    except Exception:
        logger.exception("request %s: its spooled resolution was refused",
                         resolution.hold_id)
        result.failed += 1
        return
    if charged is None:
        result.already += 1
    else:
        result.written += 1
        logger.warning("request %s: its spooled resolution was written (%d micro-USD)",
                       resolution.hold_id, charged)


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[list[bytes] | None]:
    """The file's lines while holding its lock; None when its lock is held elsewhere or
    the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        with open(fd, "rb", closefd=False) as file:  # the locked file, even if unlinked since
            lines = [line for line in file.read().splitlines() if line.strip()]
        yield lines
    finally:
        os.close(fd)


_replayers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


async def _replay_forever(period: float) -> None:
    while True:
        try:
            await replay_given_up()
            await replay_orphaned_spools()
        except Exception:
            logger.exception("replaying spooled resolutions failed")
        await asyncio.sleep(period)


def start_spool_replay(period: float = REPLAY_EVERY_S) -> asyncio.Task[None] | None:
    """Replay the spools of processes that are gone, now and every ``period`` (the ASGI
    server's startup); None when spooling is off."""
    if spool_directory() is None:
        return None
    loop = asyncio.get_running_loop()
    task = _replayers.get(loop)
    if task is None or task.done():
        task = _replayers[loop] = loop.create_task(_replay_forever(period),
                                                   name="spool-replay")
    return task


async def stop_spool_replay() -> None:
    task = _replayers.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
