"""``router user create``."""

from __future__ import annotations

from accounts.services import user_create
from audit.actors import Actor
from billing.models import LedgerEntry
from billing.money import format_usd, usd_to_micros
from billing.selectors import wallet_balance
from billing.services import wallet_credit
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    user = group(subparsers, "user", help="Manage users.")
    create = subcommand(user, "create", help="Create a user, optionally with credit.",
                        handler=user_create_command)
    create.add_argument("email")
    create.add_argument("--password",
                        help="Omit for an API-only user (no login); it can be set later with "
                        "`manage.py changepassword`.")
    create.add_argument("--credit", metavar="USD", help="Initial balance, e.g. 10 or 2.50.")
    create.add_argument("--staff", action="store_true", help="May log in to the admin.")


def user_create_command(options: Options) -> list[str]:
    # Parsed before anything is written, so a malformed amount creates no user.
    credit_micros = None if options["credit"] is None else usd_to_micros(options["credit"])
    user = user_create(email=options["email"], password=options["password"],
                       is_staff=options["staff"], actor=Actor.cli())
    lines = [f"Created user {user.email} (id {user.pk}{', staff' if user.is_staff else ''})."]
    if credit_micros is not None:
        wallet_credit(
            user=user, amount_micros=credit_micros, kind=LedgerEntry.Kind.ADJUSTMENT,
            memo="initial credit via CLI", idempotency_key=f"cli:user-create:{user.pk}",
            actor=Actor.cli(),
        )
        available = wallet_balance(user=user).available_micros
        lines.append(f"Available balance: {format_usd(available)} USD")
    return lines
