"""The README's first minute: `make run` installs only what running needs, shows the demo key
last, once the web server and the Celery worker are up, stops cleanly on Ctrl-C, and keeps
Celery's files under var/."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx

from tests.router_processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = {"pytest", "pytest-django", "pytest-xdist", "hypothesis", "playwright", "openai",
              "ruff", "jsonschema", "granian"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()
            for requirement in requirements}


def _pip_installs(target: str, venv: Path) -> list[str]:
    # -B: every step, as in a fresh clone; -n: printed, not run.
    result = subprocess.run(["make", "-n", "-B", target, f"VENV={venv}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    return [line.split("pip install", 1)[1].strip() for line in result.stdout.splitlines()
            if "pip install" in line]


def test_make_run_installs_no_test_tool_and_make_test_installs_them(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not _names(project["dependencies"]) & TEST_TOOLS
    assert _names(project["optional-dependencies"]["dev"]) >= TEST_TOOLS

    assert _pip_installs("run", tmp_path) == ["-q --upgrade pip", "-q -e ."]
    assert _pip_installs("serve", tmp_path) == ["-q --upgrade pip", "-q -e ."]
    assert _pip_installs("test", tmp_path) == ["-q --upgrade pip", "-q -e .", "-q -e '.[dev]'"]


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
                        "DJANGO_SETTINGS_MODULE", "DEBUG", "CELERY_FILESYSTEM_DIR"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'router.sqlite3'}"
    env["CELERY_FILESYSTEM_DIR"] = str(tmp_path / "celery")
    return env


class _Output:
    """A process's stdout and stderr together, read line by line as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, seconds: float = 60) -> int:
        """The index of the first line holding ``text``."""
        deadline = time.monotonic() + seconds
        while True:
            for index, line in enumerate(list(self.lines)):
                if text in line:
                    return index
            assert time.monotonic() < deadline, f"{text!r} never came:\n" + self.text()
            time.sleep(0.1)

    def text(self) -> str:
        return "\n".join(self.lines)


def test_run_shows_the_demo_key_last_once_both_servers_are_up_and_stops_on_ctrl_c(tmp_path):
    env = _embedded_env(tmp_path)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env=env,
                   cwd=ROOT, check=True, timeout=120)
    port = free_port()
    var = tmp_path / "var"
    run = subprocess.Popen([sys.executable, "run.py", "--port", str(port), "--var", str(var)],
                           env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    output = _Output(run)
    try:
        last = output.wait_for("Ctrl-C stops the router.")
        # Nothing the servers print on starting comes after it.
        time.sleep(2)
        assert len(output.lines) == last + 1, output.text()
        assert "Uvicorn running on" in output.text()
        worker_pid = int((var / "celery-worker.pid").read_text())
        key = re.search(r"Demo API key \(new, shown once\): (sk-br-\S+)", output.text())[1]
        curl = output.lines[output.wait_for("curl "):last]
        assert curl[0].strip() == f"curl http://127.0.0.1:{port}/v1/chat/completions \\"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=20,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": "mock-gpt",
                                  "messages": [{"role": "user", "content": "Hello!"}]})
        assert answer.status_code == 200, answer.text

        run.send_signal(signal.SIGINT)  # what Ctrl-C sends it (the servers have a session
        assert run.wait(60) == 0        # of their own, so they hear it from run.py alone)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output._thread.join(10)
    assert "Traceback" not in output.text()
    assert "Terminated" not in output.text()
    assert not (var / "celery-worker.pid").exists()  # the worker released it on its way out
    try:
        os.kill(worker_pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the Celery worker {worker_pid} still runs")
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the web server still answers")


def test_run_refuses_a_port_already_in_use_before_starting_anything(tmp_path):
    env = _embedded_env(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "run.py", "--port", str(port), "--var",
                                 str(tmp_path / "var")], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert f"something already listens on http://127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "var" / "celery-worker.pid").exists()
    assert not (tmp_path / "router.sqlite3").exists()  # not even the demo was seeded


def test_the_celery_file_brokers_folders_are_all_under_var():
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_FILESYSTEM_DIR"}}
    code = ("import django, json; django.setup(); from router_admin.celery import app; "
            "print(json.dumps(app.conf.broker_transport_options))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True,
                            env={**env, "DJANGO_SETTINGS_MODULE": "router_admin.settings"})
    options = json.loads(result.stdout)
    for name in ("data_folder_in", "data_folder_out", "control_folder"):
        assert Path(options[name]).is_relative_to(ROOT / "var"), (name, options[name])
