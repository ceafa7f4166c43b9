"""``router sweep`` and ``router reconcile``: the beat's billing jobs, run by hand; and
``router replay-charges``, what every router process does at its start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from django.core.management.base import CommandError

from billing.money import format_usd
from billing.services.hot_path import close_pools
from billing.services.sweeper import holds_sweep, wallets_reconcile
from proxy.money.spool import ReplayResult, replay_orphaned_spools
from router_admin.cli.base import Options, Subparsers, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    subcommand(subparsers, "sweep", handler=sweep_command,
               help="Release the money of holds left pending past their expiry.")
    subcommand(subparsers, "reconcile", handler=reconcile_command,
               help="Report wallets whose balances disagree with their ledger and holds.")
    replay = subcommand(
        subparsers, "replay-charges", handler=replay_charges_command,
        help="Write the charges that router processes gone before could not write while "
        "the database was away (their spool files); each router does it at its start.")
    replay.add_argument("--dir", metavar="DIR", help="the spool folder (default: "
                        "ROUTER_CHARGE_SPOOL_DIR), e.g. one copied from a machine that died")


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


def replay_charges_command(options: Options) -> list[str]:
    directory = Path(options["dir"]) if options.get("dir") else None

    async def replay() -> ReplayResult:
        try:
            return await replay_orphaned_spools(directory)
        finally:
            await close_pools()

    result = asyncio.run(replay())
    if result.left:
        raise CommandError(f"The database is not reachable: {result.left} spool file(s) "
                           "left for a later try.")
    return [f"Replayed {result.files} spool file(s): {result.written} resolution(s) "
            f"written, {result.already} already resolved, {result.failed} refused or "
            "unreadable (logged)."]
