"""The environment of a production process, for tests that start one to read its settings
(never connected to a database or Redis)."""

from __future__ import annotations

import os
import secrets


def production_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DEBUG", "DJANGO_SETTINGS_MODULE", "SECURE_PROXY_SSL_HEADER",
                          "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "EMAIL_BACKEND",
                          "EMAIL_HOST"}}
    return {**clean, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/never_connected",
            # Never connected to: these processes only read settings.
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ROUTER_ENCRYPTION_KEYS": "A8xkVaa1nVl7KDppCml_KeREI_n2hNgvJejhGkTXCz8=",
            "ALLOWED_HOSTS": "router.example.com",
            "EMAIL_HOST": "smtp.example.com", **extra}
