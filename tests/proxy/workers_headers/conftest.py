from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.models import User
from tests.proxy.workers_headers.gateways import AzureUpstream, PortkeyUpstream
from tests.staff import staff_sign_in


@pytest.fixture
def portkey() -> Iterator[PortkeyUpstream]:
    with PortkeyUpstream() as server:
        yield server


@pytest.fixture
def azure() -> Iterator[AzureUpstream]:
    with AzureUpstream() as server:
        yield server


@pytest.fixture
def staff_client(client, make_user):
    staff: User = make_user(email="ops@example.com", is_staff=True, is_superuser=True)
    return staff_sign_in(client, staff)
