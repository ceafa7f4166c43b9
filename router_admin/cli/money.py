"""``router credit`` and ``router balance``."""

from __future__ import annotations

from uuid import uuid4

from accounts.selectors import user_get_by_email
from audit.actors import Actor
from billing.models import LedgerEntry
from billing.money import format_usd, usd_to_micros
from billing.selectors import wallet_balance
from billing.services import wallet_credit
from router_admin.cli.base import Options, Subparsers, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    credit = subcommand(subparsers, "credit", handler=credit_command,
                        help="Add money to a user's balance, or remove it with a negative "
                        "amount (an adjustment in the ledger).")
    credit.add_argument("email")
    credit.add_argument("usd", metavar="USD", help="e.g. 10, 2.50 or -1.25")
    credit.add_argument("--reason", required=True, help="Kept in the ledger entry's memo.")

    balance = subcommand(subparsers, "balance", handler=balance_command,
                         help="Print a user's available balance in USD.")
    balance.add_argument("email")


def credit_command(options: Options) -> list[str]:
    amount_micros = usd_to_micros(options["usd"])
    user = user_get_by_email(email=options["email"])
    # A fresh key per run: an operator who runs the command twice means two adjustments.
    entry = wallet_credit(
        user=user, amount_micros=amount_micros, kind=LedgerEntry.Kind.ADJUSTMENT,
        memo=options["reason"], idempotency_key=f"cli:{uuid4()}", actor=Actor.cli(),
    )
    available = wallet_balance(user=user).available_micros
    return [
        f"Posted {format_usd(entry.amount_micros)} USD to {user.email} (ledger entry {entry.pk}).",
        f"Available balance: {format_usd(available)} USD",
    ]


def balance_command(options: Options) -> list[str]:
    user = user_get_by_email(email=options["email"])
    # Bare number, so scripts can read it: ``manage.py router balance x@y.com``.
    return [format_usd(wallet_balance(user=user).available_micros)]
