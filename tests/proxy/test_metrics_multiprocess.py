"""With PROMETHEUS_MULTIPROC_DIR, as `make serve` runs the router, every process's counts
add up in one scrape, whichever process answers it, and a process that exits leaves its
counts behind; `make serve`'s web server starts with none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import brotli
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.router_admin.production import production_env
from tests.router_processes import env_for_test_database, router_processes

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{url}/metrics", timeout=20)
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def _answered(values: dict[tuple[str, tuple], float]) -> float:
    return values.get(("router_requests_total",
                       (("model", "mock-gpt"), ("status", "ok"), ("worker", "mock"))), 0.0)


def _completion_tokens(values: dict[tuple[str, tuple], float]) -> float:
    return values.get(("router_tokens_total",
                       (("kind", "completion"), ("model", "mock-gpt"))), 0.0)


def _scrape_settled(url: str, answered: int) -> dict[tuple[str, tuple], float]:
    """A scrape once ``answered`` completions are counted: a completion is counted when its
    charge is written, a moment after its answer went out."""
    deadline = time.monotonic() + 10
    while _answered(values := _scrape(url)) < answered and time.monotonic() < deadline:
        time.sleep(0.05)
    return values


def test_two_processes_counts_are_summed_and_outlive_a_process_that_exits(
    mock_model, make_key, tmp_path
):
    _, secret = make_key()
    env = env_for_test_database(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    with router_processes(2, env) as (first, second):
        tokens = 0
        for router, count in ((first, 3), (second, 4)):
            for _ in range(count):
                response = httpx.post(f"{router.base_url}/chat/completions", json=BODY,
                                      headers={"Authorization": f"Bearer {secret}"},
                                      timeout=20)
                assert response.status_code == 200
                tokens += response.json()["usage"]["completion_tokens"]

        for router in (first, second):
            values = _scrape_settled(router.url, 7)
            assert _answered(values) == 7
            assert _completion_tokens(values) == tokens
        first.stop()
        values = _scrape(second.url)
        assert _answered(values) == 7
        assert _completion_tokens(values) == tokens


def test_the_web_server_of_make_serve_starts_clean_and_adds_up_its_workers(
    mock_model, make_key, tmp_path, collected_static
):
    metrics, static = tmp_path / "metrics", tmp_path / "static"
    metrics.mkdir()
    # The folder of the release before (the files' times kept): this release compresses
    # only what changed.
    shutil.copytree(collected_static, static)
    stale = metrics / "counter_999999.db"
    stale.write_bytes(b"left by an earlier run")
    _, secret = make_key()
    secrets = {k: v for k, v in production_env().items()
               if k in ("SECRET_KEY", "ROUTER_ENCRYPTION_KEYS", "EMAIL_HOST")}
    env = env_for_test_database(**secrets, WEB_CONCURRENCY="2", HOST="127.0.0.1",
                                PROMETHEUS_MULTIPROC_DIR=str(metrics), STATIC_ROOT=str(static),
                                LOG_LEVEL="WARNING")
    # What `make serve` does first: migrate, and collect the static files under names that
    # carry a hash of their content, each stored compressed too.
    released = subprocess.run([sys.executable, "serve.py", "release"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    assert released.returncode == 0, released.stdout + released.stderr
    manifest = json.loads((static / "staticfiles.json").read_text())["paths"]
    hashed = manifest["portal/portal.css"]
    with router_processes(1, env, [sys.executable, "serve.py", "web"]) as (router,):
        assert not stale.exists()
        for _ in range(6):  # a new connection each: the kernel spreads them over the workers
            response = httpx.post(f"{router.base_url}/chat/completions", json=BODY,
                                  headers={"Authorization": f"Bearer {secret}"}, timeout=20)
            assert response.status_code == 200
        for _ in range(4):  # whichever worker answers the scrape
            assert _answered(_scrape_settled(router.url, 6)) == 6
        # Collected static files are sent from STATIC_ROOT, cacheable for good (their
        # names change with their content).
        css = httpx.get(f"{router.url}/static/{hashed}", timeout=10)
        assert css.status_code == 200
        assert css.content == (static / hashed).read_bytes()
        assert "immutable" in css.headers.get("cache-control", "")
        assert brotli.decompress((static / f"{hashed}.br").read_bytes()) == css.content
