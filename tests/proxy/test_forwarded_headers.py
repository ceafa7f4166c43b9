"""Behind a load balancer: `make serve`'s web server takes the client's address from
X-Forwarded-For, but only when a proxy in FORWARDED_ALLOW_IPS sent it."""

from __future__ import annotations

import sys

import httpx

from accounts.models import ApiKey
from tests.router_admin.production import production_env
from tests.router_processes import env_for_test_database, router_processes

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _serve(trusted: str, metrics_dir: str):
    secrets = {k: v for k, v in production_env().items()
               if k in ("SECRET_KEY", "ROUTER_ENCRYPTION_KEYS", "EMAIL_HOST")}
    env = env_for_test_database(**secrets, WEB_CONCURRENCY="1", HOST="127.0.0.1",
                                FORWARDED_ALLOW_IPS=trusted, PROMETHEUS_MULTIPROC_DIR=metrics_dir,
                                LOG_LEVEL="WARNING")
    return router_processes(1, env, [sys.executable, "serve.py", "web"])


def _call(router, secret: str, **headers: str) -> int:
    return httpx.post(f"{router.base_url}/chat/completions", json=BODY, timeout=20,
                      headers={"Authorization": f"Bearer {secret}", **headers}).status_code


def _key_for(make_key, network: str) -> str:
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(allowed_ips=[network])
    return secret


def test_a_key_is_checked_against_the_address_a_trusted_proxy_forwards(mock_model, make_key,
                                                                       tmp_path):
    secret = _key_for(make_key, "203.0.113.0/24")
    with _serve("127.0.0.1", str(tmp_path)) as (router,):
        assert _call(router, secret, **{"X-Forwarded-For": "203.0.113.7"}) == 200
        assert _call(router, secret, **{"X-Forwarded-For": "198.51.100.1"}) == 403
        assert _call(router, secret) == 403
        # Applied once, by the router (uvicorn's own layer is off), whose answers do not
        # name the server software.
        answer = httpx.get(f"{router.base_url}/models", timeout=20,
                           headers={"Authorization": f"Bearer {secret}",
                                    "X-Forwarded-For": "203.0.113.7"})
        assert answer.status_code == 200
        assert "server" not in answer.headers


def test_forwarded_addresses_from_an_untrusted_peer_are_ignored(mock_model, make_key,
                                                                tmp_path):
    secret = _key_for(make_key, "203.0.113.0/24")
    with _serve("10.0.0.0/8", str(tmp_path)) as (router,):
        assert _call(router, secret, **{"X-Forwarded-For": "203.0.113.7"}) == 403
