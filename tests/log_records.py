"""Every log record any logger makes, for tests that count lines or look for a secret in
them: the records of loggers that keep theirs to themselves (uvicorn's access log) too."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    logger: str
    text: str  # as a handler writes it: the message with its arguments, and any traceback


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[Line] = []
        self._format = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(Line(record.name, self._format.format(record)))


@contextmanager
def every_log_record(levels: Mapping[str, int] | None = None) -> Iterator[list[Line]]:
    """The lines of every logger: the root and every logger that does not pass its records on
    hold a handler that keeps them for the duration.

    Without ``levels`` every logger says everything (DEBUG), to look for a secret anywhere;
    with them, only the loggers named (the root as "") are set, and the rest keep the levels
    the settings gave them, to count the lines a deployment would write.
    """
    handler = _Collect()
    root = logging.getLogger()
    loggers = [root] + [logger for logger in logging.Logger.manager.loggerDict.values()
                        if isinstance(logger, logging.Logger)]
    saved = {logger: logger.level for logger in loggers}
    if levels is None:
        levels = {logger.name if logger is not root else "": logging.DEBUG
                  for logger in loggers}
    for name, level in levels.items():
        logger = logging.getLogger(name or None)
        saved.setdefault(logger, logger.level)
        logger.setLevel(level)
    hosts = [logger for logger in loggers if logger is root or not logger.propagate]
    for logger in hosts:
        logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for logger in hosts:
            logger.removeHandler(handler)
        for logger, level in saved.items():
            logger.setLevel(level)
