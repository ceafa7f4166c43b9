"""Settings come from the environment and fail loudly on values they cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from router_admin.env import env_bool, env_int, env_list, env_str, parse_database_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("off", False),
                                            ("FALSE", False), ("", False)])
def test_booleans_accept_the_usual_spellings(raw, value):
    assert env_bool("X", not value, environ={"X": raw}) is value


@pytest.mark.parametrize(
    "call",
    [
        lambda: env_bool("X", True, environ={"X": "maybe"}),
        lambda: env_int("X", 1, environ={"X": "ten"}),
        lambda: env_int("X", 1, minimum=5, environ={"X": "3"}),
        lambda: env_str("X", environ={}),
        lambda: parse_database_url("mysql://u@h/db"),
        lambda: parse_database_url("postgres://u@h/"),
        lambda: parse_database_url("sqlite:///"),
    ],
)
def test_unusable_values_raise_naming_the_problem(call):
    with pytest.raises(ImproperlyConfigured):
        call()


def test_defaults_apply_only_when_unset():
    assert env_int("X", 7, environ={}) == 7
    assert env_list("X", ["a"], environ={"X": " b, ,c "}) == ["b", "c"]


def test_a_postgres_url_becomes_django_settings():
    db = parse_database_url("postgres://bob:p%40ss@db.internal:6432/router?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "router", "bob", "p@ss", "db.internal", "6432")
    assert db["OPTIONS"] == {"sslmode": "require"}


def _settings_process(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings; print(settings.DEBUG, settings.EMBEDDED)"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "router_admin.settings", **env},
        cwd=ROOT, capture_output=True, text=True, check=False)


def test_production_refuses_to_start_without_a_secret_key():
    result = _settings_process(DATABASE_URL="postgres://u@127.0.0.1/x")
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_production_refuses_to_start_without_encryption_keys():
    result = _settings_process(DATABASE_URL="postgres://u@127.0.0.1/x", SECRET_KEY="s")
    assert result.returncode != 0
    assert "ROUTER_ENCRYPTION_KEYS is required" in result.stderr


def test_a_typo_in_debug_stops_the_start():
    result = _settings_process(DEBUG="ture")
    assert result.returncode != 0
    assert "DEBUG='ture' is not a boolean" in result.stderr


def test_the_embedded_default_needs_no_configuration():
    result = _settings_process()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
