"""``router voucher create``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from audit.actors import Actor
from billing.money import usd_to_micros
from billing.services.vouchers import voucher_batch_create
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    voucher = group(subparsers, "voucher", help="Generate single-use voucher codes.")
    create = subcommand(voucher, "create", handler=voucher_create_command,
                        help="Generate a batch of vouchers and print their codes, one per "
                        "line. The codes are shown only now: only their digests are kept.")
    create.add_argument("--amount", required=True, metavar="USD",
                        help="What each code is worth, e.g. 10 or 2.50.")
    create.add_argument("--count", required=True, type=int, metavar="N",
                        help="How many codes to generate.")
    create.add_argument("--memo", default="", help="What the batch is for; staff see it.")
    create.add_argument("--expires", metavar="ISO-DATE", type=_moment,
                        help="Expiry, as an ISO date (its first moment) or date-time; UTC "
                        "unless it names a zone.")


def voucher_create_command(options: Options) -> list[str]:
    # Nothing but the codes, so ``router voucher create ... > codes.txt`` is the batch.
    return voucher_batch_create(
        amount_micros=usd_to_micros(options["amount"]), count=options["count"],
        memo=options["memo"], expires_at=options["expires"], actor=Actor.cli(),
    )


def _moment(value: str) -> datetime:
    """An argparse type: a bad value is refused while parsing, before anything is written."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
