"""``router key create`` and ``router key revoke``."""

from __future__ import annotations

from datetime import UTC, datetime

from accounts.errors import AccountsError
from accounts.selectors import user_get_by_email
from accounts.services import api_key_create, api_key_revoke
from audit.actors import Actor
from billing.money import usd_to_micros
from billing.services import key_budget_set
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    key = group(subparsers, "key", help="Manage API keys.")
    create = subcommand(key, "create", handler=key_create_command,
                        help="Create an API key; its secret is printed once, on the last line.")
    create.add_argument("email")
    create.add_argument("--name", default="", help="A label the owner recognises the key by.")
    create.add_argument("--rpm", type=int, help="Requests per minute.")
    create.add_argument("--tpm", type=int, help="Tokens per minute.")
    create.add_argument("--max-concurrency", type=int, help="Requests in flight.")
    create.add_argument("--expires", help="Expiry, as an ISO date or date-time (UTC).")
    create.add_argument("--spend-limit", help="Spend cap over the key's lifetime, in USD.")
    create.add_argument("--monthly-spend-limit", help="Spend cap per calendar month, in USD.")
    create.add_argument("--models", default="", help="Allowed models, comma-separated.")
    create.add_argument("--ips", default="", help="Allowed client networks (CIDR), "
                        "comma-separated.")

    revoke = subcommand(key, "revoke", handler=key_revoke_command,
                        help="Revoke an API key by its prefix (sk-br- and 12 characters).")
    revoke.add_argument("prefix")


def key_create_command(options: Options) -> list[str]:
    user = user_get_by_email(email=options["email"])
    created = api_key_create(
        user=user, name=options["name"], expires_at=_expiry(options["expires"]),
        rpm=options["rpm"], tpm=options["tpm"], max_concurrency=options["max_concurrency"],
        allowed_models=_items(options["models"]), allowed_ips=_items(options["ips"]),
        actor=Actor.cli(),
    )
    lifetime, monthly = options["spend_limit"], options["monthly_spend_limit"]
    if lifetime is not None or monthly is not None:
        key_budget_set(
            api_key=created.api_key,
            lifetime_limit_micros=None if lifetime is None else usd_to_micros(lifetime),
            monthly_limit_micros=None if monthly is None else usd_to_micros(monthly),
            actor=Actor.cli())
    return [
        f"Created API key {created.api_key.prefix} for {user.email}"
        + (f" ({created.api_key.name})." if created.api_key.name else "."),
        "The secret below is shown only now; store it somewhere safe.",
        # Alone on the last line, so a script can take it with ``tail -n 1``.
        created.secret,
    ]


def _items(spec: str) -> list[str]:
    return [item.strip() for item in spec.split(",") if item.strip()]


def _expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise AccountsError(f"--expires {value!r} is not an ISO date or date-time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def key_revoke_command(options: Options) -> list[str]:
    api_key = api_key_revoke(prefix=options["prefix"], actor=Actor.cli())
    return [f"Revoked API key {api_key.prefix} of {api_key.user.email} "
            f"(since {api_key.revoked_at:%Y-%m-%d %H:%M:%S %Z})."]
