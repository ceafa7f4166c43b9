"""One line per request on the console: the /v1 API's access line alone, Django's warnings
once, and no password-reset token in the ASGI server's access log."""

from __future__ import annotations

import logging

import pytest

from router_admin.server_log import SERVER_ACCESS_LOGGER, ServerAccessFilter


def _access_record(path: str) -> logging.LogRecord:
    # As uvicorn makes them (uvicorn.protocols.http: client, method, path, version, status).
    return logging.LogRecord(SERVER_ACCESS_LOGGER, logging.INFO, __file__, 0,
                             '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", 200), None)


def _line(path: str) -> str | None:
    record = _access_record(path)
    return record.getMessage() if ServerAccessFilter().filter(record) else None


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models?x=1", "/v1", "/healthz",
                                  "/readyz"])
def test_the_server_writes_no_line_for_a_request_that_logs_its_own(path):
    assert _line(path) is None


@pytest.mark.parametrize("path", ["/", "/admin/", "/login/?next=/keys/", "/favicon.ico",
                                  "/password-reset/", "/password-reset/sent/",
                                  "/password-reset/MQ/set-password/", "/v1beta"])
def test_the_server_logs_the_sites_pages_as_they_are(path):
    assert _line(path) == f'127.0.0.1:5000 - "GET {path} HTTP/1.1" 200'


def test_the_server_logs_a_reset_link_without_its_token():
    line = _line("/password-reset/MQ/cz1b2a-0f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c/")

    assert line == '127.0.0.1:5000 - "GET /password-reset/MQ/[token]/ HTTP/1.1" 200'


def test_the_asgi_entry_puts_the_filter_on_the_servers_access_log():
    import router_admin.asgi  # noqa: F401 - installs it, as when a server loads the app

    filters = logging.getLogger(SERVER_ACCESS_LOGGER).filters
    assert [type(f) for f in filters].count(ServerAccessFilter) == 1


def test_with_debug_on_a_django_warning_is_written_by_the_roots_handler_alone(settings):
    # Django's default logging gave the "django" logger a console handler of its own for
    # DEBUG; with the root's, every "Not Found: ..." was printed twice under `make run`.
    settings.DEBUG = True
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 0,
                               "Not Found: %s", ("/nowhere",), None)
    logger: logging.Logger | None = logging.getLogger("django.request")
    own_handlers = []
    while logger is not None and logger is not logging.getLogger():
        own_handlers += [handler for handler in logger.handlers if handler.filter(record)]
        logger = logger.parent if logger.propagate else None

    assert own_handlers == []
    assert logger is logging.getLogger()
