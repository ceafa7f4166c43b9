"""The groups ``manage.py router`` offers. A new group is a module with ``add_parsers``,
listed here."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from router_admin.cli import (
    costs,
    demo,
    keys,
    money,
    partitions,
    prices,
    staff,
    sweep,
    users,
    vouchers,
    workers,
)
from router_admin.cli.base import Subparsers

GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    users.add_parsers,
    staff.add_parsers,
    money.add_parsers,
    vouchers.add_parsers,
    keys.add_parsers,
    prices.add_parsers,
    workers.add_parsers,
    costs.add_parsers,
    sweep.add_parsers,
    partitions.add_parsers,
    demo.add_parsers,
)


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parsers in GROUPS:
        add_parsers(subparsers)
