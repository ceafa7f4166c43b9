"""The deployment's Redis namespace: ROUTER_REDIS_PREFIX, by default named after the database,
and every Redis user the settings configure (the cache, Celery's broker) keeps to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from router_admin.env import EMBEDDED_REDIS_PREFIX, parse_database_url, redis_prefix
from serve import beat_lock_name

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_prefix_is_named_after_the_postgresql_database():
    database = parse_database_url("postgres://u@db.internal:5432/router_prod")
    assert redis_prefix(database, environ={}) == "router:router_prod:"


def test_the_embedded_sqlite_default_has_a_fixed_prefix():
    database = parse_database_url("sqlite:////tmp/anywhere/router.sqlite3")
    assert redis_prefix(database, environ={}) == EMBEDDED_REDIS_PREFIX == "router:embedded:"


def test_router_redis_prefix_overrides_the_default():
    database = parse_database_url("postgres://u@h/router")
    assert redis_prefix(database, environ={"ROUTER_REDIS_PREFIX": "eu:prod:"}) == "eu:prod:"


@pytest.mark.parametrize("value", ["", "router", "router:prod", "router: prod:"])
def test_a_prefix_without_its_closing_colon_or_with_spaces_is_refused(value):
    with pytest.raises(ImproperlyConfigured, match="ROUTER_REDIS_PREFIX"):
        redis_prefix(parse_database_url("postgres://u@h/router"),
                     environ={"ROUTER_REDIS_PREFIX": value})


def _settings_of(**env: str) -> dict:
    """The Redis-related settings a process started with ``env`` would run with."""
    code = ("import json; from django.conf import settings as s; "
            "from router_admin.celery import app; "
            "print(json.dumps({'prefix': s.ROUTER_REDIS_PREFIX, "
            "'cache': s.CACHES['default'].get('KEY_PREFIX'), "
            "'broker': app.conf.broker_transport_options}))")
    clean = {k: v for k, v in os.environ.items()
             if k not in {"ROUTER_REDIS_PREFIX"}}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False, env={**clean, "DJANGO_SETTINGS_MODULE": "router_admin.settings",
                          "SECRET_KEY": "s", "REDIS_URL": "redis://127.0.0.1:6379/9",
                          **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cache_and_celerys_broker_keys_start_with_the_database_named_prefix():
    found = _settings_of(DATABASE_URL="postgres://u@127.0.0.1/router_prod")
    assert found["prefix"] == "router:router_prod:"
    assert found["cache"] == "router:router_prod:cache"  # Django adds :<version>:<key>
    assert found["broker"] == {"global_keyprefix": "router:router_prod:celery:"}


def test_the_settings_take_the_prefix_from_the_environment():
    found = _settings_of(DATABASE_URL="postgres://u@127.0.0.1/router_prod",
                         ROUTER_REDIS_PREFIX="eu:")
    assert (found["prefix"], found["cache"]) == ("eu:", "eu:cache")
    assert found["broker"] == {"global_keyprefix": "eu:celery:"}


def test_the_beat_lock_lives_in_the_same_namespace():
    env = {"DATABASE_URL": "postgres://u@127.0.0.1/router_prod"}
    assert beat_lock_name(env) == "router:router_prod:celery-beat"
    assert beat_lock_name({**env, "ROUTER_REDIS_PREFIX": "eu:"}) == "eu:celery-beat"
