"""``router sweep`` and ``router reconcile``: the beat's billing jobs, run by hand."""

from __future__ import annotations

from billing.money import format_usd
from billing.services.sweeper import holds_sweep, wallets_reconcile
from router_admin.cli.base import Options, Subparsers, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    subcommand(subparsers, "sweep", handler=sweep_command,
               help="Release the money of holds left pending past their expiry.")
    subcommand(subparsers, "reconcile", handler=reconcile_command,
               help="Report wallets whose balances disagree with their ledger and holds.")


def sweep_command(options: Options) -> list[str]:
    expired = holds_sweep().expired
    return [f"Expired {len(expired)} hold{'s' if len(expired) != 1 else ''}."]


def reconcile_command(options: Options) -> list[str]:
    mismatches = wallets_reconcile()
    if not mismatches:
        return ["Every wallet matches its ledger and its pending holds."]
    return [f"Wallet {a.wallet_id}: posted {format_usd(a.posted_micros)} vs ledger "
            f"{format_usd(a.ledger_sum_micros)}; pending {format_usd(a.pending_micros)} vs "
            f"holds {format_usd(a.pending_holds_micros)}" for a in mismatches]
