"""Vouchers: staff generate batches of single-use codes; a user redeems one for credit."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from audit.actors import Actor
from audit.services import AuditObject, audit_record, audit_record_each
from billing.errors import BillingError, InvalidAmount, VoucherInvalid
from billing.models import LedgerEntry, Voucher, Wallet
from billing.money import format_usd
from billing.services.wallets import wallet_credit
from billing.topup_limits import VOUCHER_BATCH_MAX, VOUCHER_MAX_MICROS, VOUCHER_MIN_MICROS
from billing.voucher_codes import code_digest, code_generate


@transaction.atomic
def voucher_batch_create(
    *,
    amount_micros: int,
    count: int,
    memo: str = "",
    expires_at: datetime | None = None,
    created_by: User | None = None,
    actor: Actor | None = None,
) -> list[str]:
    """Create ``count`` vouchers worth ``amount_micros`` each and return their codes.

    The codes exist only in the returned list: the caller shows them once (the admin page,
    the CLI's output) and they cannot be recovered afterwards. With an ``actor`` the batch is
    audited as one row (never its codes).
    """
    if not VOUCHER_MIN_MICROS <= amount_micros <= VOUCHER_MAX_MICROS:
        raise InvalidAmount(f"A voucher is worth between {format_usd(VOUCHER_MIN_MICROS)} and "
                            f"{format_usd(VOUCHER_MAX_MICROS)} USD.")
    if not 1 <= count <= VOUCHER_BATCH_MAX:
        raise InvalidAmount(f"A batch has between 1 and {VOUCHER_BATCH_MAX:,} vouchers.")
    if expires_at is not None and expires_at <= timezone.now():
        raise BillingError("The expiry must be in the future.")
    batch = uuid.uuid4()
    generated = [code_generate() for _ in range(count)]
    # Two equal codes out of 30**16 are not going to happen; were they to, the UNIQUE
    # digest refuses the batch instead of printing one code twice.
    Voucher.objects.bulk_create(
        Voucher(code_digest=code.digest, code_prefix=code.prefix, amount_micros=amount_micros,
                batch=batch, memo=memo, expires_at=expires_at, created_by=created_by)
        for code in generated
    )
    if actor is not None:
        label = f"voucher batch {batch}: {count} codes of {format_usd(amount_micros)} USD"
        audit_record(
            actor=actor, action="voucher.generate", reason=memo,
            obj=AuditObject(type=Voucher._meta.label_lower, id=str(batch), label=label),
            before=None,
            after={"batch": str(batch), "count": count, "amount_micros": amount_micros,
                   "memo": memo, "expires_at": _iso(expires_at)},
        )
    return [code.code for code in generated]


@transaction.atomic
def voucher_redeem(*, user: User, code: str, wallet: Wallet | None = None) -> LedgerEntry:
    """Credit the voucher's amount to ``user``'s wallet, or to ``wallet`` (an
    organization's: ``organizations.services`` checks who may), once ever; ``user`` is
    who redeemed it either way.

    The conditional UPDATE decides between concurrent redeemers: the first takes the row
    lock; the others wait for it and, once it commits, find ``redeemed_at`` set and match
    no row. The credit is in the same transaction, so a failed credit un-redeems the code.
    """
    digest = code_digest(code)
    if digest is None:
        raise VoucherInvalid
    now = timezone.now()
    claimed = (
        Voucher.objects.filter(code_digest=digest, redeemed_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .update(redeemed_by=user, redeemed_at=now)
    )
    if claimed != 1:
        raise VoucherInvalid
    voucher = Voucher.objects.get(code_digest=digest)
    return wallet_credit(
        user=user, wallet=wallet, amount_micros=voucher.amount_micros,
        kind=LedgerEntry.Kind.VOUCHER, idempotency_key=f"voucher:{voucher.pk}",
        memo=f"Voucher {voucher.code_prefix}",
    )


@transaction.atomic
def vouchers_expire(*, voucher_ids: list[int], actor: Actor | None = None) -> int:
    """Void unused vouchers now (a lost or leaked batch); returns how many were voided.
    Redeemed vouchers and those already expired keep their history. With an ``actor`` each
    voided voucher is audited."""
    now = timezone.now()
    # Locked, then updated: a concurrent redemption either commits first (and the lock's
    # re-check drops that row here) or waits for this void and then finds the code expired.
    voiding = list(
        Voucher.objects.select_for_update()
        .filter(pk__in=voucher_ids, redeemed_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("pk")
    )
    # The conditions again: SQLite takes no row locks.
    Voucher.objects.filter(pk__in=[voucher.pk for voucher in voiding],
                           redeemed_at__isnull=True).update(expires_at=now)
    if actor is not None:
        audit_record_each(actor=actor, action="voucher.void", changes=[
            (voucher, {"expires_at": _iso(voucher.expires_at)}, {"expires_at": now.isoformat()})
            for voucher in voiding
        ])
    return len(voiding)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
