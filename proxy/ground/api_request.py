"""The request object of the /v1 handler (``proxy.entry.asgi``)."""

from __future__ import annotations

import codecs
import io
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.utils.http import parse_header_parameters

# What Django's ASGIRequest makes of a header name (None: it drops names with "_"), and of
# a Content-Type value: learnt once per distinct name or value, as a client sends the same
# few on every request; past these bounds, they are worked out each time.
_META_NAMES: dict[bytes, str | None] = {}
_CONTENT_TYPES: dict[str, tuple[str, dict[str, str], str | None]] = {}
MAX_REMEMBERED = 256


def _meta_name(header: bytes) -> str | None:
    known = _META_NAMES.get(header, False)
    if known is not False:
        return known  # type: ignore[return-value]
    name = header.decode("latin-1")
    if "_" in name:  # as Django: no spoofing through "_" versus "-"
        meta = None
    elif name in ("content-length", "content-type"):
        meta = name.upper().replace("-", "_")
    else:
        meta = "HTTP_" + name.upper().replace("-", "_")
    if len(_META_NAMES) < MAX_REMEMBERED:
        _META_NAMES[header] = meta
    return meta


def _content_type(value: str) -> tuple[str, dict[str, str], str | None]:
    known = _CONTENT_TYPES.get(value)
    if known is None:
        content_type, params = parse_header_parameters(value)
        encoding = None
        if "charset" in params:
            try:
                codecs.lookup(params["charset"])
            except LookupError:
                pass
            else:
                encoding = params["charset"]
        known = (content_type, params, encoding)
        if len(_CONTENT_TYPES) < MAX_REMEMBERED:
            _CONTENT_TYPES[value] = known
    return known


class ApiRequest(ASGIRequest):
    """Django's ASGIRequest with the same attributes and META, built for less: its
    ``__init__`` is most of what a request costs Django before the view runs."""

    def __init__(self, scope: dict[str, Any], body_file: io.BytesIO, *,
                 script_name: str = "") -> None:
        self.scope = scope
        self._post_parse_error = False
        self._read_started = False
        self.resolver_match = None
        self.path = scope["path"]
        self.script_name = script_name
        self.path_info = self.path.removeprefix(script_name) if script_name else self.path
        self.method = scope["method"].upper()
        query_string = scope.get("query_string", "")
        if isinstance(query_string, bytes):
            query_string = query_string.decode()
        meta: dict[str, Any] = {
            "REQUEST_METHOD": self.method, "QUERY_STRING": query_string,
            "SCRIPT_NAME": script_name, "PATH_INFO": self.path_info,
            "wsgi.multithread": True, "wsgi.multiprocess": True,
        }
        if client := scope.get("client"):
            meta["REMOTE_ADDR"] = meta["REMOTE_HOST"] = client[0]
            meta["REMOTE_PORT"] = client[1]
        if server := scope.get("server"):
            meta["SERVER_NAME"], meta["SERVER_PORT"] = server[0], str(server[1])
        else:
            meta["SERVER_NAME"], meta["SERVER_PORT"] = "unknown", "0"
        for header, raw in scope.get("headers", ()):
            name = _meta_name(header)
            if name is None:
                continue
            value = raw.decode("latin-1")
            # A repeated header is joined with commas (no header name can collide with the
            # keys above: all but two get the HTTP_ prefix).
            meta[name] = f"{meta[name]},{value}" if name in meta else value
        self.META = meta
        self.content_type, params, encoding = _content_type(meta.get("CONTENT_TYPE", ""))
        self.content_params = dict(params)
        if encoding is not None:
            self.encoding = encoding
        self._stream = body_file
        # The handler read the whole body and refused it past DATA_UPLOAD_MAX_MEMORY_SIZE
        # already: ``body`` need not check the size again (a settings read) nor read it
        # into a copy of its own.
        self._body = body_file.getvalue()
