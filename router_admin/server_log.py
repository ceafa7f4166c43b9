"""What the ASGI server's own access log may say: uvicorn's, on under `make run` (`make serve`
turns it off).

/v1 and the health checks write their own line (proxy.ground.access_log, with the request id, the
key's prefix and the cost): uvicorn's would be a second line for the same request. And a
password-reset link resets the password by itself, so its token never reaches a log line.
"""

from __future__ import annotations

import logging
import re

from proxy.entry.asgi import HEALTH_PATHS

SERVER_ACCESS_LOGGER = "uvicorn.access"
# /password-reset/<uidb64>/<token>/ (portal.urls); not .../set-password/, the page Django
# redirects to once it has moved the token into the session.
RESET_TOKEN = re.compile(r"(/password-reset/[^/?]+/)(?!set-password/)[^/?]+")


class ServerAccessFilter(logging.Filter):
    """Drops the server's line of a request that logs its own, and masks a reset token.

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with the arguments (client, method, path with
    query, HTTP version, status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str)):
            return True
        path = args[2]
        bare = path.partition("?")[0]
        if bare.startswith("/v1/") or bare == "/v1" or bare in HEALTH_PATHS:
            return False
        masked = RESET_TOKEN.sub(r"\1[token]", path)
        if masked != path:
            record.args = (*args[:2], masked, *args[3:])
        return True


def server_access_log_filter_install() -> None:
    """Once per process (the ASGI entry calls it): uvicorn configured its loggers before it
    loaded the application, and a filter on a logger stays through later configuration."""
    logger = logging.getLogger(SERVER_ACCESS_LOGGER)
    if not any(isinstance(f, ServerAccessFilter) for f in logger.filters):
        logger.addFilter(ServerAccessFilter())
