"""The console log handler: what an event loop logs in one turn goes out in one write.

Every API request logs its access line (``proxy.access``) when its money is settled, and
settlements come in batches (a batch's requests are logged one after the other, in one
turn of the loop): a write system call per line, about one per request under load. Here
the lines a loop logs in a turn are joined and written when the turn ends, before the loop
handles any more I/O; lines from threads without a running loop (the ORM's worker threads,
Celery, management commands) are written at once, as ``logging.StreamHandler`` does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


class LoopTurnStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        # The lines held for each loop, written by a callback of that loop; guarded by the
        # handler's lock, which logging holds around emit().
        self._held: dict[asyncio.AbstractEventLoop, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 (as StreamHandler: a bad record never breaks its caller)
            self.handleError(record)
            return
        held = self._held.get(loop)
        if held is None:
            self._held[loop] = [line]
            loop.call_soon(self._write_held, loop)
        else:
            held.append(line)

    def _write_held(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines = self._held.pop(loop, None)
            if lines:
                self._write("".join(lines))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 (logging's rule: report on stderr, never raise)
            self.handleError(logging.makeLogRecord({"msg": text}))

    def flush(self) -> None:
        """Write whatever is held (logging.shutdown() flushes every handler at exit; a loop
        closed before its turn ended leaves its lines here)."""
        with self.lock:  # type: ignore[union-attr]
            held, self._held = self._held, {}
            for lines in held.values():
                self._write("".join(lines))
            super().flush()
