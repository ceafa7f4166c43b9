"""The README's first command works: the embedded default (SQLite, mock worker, demo key)
serves OpenAI clients, as a separate process with nothing but Python."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.router_processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Iterator[tuple[str, str]]:
    database = tmp_path_factory.mktemp("embedded") / "router.sqlite3"
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
                        "DJANGO_SETTINGS_MODULE"}}
    env["DATABASE_URL"] = f"sqlite:///{database}"
    env["CELERY_FILESYSTEM_DIR"] = str(database.parent / "celery")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    port = free_port()
    demo = subprocess.run([*manage, "router", "demo", "--base-url", f"http://127.0.0.1:{port}"],
                          env=env, check=True, cwd=ROOT, capture_output=True, text=True)
    key = next(word for word in demo.stdout.split() if word.startswith("sk-br-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "router_admin.asgi:application", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=ROOT)
    try:
        wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}/v1", key, env, database
    finally:
        server.terminate()
        server.wait(10)


def test_the_demo_key_gets_answers_from_the_mock_model_and_is_charged(embedded):
    base_url, key, _, _ = embedded
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["mock-embed", "mock-gpt"]
    answer = client.chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello!"}])
    assert "Hello!" in answer.parse().choices[0].message.content
    assert int(answer.headers["x-router-cost-micros"]) > 0
    chunks = list(client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello!"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == answer.parse().usage.completion_tokens
    # The README's other first calls: the Responses API and embeddings, on the same key.
    assert "Hello!" in client.responses.create(model="mock-gpt", input="Hello!").output_text
    vectors = client.embeddings.create(model="mock-embed", input=["a", "b"], dimensions=256)
    assert [len(item.embedding) for item in vectors.data] == [256, 256]


def test_the_embedded_default_answers_errors_in_openai_format(embedded):
    base_url, key, _, _ = embedded
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock-gpt", messages=[], max_tokens=5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="sk-br-nope", max_retries=0).models.list()


def test_a_task_sent_by_one_process_is_run_by_a_worker_with_no_broker_server(embedded):
    """What make run relies on: Celery over the filesystem transport, no Redis."""
    import sqlite3

    _, _, env, database = embedded
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "router_admin", "worker", "--pool", "solo",
         "--loglevel", "warning", "--without-gossip", "--without-mingle",
         "--without-heartbeat"], env=env, cwd=ROOT)
    try:
        subprocess.run([sys.executable, "-c", "import django; django.setup(); "
                        "from proxy.tasks import workers_probe; workers_probe.delay()"],
                       env={**env, "DJANGO_SETTINGS_MODULE": "router_admin.settings"},
                       cwd=ROOT, check=True)
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(database) as db:
                probed = db.execute("SELECT last_probe_at FROM proxy_worker "
                                    "WHERE name = 'mock'").fetchone()[0]
            if probed is not None:
                break
            assert time.monotonic() < deadline, "the worker never ran the probe"
            time.sleep(0.3)
    finally:
        worker.terminate()
        worker.wait(20)
    # The broker's exchange bindings too sit beside its messages, not in the current folder.
    assert (database.parent / "celery" / "control" / "celery.exchange").exists()
