from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.billing.stripe_fakes import SECRET_KEY, WEBHOOK_SECRET, FakeStripeApi


@pytest.fixture
def stripe_keys(settings):
    """Stripe configured, its API base pointing nowhere until a test starts a fake."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    return settings


@pytest.fixture
def stripe_api(stripe_keys) -> Iterator[FakeStripeApi]:
    with FakeStripeApi() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server
