"""``collectstatic`` as production runs it, once per test run (a shared fixture)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.router_admin.production import production_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory, worker_id: str) -> Path:
    """``collectstatic`` run once as production runs it (hashed names, compressed copies,
    the admin's scripts minified): it takes about 10 s, and several tests, in files that
    parallel workers run, read its output. The first worker to need it collects; the others
    wait for it (a lock in the run's shared temporary folder) and read the same files.
    Read only: a test that writes copies it first."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # every worker's folder lies in the run's own
    root = shared / "collected-static"
    with (shared / "collected-static.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "staticfiles.json").exists():
            result = subprocess.run([sys.executable, "manage.py", "collectstatic",
                                     "--noinput"],
                                    cwd=ROOT, env=production_env(STATIC_ROOT=str(root)),
                                    capture_output=True, text=True, timeout=180, check=False)
            assert result.returncode == 0, result.stderr
    return root
