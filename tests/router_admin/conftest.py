from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.router_admin.production import production_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """``collectstatic`` run once as production runs it (hashed names, compressed copies,
    the admin's scripts minified): it takes about 20 s, and several tests read its output."""
    root = tmp_path_factory.mktemp("static")
    result = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"],
                            cwd=ROOT, env=production_env(STATIC_ROOT=str(root)),
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return root
