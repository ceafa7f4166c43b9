"""The console handler writes what an event loop logs in one turn in one write, at the end of
that turn; anything logged outside a running loop at once, as logging's StreamHandler."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import pytest
from django.conf import settings

from router_admin.log_output import LoopTurnStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = LoopTurnStreamHandler(stream)
    logger = logging.getLogger(f"test.log_output.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_the_lines_of_one_turn_leave_in_one_write_when_the_turn_ends(logged):
    logger, stream = logged

    async def scenario() -> list[str]:
        for number in range(5):
            logger.info("line %d", number)
        during = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends
        return during

    during = asyncio.run(scenario())
    assert during == []
    assert stream.writes == ["line 0\nline 1\nline 2\nline 3\nline 4\n"]


def test_each_turn_writes_its_own_lines(logged):
    logger, stream = logged

    async def scenario() -> None:
        logger.info("first")
        await asyncio.sleep(0)
        logger.info("second")
        logger.info("third")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert stream.writes == ["first\n", "second\nthird\n"]


def test_outside_an_event_loop_a_line_is_written_at_once(logged):
    logger, stream = logged
    logger.info("now")
    assert stream.getvalue() == "now\n"


def test_flush_writes_what_a_loop_held_when_it_stopped_before_its_turn_ended(logged):
    logger, stream = logged
    loop = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        logger.info("held")
        loop.stop()  # ends the run before the handler's callback comes round

    task = loop.create_task(log_and_stop())
    loop.run_forever()
    loop.close()
    assert task.done()
    logger.handlers[0].flush()
    assert stream.getvalue() == "held\n"


def test_loops_in_two_threads_each_write_their_lines_whole(logged):
    logger, stream = logged

    def in_a_loop(name: str) -> None:
        async def scenario() -> None:
            for turn in range(50):
                logger.info("%s %d a", name, turn)
                logger.info("%s %d b", name, turn)
                await asyncio.sleep(0)

        asyncio.run(scenario())

    threads = [threading.Thread(target=in_a_loop, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{name} {turn} {part}" for name in ("x", "y")
                                   for turn in range(50) for part in ("a", "b"))
    for write in stream.writes:  # a turn's two lines together, in order
        parts = write.splitlines()
        assert len(parts) == 2
        assert parts[0].endswith(" a")
        assert parts[1] == parts[0][:-1] + "b"


def test_the_console_handler_is_this_one():
    assert settings.LOGGING["handlers"]["console"]["class"] == (
        "router_admin.log_output.LoopTurnStreamHandler")
