"""``manage.py router ...``: the ops CLI. Thin: parsing here, work in the services."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.errors import AccountsError
from billing.errors import BillingError
from billing.money import MoneyError
from router_admin.cli.base import HANDLER_DEST
from router_admin.cli.registry import add_subcommands

# Refusals the services explain in words; anything else is a bug and keeps its traceback.
DOMAIN_ERRORS = (AccountsError, BillingError, MoneyError)


class Command(BaseCommand):
    help = "Run Binom Router: users, credit, balances, API keys, prices, demo data."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_subcommands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        handler = options[HANDLER_DEST]
        try:
            # One transaction per command: a command refused half-way (a user created, then
            # its credit refused) leaves nothing behind.
            with transaction.atomic():
                lines = handler(options)
        except DOMAIN_ERRORS as exc:
            raise CommandError(" ".join(str(exc).split()) or type(exc).__name__) from exc
        for line in lines:
            self.stdout.write(line)
