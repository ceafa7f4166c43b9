"""``router partitions`` and ``router retention``: the monthly partitions of usage records
and holds, and the retention policy that drops old ones (PostgreSQL)."""

from __future__ import annotations

from django.db import connection

from billing.services.partitions import PARTITIONED_TABLES, partitioned, partitions_ensure
from billing.services.partitions import partitions_of as _partitions_of
from billing.services.retention import retention_apply
from router_admin.cli.base import Options, Subparsers, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    subcommand(subparsers, "partitions", handler=partitions_command,
               help="Create the coming months' partitions of usage records and holds "
               "(and move rows waiting in the DEFAULT partition into theirs).")
    retention = subcommand(
        subparsers, "retention", handler=retention_command,
        help="Drop the usage-record and hold partitions older than the retention policy, "
        "once roll-ups cover them; the ledger and roll-ups are kept.")
    retention.add_argument("--months", type=int, metavar="N",
                           help="Keep the current month and N before it; default: "
                           "ROUTER_USAGE_RETENTION_MONTHS.")
    retention.add_argument("--dry-run", action="store_true",
                           help="Say what would be dropped, and drop nothing.")


def partitions_command(options: Options) -> list[str]:
    if not partitioned():
        return [f"No partitions on {connection.vendor}: usage records and holds are plain "
                "tables there."]
    created = partitions_ensure()
    lines = [f"Created {name}." for name in created] or ["Every partition needed exists."]
    for table in PARTITIONED_TABLES:
        months = [p for p in _partitions_of(table) if p.start is not None]
        lines.append(f"{table}: {len(months)} monthly partitions, "
                     f"{months[0].start:%Y-%m} to {months[-1].start:%Y-%m}, and DEFAULT."
                     if months else f"{table}: DEFAULT only.")
    return lines


def retention_command(options: Options) -> list[str]:
    result = retention_apply(months=options["months"], dry_run=options["dry_run"])
    verb = "Would drop" if result.dry_run else "Dropped"
    if not result.dropped:
        return [f"Nothing older than {result.cutoff:%Y-%m-%d} to drop."]
    return [f"{verb} {name}." for name in result.dropped]
