"""`make serve` and the Procfile: well-formed command lines (the web server they start is
tried in tests/proxy/test_metrics_multiprocess.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import redis

from serve import beat_lock_name, server_argv
from tests.router_admin.production import production_env

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("release", "web", "worker", "beat")


def _dry_run(process: str, **extra: str) -> str:
    result = subprocess.run([sys.executable, "serve.py", process, "--dry-run"], cwd=ROOT,
                            env=production_env(**extra), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_make_serve_checks_then_releases_then_starts_a_worker_a_beat_and_the_web_server():
    result = subprocess.run(["make", "-n", "serve"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"python serve\.py (\w+)", result.stdout)
    assert steps == ["check", "release", "worker", "beat", "web"]


def test_the_procfile_names_each_process_once_and_each_command_dry_runs():
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    entries = dict(line.split(": ", 1) for line in lines)
    assert len(entries) == len(lines)
    assert tuple(entries) == PROCESSES
    for name, command in entries.items():
        assert command == f"python serve.py {name}"
        assert _dry_run(name)


def test_the_web_server_runs_one_worker_process_per_core_unless_told():
    cores = len(os.sched_getaffinity(0))
    assert f"--workers {cores} " in _dry_run("web")
    command = _dry_run("web", WEB_CONCURRENCY="3", PORT="9000")
    assert "--workers 3 " in command
    assert "--port 9000 " in command
    assert Path(command.split()[0]).exists()


def test_the_web_server_cuts_what_still_runs_after_its_shutdown_grace():
    assert "--timeout-graceful-shutdown 25 " in _dry_run("web")
    assert "--timeout-graceful-shutdown 8 " in _dry_run("web", WEB_SHUTDOWN_GRACE_SECONDS="8")
    refused = subprocess.run([sys.executable, "serve.py", "web", "--dry-run"], cwd=ROOT,
                             env=production_env(WEB_SHUTDOWN_GRACE_SECONDS="soon"),
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "WEB_SHUTDOWN_GRACE_SECONDS='soon' is not a whole number" in refused.stderr


def test_granian_would_send_the_collected_static_files_once_there_are_any(tmp_path):
    # uvicorn (make serve's server) leaves them to WhiteNoise; granian, the other server
    # bench/ measures, sends them itself from Rust.
    assert "--static-path-mount" not in server_argv("granian", host="h", port=1, workers=1,
                                                    static_root=None)
    command = " ".join(server_argv("granian", host="h", port=1, workers=1,
                                   static_root=tmp_path))
    assert f"--static-path-route /static --static-path-mount {tmp_path} " in command


def test_worker_and_beat_are_celery_with_one_beat_schedule():
    assert " -A router_admin worker " in _dry_run("worker")
    beat = _dry_run("beat", CELERY_BEAT_SCHEDULE_FILE="/tmp/beat-schedule")
    assert " -A router_admin beat --loglevel info --schedule /tmp/beat-schedule " in beat


def _wait_for(path: Path, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {path}:\n{path.read_text()}"
        time.sleep(0.1)


def test_a_second_beat_stands_by_until_the_first_one_stops(tmp_path):
    redis_url = os.environ["REDIS_URL"]
    env = production_env(REDIS_URL=redis_url, LOG_LEVEL="INFO",
                         CELERY_BEAT_SCHEDULE_FILE=str(tmp_path / "schedule"))
    lock = beat_lock_name(env)
    assert lock.startswith(os.environ["ROUTER_REDIS_PREFIX"])
    redis.Redis.from_url(redis_url).delete(lock)
    beats, logs = [], []
    try:
        for name in ("first", "second"):
            logs.append(tmp_path / f"{name}.log")
            with logs[-1].open("w") as log:
                beats.append(subprocess.Popen([sys.executable, "serve.py", "beat"], cwd=ROOT,
                                              env=env, stdout=log, stderr=log))
            _wait_for(logs[-1], "beat: Starting" if name == "first" else "standing by")
        assert "holding" not in logs[1].read_text()
        beats[0].terminate()
        assert beats[0].wait(20) == 0
        _wait_for(logs[1], f"holding {lock}")
    finally:
        for beat in beats:
            beat.terminate()
            beat.wait(20)
        redis.Redis.from_url(redis_url).delete(lock)
