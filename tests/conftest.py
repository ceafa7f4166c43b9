from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from accounts.models import User
from accounts.services import user_create
from billing.models import ModelPrice
from billing.services import price_set
from proxy.money.spool import charge_spool
from tests.billing.stripe_fakes import SECRET_KEY, WEBHOOK_SECRET, FakeStripeApi
from tests.collected_static import collected_static  # noqa: F401 - a shared fixture
from tests.fake_dns import fake_dns  # noqa: F401 - a shared fixture
from tests.live_router import live_router, mock_model, router  # noqa: F401 - shared fixtures
from tests.repository_only import install as _read_only_inside_the_repository
from tests.staff import staff_sign_in
from tests.wallet_ids import forget as _forget_wallet_ids

_read_only_inside_the_repository()

_emails = itertools.count(1)


@pytest.fixture(autouse=True)
def _wallet_ids_of_this_test_only() -> Iterator[None]:
    yield
    _forget_wallet_ids()


@pytest.fixture(scope="session", autouse=True)
def _static_files_without_collectstatic():
    # Production (DEBUG off, as in tests) serves static files from collectstatic's manifest;
    # tests render pages without running collectstatic, so they use plain names.
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with override_settings(STORAGES={**settings.STORAGES, "staticfiles": static}):
        yield


@pytest.fixture(scope="session", autouse=True)
def _fast_passwords():
    # The real hasher is slow on purpose (PBKDF2, about 0.4 s a password on this machine)
    # and tests make and sign in users by the hundred. Processes the tests start (routers,
    # the CLI) keep the real one.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def _quiet_routers_are_not_kept_warm():
    # A router kept warm touches Redis, its PostgreSQL pool and its upstreams after every
    # quiet second (proxy.entry.keep_warm): tests count connections, statements and calls,
    # and sit quiet between them. tests/proxy/test_keep_warm.py turns it on for its own.
    with override_settings(ROUTER_KEEP_WARM_MS=0), pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTER_KEEP_WARM_MS", "0")
        yield


@pytest.fixture(scope="session", autouse=True)
def _charge_spools_of_this_session(tmp_path_factory):
    # Charges that a test's database outage leaves unwritten are spooled (proxy.money.spool)
    # here, not in the checkout's var/, where a router started later would replay them.
    directory = str(tmp_path_factory.mktemp("charge-spool"))
    with override_settings(ROUTER_CHARGE_SPOOL_DIR=directory), \
            pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTER_CHARGE_SPOOL_DIR", directory)
        yield


@pytest.fixture(autouse=True)
def _charge_spool_closed_after_each_test() -> Iterator[None]:
    # A test that leaves a charge unwritten (a database kept away) leaves this process's
    # spool file open: the next test's lines go to a file of its own.
    yield
    charge_spool().close()


@pytest.fixture(scope="session", autouse=True)
def _processes_tests_start_share_this_redis_namespace():
    # The routers, Celery workers and commands that tests start are pointed at the test
    # database, whose name would give them another Redis prefix than this process's (named
    # after the configured database): they are one deployment with it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTER_REDIS_PREFIX", settings.ROUTER_REDIS_PREFIX)
        yield


@pytest.fixture
def make_user(db):
    def make(email: str | None = None, **kwargs) -> User:
        return user_create(email=email or f"user{next(_emails)}@example.com", **kwargs)

    return make


@pytest.fixture
def user(make_user) -> User:
    return make_user()


@pytest.fixture
def price(db) -> ModelPrice:
    # 1 USD / 1M input tokens and 2 USD / 1M output tokens: 1 and 2 micro-USD per token.
    return price_set(model="test-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
                     max_output_tokens=1000)


@pytest.fixture
def staff(make_user) -> User:
    return make_user(email="admin@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, staff):
    return staff_sign_in(client, staff)


@pytest.fixture
def stripe_keys(settings):
    """Stripe configured, its API base pointing nowhere until a test starts a fake."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    return settings


@pytest.fixture
def stripe_api(stripe_keys) -> Iterator[FakeStripeApi]:
    """A local server standing in for Stripe's API, which the SDK is pointed at."""
    with FakeStripeApi() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server
