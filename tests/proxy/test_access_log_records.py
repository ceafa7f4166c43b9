"""An access line's LogRecord is made from a template of the fields every line of a thread
shares (``proxy.ground.access_log._record``): it must be the record ``logging`` itself
would have made, for every handler, filter and formatter an operator configures."""

from __future__ import annotations

import logging
import os
import threading
import time

import orjson

from proxy.ground.access_log import access_log


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _captured(work) -> list[logging.LogRecord]:
    logger = logging.getLogger("proxy.access")
    keep = _Keep()
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        work()
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    return keep.records


def test_an_access_record_has_every_field_of_a_record_logging_makes():
    before = time.time()
    records = _captured(lambda: [access_log(request_id=f"req_{n}", status=200)
                                 for n in range(3)])
    after = time.time()
    reference = logging.getLogger("proxy.access").makeRecord(
        "proxy.access", logging.INFO, "x", 0, "m", None, None, "f")

    assert [orjson.loads(r.getMessage())["request_id"] for r in records] == [
        "req_0", "req_1", "req_2"]
    for record in records:
        assert type(record) is logging.LogRecord
        # (less what a formatter adds once it has written the record)
        assert set(vars(record)) - {"message", "asctime"} == set(vars(reference))
        assert (record.name, record.levelno, record.levelname) == (
            "proxy.access", logging.INFO, "INFO")
        assert (record.filename, record.module, record.funcName) == (
            "access_log.py", "access_log", "access_log")
        assert (record.process, record.thread, record.threadName) == (
            os.getpid(), threading.get_ident(), threading.current_thread().name)
        assert record.processName == reference.processName
        assert before <= record.created <= after
        assert record.msecs == int((record.created % 1) * 1000)
        # As logging counts it: milliseconds since logging was loaded.
        assert abs((record.created - reference.created) * 1000
                   - (record.relativeCreated - reference.relativeCreated)) < 1
    assert records[0].created <= records[1].created <= records[2].created


def test_each_thread_names_itself_in_its_records():
    def in_thread(name: str) -> None:
        thread = threading.Thread(target=access_log, kwargs={"request_id": name},
                                  name=name)
        thread.start()
        thread.join()

    records = _captured(lambda: [in_thread("first"), in_thread("second"),
                                 access_log(request_id="main")])
    assert [r.threadName for r in records] == [
        "first", "second", threading.current_thread().name]


def test_an_operators_record_factory_makes_the_access_records_too():
    class Tagged(logging.LogRecord):
        pass

    def factory(*args, **kwargs) -> logging.LogRecord:
        return Tagged(*args, **kwargs)

    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(factory)
    try:
        records = _captured(lambda: access_log(request_id="req_tagged"))
    finally:
        logging.setLogRecordFactory(previous)
    assert [type(r) for r in records] == [Tagged]
