"""``router demo``: the data the embedded default (``make run``) starts with.

Safe to run on every start: each step creates its thing only if missing, except the API
key, which is new each run because a key's secret cannot be shown again; the demo key of the
run before is revoked, so the demo user keeps one working demo key, not one more per start.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import CommandError
from django.db import transaction

from accounts.errors import UserNotFound
from accounts.models import ApiKey, User
from accounts.selectors import user_get_by_email
from accounts.services import CreatedApiKey, api_key_create, api_key_revoke, user_create
from billing.models import LedgerEntry, ModelKind, ModelPrice
from billing.money import format_usd, usd_to_micros
from billing.selectors import price_current, wallet_balance
from billing.services import price_set, wallet_credit
from proxy.models import Worker, WorkerModel
from proxy.services import worker_create, workers_changed
from router_admin.cli.base import Options, Subparsers, subcommand

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin"  # the point of a demo login; set only when the admin is created
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo"  # to sign in to the portal; likewise set only at creation
DEMO_CREDIT_USD = "10"
# A fixed key: the ledger's unique index makes a second run's credit a no-op, even if the
# demo user has since spent some of it.
DEMO_CREDIT_KEY = "demo:initial-credit"
DEMO_MODEL = "mock-gpt"
DEMO_INPUT_USD_PER_MTOK = "0.5"
DEMO_OUTPUT_USD_PER_MTOK = "1.5"
DEMO_MAX_OUTPUT_TOKENS = 4096
# The mock worker answers embeddings too: deterministic vectors, charged at the input price.
DEMO_EMBEDDING_MODEL = "mock-embed"
DEMO_EMBEDDING_USD_PER_MTOK = "0.02"
DEMO_WORKER = "mock"
DEMO_KEY_NAME = "demo"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class DemoSeed:
    admin: User
    admin_password: str | None  # only when this run created the admin
    demo_user: User
    available_micros: int
    price: ModelPrice
    price_created: bool
    worker: Worker
    worker_created: bool
    api_key: CreatedApiKey
    keys_revoked: int  # the demo keys of earlier runs, revoked by this one


def demo_seed() -> DemoSeed:
    """Ensure the demo admin, user, credit, price and mock worker exist; create a new demo
    API key and revoke the ones made before."""
    admin, admin_created = _user_ensure(
        email=ADMIN_EMAIL, password=ADMIN_PASSWORD, is_staff=True, is_superuser=True
    )
    demo_user, _ = _user_ensure(email=DEMO_EMAIL, password=DEMO_PASSWORD)
    wallet_credit(
        user=demo_user, amount_micros=usd_to_micros(DEMO_CREDIT_USD),
        kind=LedgerEntry.Kind.ADJUSTMENT, idempotency_key=DEMO_CREDIT_KEY,
        memo="demo credit",
    )
    price, price_created = _price_ensure()
    worker, worker_created = _worker_ensure()
    _embedding_model_ensure(worker)
    api_key, keys_revoked = _demo_key_replace(user=demo_user)
    return DemoSeed(
        admin=admin, admin_password=ADMIN_PASSWORD if admin_created else None,
        demo_user=demo_user, available_micros=wallet_balance(user=demo_user).available_micros,
        price=price, price_created=price_created, worker=worker,
        worker_created=worker_created, api_key=api_key, keys_revoked=keys_revoked,
    )


def _user_ensure(
    *, email: str, password: str | None = None, is_staff: bool = False,
    is_superuser: bool = False,
) -> tuple[User, bool]:
    try:
        # An existing user is left as it is: a changed password must survive a restart.
        return user_get_by_email(email=email), False
    except UserNotFound:
        return user_create(email=email, password=password, is_staff=is_staff,
                           is_superuser=is_superuser), True


def _demo_key_replace(*, user: User) -> tuple[CreatedApiKey, int]:
    """A new demo key, and how many earlier ones were revoked for it."""
    with transaction.atomic():
        previous = list(ApiKey.objects.filter(user=user, name=DEMO_KEY_NAME,
                                              revoked_at__isnull=True)
                        .values_list("prefix", flat=True))
        for prefix in previous:
            api_key_revoke(prefix=prefix)
        return api_key_create(user=user, name=DEMO_KEY_NAME), len(previous)


def _price_ensure() -> tuple[ModelPrice, bool]:
    current = price_current(model=DEMO_MODEL)
    if current is not None:
        return current, False  # staff may have changed it; a restart must not undo that
    return price_set(
        model=DEMO_MODEL, input_usd_per_mtok=DEMO_INPUT_USD_PER_MTOK,
        output_usd_per_mtok=DEMO_OUTPUT_USD_PER_MTOK, max_output_tokens=DEMO_MAX_OUTPUT_TOKENS,
    ), True


def _embedding_model_ensure(worker: Worker) -> None:
    """Price mock-embed and let the demo worker serve it, once: a later run leaves what
    staff made of either."""
    if price_current(model=DEMO_EMBEDDING_MODEL) is not None:
        return
    price_set(model=DEMO_EMBEDDING_MODEL, input_usd_per_mtok=DEMO_EMBEDDING_USD_PER_MTOK,
              output_usd_per_mtok="0", kind=ModelKind.EMBEDDING)
    WorkerModel.objects.get_or_create(worker=worker, model=DEMO_EMBEDDING_MODEL)
    workers_changed()


def _worker_ensure() -> tuple[Worker, bool]:
    existing = Worker.objects.filter(name=DEMO_WORKER).first()
    if existing is not None:
        return existing, False  # staff may have disabled or changed it; leave it so
    return worker_create(name=DEMO_WORKER, kind=Worker.Kind.MOCK,
                         models=[(DEMO_MODEL, "")]), True


def add_parsers(subparsers: Subparsers) -> None:
    demo = subcommand(subparsers, "demo", handler=demo_command,
                      help="Seed demo data (admin, demo user with credit, mock-gpt price, the "
                      "mock worker) and print a new demo API key, revoking the previous one. "
                      "Safe to re-run.")
    demo.add_argument("--base-url", default=DEFAULT_BASE_URL,
                      help=f"Where the router listens, for the curl example "
                      f"(default {DEFAULT_BASE_URL}).")
    demo.add_argument("--force", action="store_true",
                      help="Seed even with DEBUG off (the demo admin's password is 'admin').")


def demo_command(options: Options) -> list[str]:
    # A deployment must not gain a superuser whose password is "admin" by a stray command.
    if not settings.DEBUG and not options["force"]:
        raise CommandError(
            f"router demo creates {ADMIN_EMAIL} with the password {ADMIN_PASSWORD!r}, so it "
            "only runs with DEBUG on (the embedded default); pass --force to seed anyway."
        )
    seed = demo_seed()
    base_url = options["base_url"].rstrip("/")
    secret = seed.api_key.secret
    admin_line = (
        f"Admin: {seed.admin.email} / password {seed.admin_password} (created)"
        if seed.admin_password
        else f"Admin: {seed.admin.email} (exists; password unchanged)"
    )
    price_note = "created" if seed.price_created else "exists"
    worker_note = "created" if seed.worker_created else "exists"
    revoked_note = "; the one before is revoked" if seed.keys_revoked else ""
    return [
        admin_line,
        f"Demo user: {seed.demo_user.email}, available balance "
        f"{format_usd(seed.available_micros)} USD",
        f"Portal: {base_url}/ (sign in as {seed.demo_user.email}, password {DEMO_PASSWORD}, "
        "unless changed)",
        f"Model: {seed.price} ({price_note})",
        f"Worker: {seed.worker} ({worker_note})",
        f"Demo API key (new, shown once{revoked_note}): {secret}",
        "Try it:",
        f"  curl {base_url}/v1/chat/completions \\",
        f'    -H "Authorization: Bearer {secret}" \\',
        '    -H "Content-Type: application/json" \\',
        f"""    -d '{{"model": "{DEMO_MODEL}", "messages": """
        """[{"role": "user", "content": "Hello!"}]}'""",
    ]
