from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import User
from audit.actors import Actor
from audit.services import audit_record
from billing.errors import IdempotencyConflict, InsufficientFunds, InvalidAmount
from billing.models import LedgerEntry, Wallet
from billing.services.ledger import ledger_post

CREDIT_KINDS = {
    LedgerEntry.Kind.TOPUP,
    LedgerEntry.Kind.ADJUSTMENT,
    LedgerEntry.Kind.VOUCHER,
    LedgerEntry.Kind.REFUND,
}


def wallet_get_or_create(*, user: User) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(user=user)
    return wallet


def wallet_credit(
    *,
    user: User | None = None,
    wallet: Wallet | None = None,
    amount_micros: int,
    idempotency_key: str,
    memo: str,
    kind: str = LedgerEntry.Kind.ADJUSTMENT,
    created_by: User | None = None,
    actor: Actor | None = None,
) -> LedgerEntry:
    """Add (or, for an adjustment, remove) money. Calling it again with the same key returns
    the entry the first call wrote and moves nothing. With an ``actor`` (staff, the CLI) the
    credit is audited, ``memo`` as its reason. The wallet is ``wallet`` (an organization's,
    say), or ``user``'s own."""
    if kind not in CREDIT_KINDS:
        raise InvalidAmount(f"{kind!r} is not a kind of credit.")
    if amount_micros == 0:
        raise InvalidAmount("The amount cannot be zero.")
    if amount_micros < 0 and kind != LedgerEntry.Kind.ADJUSTMENT:
        raise InvalidAmount(f"A {kind} must add money; use an adjustment to remove it.")
    if not idempotency_key:
        raise InvalidAmount("An idempotency key is required.")

    if wallet is None:
        if user is None:
            raise InvalidAmount("A credit needs a wallet or a user.")
        wallet = wallet_get_or_create(user=user)
    wallet_id = wallet.pk
    existing = _entry_for_key(idempotency_key, wallet_id=wallet_id, amount_micros=amount_micros)
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            wallet = Wallet.objects.select_for_update().get(pk=wallet_id)
            if wallet.available_micros + amount_micros < 0:
                raise InsufficientFunds(needed_micros=-amount_micros,
                                        available_micros=wallet.available_micros)
            posted_before = wallet.posted_micros
            entry = ledger_post(
                wallet=wallet, kind=kind, amount_micros=amount_micros,
                idempotency_key=idempotency_key, memo=memo,
                created_by_id=created_by.pk if created_by else None,
            )
            if actor is not None:
                audit_record(
                    actor=actor, action="wallet.credit", obj=wallet, reason=memo,
                    before={"posted_micros": posted_before},
                    after={"posted_micros": wallet.posted_micros, "kind": kind,
                           "amount_micros": amount_micros, "ledger_entry": entry.pk},
                )
            return entry
    except IntegrityError:
        # A concurrent call with the same key committed first; the unique index decided
        # which one wrote, and this one returns that entry.
        existing = _entry_for_key(idempotency_key, wallet_id=wallet_id,
                                  amount_micros=amount_micros)
        if existing is None:
            raise
        return existing


def _entry_for_key(key: str, *, wallet_id: int, amount_micros: int) -> LedgerEntry | None:
    entry = LedgerEntry.objects.filter(idempotency_key=key).first()
    if entry is None:
        return None
    if entry.wallet_id != wallet_id or entry.amount_micros != amount_micros:
        raise IdempotencyConflict(
            f"The idempotency key {key!r} was already used for a different credit."
        )
    return entry
