"""Running ``manage.py router`` in tests: in-process, or as a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import ApiKey, User
from billing.models import LedgerEntry, ModelPrice, Wallet
from billing.selectors import wallet_balance
from billing.services import wallet_credit

MANAGE_PY = Path(__file__).resolve().parents[2] / "manage.py"


def router(*args: str) -> list[str]:
    """Run ``manage.py router ARGS`` in-process and return the lines it printed."""
    stdout, stderr = StringIO(), StringIO()
    call_command("router", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue().splitlines()


def refused(*args: str, match: str) -> str:
    """Run a command that must fail, check it wrote nothing, return its one-line message."""
    before = row_counts()
    stdout = StringIO()
    with pytest.raises(CommandError, match=match) as excinfo:
        call_command("router", *args, stdout=stdout, stderr=StringIO())
    assert row_counts() == before
    assert stdout.getvalue() == ""
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count()
            for model in (User, ApiKey, Wallet, LedgerEntry, ModelPrice)}


def micros(user: User) -> int:
    return wallet_balance(user=user).available_micros


def funded(user: User, usd_micros: int) -> User:
    wallet_credit(user=user, amount_micros=usd_micros, idempotency_key=f"test:{user.pk}",
                  memo="test funds")
    return user


def _database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{db['HOST']}{port}/{db['NAME']}"


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py router ARGS`` as a process against the test database."""
    env = {**os.environ, "DATABASE_URL": _database_url()}
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), "router", *args], env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )


