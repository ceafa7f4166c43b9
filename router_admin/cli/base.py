"""What every subcommand group shares: how a subcommand is declared and what it returns.

A handler does its writes and returns the lines to print; the command prints them only
after the transaction committed, so nothing (an API key's secret, say) is shown for a write
that was rolled back.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

Options = Mapping[str, Any]
Handler = Callable[[Options], list[str]]
Subparsers = argparse._SubParsersAction  # what ``add_subparsers()`` returns

# The option under which each leaf parser stores its handler; unlikely to clash with
# Django's own options (verbosity, settings, ...).
HANDLER_DEST = "cli_handler"


def subcommand(
    subparsers: Subparsers, name: str, *, help: str, handler: Handler
) -> argparse.ArgumentParser:
    """Add a leaf subcommand that runs ``handler``."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(**{HANDLER_DEST: handler})
    return parser


def group(subparsers: Subparsers, name: str, *, help: str) -> Subparsers:
    """Add a subcommand that only holds further subcommands (``router key create``)."""
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
