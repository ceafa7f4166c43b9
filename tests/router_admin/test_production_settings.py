"""Production mode: what `manage.py check --deploy` says, the secure settings, static files
from collectstatic, and refusing to start without its secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.router_admin.production import production_env

ROOT = Path(__file__).resolve().parents[2]

# What check --deploy may still report with the defaults, and why each is justified (the
# same reasons stand beside the settings in router_admin/settings.py).
JUSTIFIED = {
    # TLS usually ends at the load balancer, which redirects plain http itself; behind a
    # plain-http proxy without SECURE_PROXY_SSL_HEADER the site would redirect forever.
    # Opt in with SECURE_SSL_REDIRECT=1.
    "security.W008",
    # Subdomains may be served by other systems this router cannot vouch for.
    # Opt in with SECURE_HSTS_INCLUDE_SUBDOMAINS=1.
    "security.W005",
    # Preloading commits the whole domain in browsers for months. Opt in with
    # SECURE_HSTS_PRELOAD=1 (with SECURE_HSTS_INCLUDE_SUBDOMAINS=1).
    "security.W021",
}
SECRETS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
           "ALLOWED_HOSTS")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def _deploy_check(**extra: str) -> set[str]:
    result = _run("manage.py", "check", "--deploy", env=production_env(**extra))
    assert "Traceback" not in result.stderr, result.stderr
    return set(re.findall(r"\((\w+\.[EW]\d+)\)", result.stdout + result.stderr))


def _settings(**extra: str) -> dict:
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps({n: getattr(s, n, None) for n in ("
            "'DEBUG', 'SESSION_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', "
            "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SECURE_SSL_REDIRECT', "
            "'SECURE_PROXY_SSL_HEADER', 'SECURE_CONTENT_TYPE_NOSNIFF', "
            "'SECURE_REFERRER_POLICY', 'X_FRAME_OPTIONS', 'STORAGES', 'MIDDLEWARE')}))")
    env = {**production_env(**extra), "DJANGO_SETTINGS_MODULE": "router_admin.settings"}
    result = _run("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_reports_only_the_justified_opt_ins():
    assert _deploy_check() <= JUSTIFIED


def test_check_deploy_reports_nothing_once_every_opt_in_is_on():
    assert _deploy_check(SECURE_SSL_REDIRECT="1", SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
                         SECURE_HSTS_PRELOAD="1") == set()


def test_production_mode_has_the_secure_settings():
    values = _settings()
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["SECURE_REFERRER_POLICY"] == "same-origin"
    assert values["X_FRAME_OPTIONS"] == "DENY"
    # WhiteNoise's compressed manifest storage, with scripts minified as they are collected.
    assert values["STORAGES"]["staticfiles"]["BACKEND"] == (
        "router_admin.static_storage.MinifiedCompressedManifestStorage")
    middleware = values["MIDDLEWARE"]
    assert middleware.index("whitenoise.middleware.WhiteNoiseMiddleware") == (
        middleware.index("django.middleware.security.SecurityMiddleware") + 1)


def test_the_proxy_ssl_header_and_hsts_are_set_from_the_environment():
    values = _settings(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", SECURE_HSTS_SECONDS="60",
                       SECURE_SSL_REDIRECT="1")
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_HSTS_SECONDS"] == 60
    assert values["SECURE_SSL_REDIRECT"] is True


def test_a_malformed_proxy_ssl_header_stops_the_start():
    result = _run("manage.py", "check",
                  env=production_env(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https"))
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto: https' is not a header name" in (
        result.stderr)


def test_the_site_sends_the_security_headers_over_https(client, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    response = client.get("/admin/login/", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=3600"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    cookie = response.cookies["csrftoken"]
    assert cookie["secure"] is True


@pytest.mark.parametrize("missing", SECRETS)
def test_serve_refuses_to_start_without_each_required_setting(missing):
    env = production_env()
    del env[missing]
    result = _run("serve.py", "check", env=env)
    assert result.returncode == 2
    assert f"{missing} is required" in result.stderr


def test_serve_names_every_problem_at_once():
    env = {k: v for k, v in production_env(DEBUG="1").items() if k not in SECRETS}
    env["DATABASE_URL"] = "sqlite:///var/router.sqlite3"
    result = _run("serve.py", "check", env=env)
    assert result.returncode == 2
    for line in ("REDIS_URL is required", "SECRET_KEY is required",
                 "ROUTER_ENCRYPTION_KEYS is required", "ALLOWED_HOSTS is required",
                 "DATABASE_URL must name PostgreSQL", "DEBUG must be off"):
        assert line in result.stderr


def test_collectstatic_writes_hashed_and_compressed_files_for_whitenoise(collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())["paths"]
    hashed = manifest["admin/css/base.css"]
    assert re.fullmatch(r"admin/css/base\.[0-9a-f]{12}\.css", hashed)
    assert (collected_static / f"{hashed}.gz").exists()


# --- email: sent, never printed ----------------------------------------------------------

def _email_backend(**extra: str) -> str:
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.EMAIL_BACKEND)")
    env = {**production_env(**extra), "DJANGO_SETTINGS_MODULE": "router_admin.settings"}
    result = _run("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_with_debug_off_the_console_is_never_the_default_email_backend():
    assert _email_backend(EMAIL_HOST="") == "router_admin.mail.UnconfiguredEmailBackend"
    assert _email_backend(EMAIL_HOST="smtp.example.com") == (
        "django.core.mail.backends.smtp.EmailBackend")
    assert _email_backend(EMAIL_HOST="", EMAIL_BACKEND="anymail.backends.ses.EmailBackend") == (
        "anymail.backends.ses.EmailBackend")


def test_with_debug_on_the_console_is_the_default_email_backend():
    assert _email_backend(EMAIL_HOST="", DEBUG="1") == (
        "django.core.mail.backends.console.EmailBackend")


def test_serve_refuses_to_start_without_an_email_backend_that_sends_naming_the_variables():
    result = _run("serve.py", "check", env=production_env(EMAIL_HOST=""))
    assert result.returncode == 2
    problem = next(line for line in result.stderr.splitlines() if "EMAIL" in line)
    assert "EMAIL_HOST" in problem
    assert "EMAIL_BACKEND" in problem


@pytest.mark.parametrize("backend", ["console", "filebased", "locmem", "dummy"])
def test_serve_refuses_an_email_backend_that_keeps_the_message_on_the_server(backend):
    dotted = f"django.core.mail.backends.{backend}.EmailBackend"
    result = _run("serve.py", "check", env=production_env(EMAIL_BACKEND=dotted))
    assert result.returncode == 2
    assert f"EMAIL_BACKEND={dotted} sends no email" in result.stderr


@pytest.mark.parametrize("email", [{"EMAIL_HOST": "smtp.example.com"},
                                   {"EMAIL_HOST": "", "EMAIL_BACKEND":
                                    "anymail.backends.ses.EmailBackend"}])
def test_serve_starts_with_smtp_settings_or_an_explicit_email_backend(email):
    result = _run("serve.py", "check", env=production_env(**email))
    assert result.returncode == 0, result.stderr


def test_smtp_over_tls_and_over_ssl_at_once_stops_the_start():
    result = _run("manage.py", "check", env=production_env(EMAIL_USE_TLS="1", EMAIL_USE_SSL="1"))
    assert result.returncode != 0
    assert "Set EMAIL_USE_TLS (STARTTLS, usually port 587) or EMAIL_USE_SSL" in result.stderr
