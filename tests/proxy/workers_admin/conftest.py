from __future__ import annotations

import pytest

from accounts.models import User
from proxy.models import Worker
from proxy.services import worker_create
from tests.proxy.workers_admin.helpers import SECRET
from tests.staff import staff_sign_in


@pytest.fixture
def staff_client(client, make_user):
    staff: User = make_user(email="ops@example.com", is_staff=True, is_superuser=True)
    return staff_sign_in(client, staff)


@pytest.fixture
def worker() -> Worker:
    return worker_create(name="up", kind="openai", base_url="https://up.example/v1",
                         api_key=SECRET, models=[("gpt-x", ""), ("fast", "gpt-x-mini")])

