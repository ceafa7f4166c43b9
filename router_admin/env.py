"""Typed readers for settings that come from the environment.

Each helper raises ``ImproperlyConfigured`` on a value it cannot parse, so a typo in a
deployment fails at start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_UNSET = object()


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    return (os.environ if environ is None else environ).get(name)


def env_str(
    name: str, default: object = _UNSET, *, environ: Mapping[str, str] | None = None
) -> str:
    value = _raw(name, environ)
    if value is None:
        if default is _UNSET:
            raise ImproperlyConfigured(f"The environment variable {name} is required.")
        return str(default)
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        parsed = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name}={parsed} is below the minimum of {minimum}.")
    return parsed


def env_list(
    name: str, default: list[str], *, environ: Mapping[str, str] | None = None
) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_database_url(url: str) -> dict[str, object]:
    """Turn ``postgres://user:pass@host:port/name?opt=v`` or ``sqlite:///path`` into DATABASES."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as dj-database-url reads them.
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL {url!r} names no SQLite file.")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # IMMEDIATE takes the write lock when a transaction starts, so read-then-write
            # services cannot fail half-way with "database is locked" on lock upgrade.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL {url!r} names no database.")
        options: dict[str, object] = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported (use postgres:// or sqlite:///)."
    )


# The Redis namespace of the embedded default (SQLite): one machine, one router.
EMBEDDED_REDIS_PREFIX = "router:embedded:"


def redis_prefix(
    database: Mapping[str, object], *, environ: Mapping[str, str] | None = None
) -> str:
    """What every key the router writes in Redis starts with: ``ROUTER_REDIS_PREFIX``, or
    ``router:<database name>:`` (a fixed one for SQLite), so that deployments on other
    databases can share one Redis without sharing circuits, limits or Celery queues."""
    value = _raw("ROUTER_REDIS_PREFIX", environ)
    if value is None:
        if database["ENGINE"] == "django.db.backends.sqlite3":
            return EMBEDDED_REDIS_PREFIX
        return f"router:{database['NAME']}:"
    # The colon keeps the key layout readable (<prefix>limits:key:1:window), and one prefix
    # from being the start of another's (router:a would begin every key of router:ab).
    if not value.endswith(":") or any(char.isspace() for char in value):
        raise ImproperlyConfigured(
            f"ROUTER_REDIS_PREFIX={value!r} must end with ':' and contain no spaces "
            "(e.g. router:production:).")
    return value


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


def proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` -> Django's SECURE_PROXY_SSL_HEADER, ("HTTP_X_FORWARDED_PROTO",
    "https"); an empty name -> None (not behind such a proxy)."""
    name = name.strip()
    if not name:
        return None
    if not _HEADER_NAME.fullmatch(name):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={name!r} is not a header name (e.g. X-Forwarded-Proto).")
    meta = name.upper().replace("-", "_")
    return (meta if meta.startswith("HTTP_") else f"HTTP_{meta}", "https")
