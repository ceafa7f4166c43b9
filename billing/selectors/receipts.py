"""Receipts: one for every ledger entry that put money into a wallet (a paid card top-up, a
redeemed voucher, a staff credit), read from the ledger; nothing else is stored.

A receipt's number, date, amount, method and balance after come from its entry, which the
database never lets change (the ledger is append-only), so they read the same every time.
The payer's name and address are the wallet's billing details as they are now, so a
corrected address shows on every receipt.

Who may see a receipt is decided in one place, ``_viewable_wallets``: a person's own wallet,
and the wallets of the organizations where their role may see billing (owners and billing
members: the role table says so, read through ``organizations.selectors``). The same rule
gives the pages of an organization's money their wallet (``wallet_of_viewer``): billing
details, card top-ups, auto top-up, statements. Any other entry, another user's, another
organization's, or one that is not a credit, is ReceiptNotFound, the same 404 as an id that
never existed.

Organizations answer the "who" (which organizations a user may bill for); billing imports
that one selector and nothing else of theirs, and keeps the rule here rather than in each
view, so a page or an endpoint cannot forget it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.conf import settings
from django.db.models import Q, QuerySet

from accounts.models import User
from billing.errors import TopUpNotFound
from billing.models import LedgerEntry, Voucher, Wallet
from billing.selectors.wallets import CREDIT_KINDS
from organizations.selectors import billing_organization_ids


class ReceiptNotFound(TopUpNotFound):
    """Not a receipt the caller may see; the API answers it 404 like any top-up not found."""


class ReceiptMethod(StrEnum):
    CARD = "card"
    VOUCHER = "voucher"
    STAFF_CREDIT = "staff_credit"

    @property
    def label(self) -> str:
        return _METHOD_LABELS[self]


_METHOD_LABELS = {ReceiptMethod.CARD: "Card (Stripe)", ReceiptMethod.VOUCHER: "Voucher",
                  ReceiptMethod.STAFF_CREDIT: "Staff credit"}

# The idempotency keys the crediting services write (billing.services.stripe_topups,
# billing.services.vouchers): the payment intent id, or the voucher's row id, follows.
_STRIPE_KEY = "stripe:"
_STRIPE_SESSION_KEY = "stripe:session:"  # Stripe sent no payment intent id (never seen)
_VOUCHER_KEY = "voucher:"
# An adjustment that gives back what a failed card refund had debited is the ledger
# correcting itself, not money paid in: it has no receipt.
_CORRECTION_KEYS = ("card_refund_returned:",)
_PAID_IN_KINDS = (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER)

# The entries that have a receipt; ``entry_has_receipt`` is the same rule for a loaded row.
# Request refunds (kind ``refund``) give back a charge and are on the statement instead.
RECEIPT_ENTRIES = (
    (Q(kind__in=_PAID_IN_KINDS) | Q(kind=LedgerEntry.Kind.ADJUSTMENT, amount_micros__gt=0))
    & ~Q(idempotency_key__startswith=_CORRECTION_KEYS[0])
)


def entry_has_receipt(entry: LedgerEntry) -> bool:
    """``RECEIPT_ENTRIES`` for an entry already loaded (a row of the top-ups page)."""
    if entry.idempotency_key.startswith(_CORRECTION_KEYS):
        return False
    if entry.kind in _PAID_IN_KINDS:
        return True
    return entry.kind == LedgerEntry.Kind.ADJUSTMENT and entry.amount_micros > 0


def receipt_number(entry_id: int) -> str:
    """``R-00000042`` for ledger entry 42: derived, so it never changes and needs no counter."""
    return f"R-{entry_id:08d}"


@dataclass(frozen=True)
class Receipt:
    entry_id: int
    number: str
    issued_at: datetime
    amount_micros: int
    balance_after_micros: int
    method: ReceiptMethod
    payment_intent_id: str | None  # a card payment's, when Stripe named one
    voucher_code_prefix: str | None  # a voucher's ``BR-7KQM`` (the rest is never kept)
    payer_name: str
    payer_address: str
    issuer: str

    @property
    def method_label(self) -> str:
        return self.method.label

    @property
    def currency(self) -> str:
        return "USD"  # balances are micro-USD; card payments are charged in USD too


def _viewable_wallets(*, user: User) -> QuerySet[Wallet]:
    """The wallets whose receipts and billing ``user`` may see and set: the one access rule.

    Their own, and those of the live organizations where their role may see billing.
    """
    return Wallet.objects.filter(
        Q(user=user) | Q(organization_id__in=billing_organization_ids(user=user)))


def _scoped(wallets: QuerySet[Wallet], *, user: User, wallet: Wallet | None
            ) -> QuerySet[Wallet]:
    # One wallet at a time: a person's receipts and an organization's are listed apart,
    # each under its own account, even for someone who may see both.
    return wallets.filter(pk=wallet.pk) if wallet is not None else wallets.filter(user=user)


def wallet_of_viewer(*, user: User, organization_id: int | None = None) -> Wallet | None:
    """The wallet whose billing ``user`` sees and sets: their own (every account has one
    from sign-up), or with ``organization_id`` that organization's, if their role there may
    see its billing. None otherwise: callers answer 404."""
    wallets = _viewable_wallets(user=user)
    if organization_id is None:
        return wallets.filter(user=user).select_related("user").first()
    return (wallets.filter(organization_id=organization_id)
            .select_related("organization").first())


def receipt_entries_of(*, user: User, wallet: Wallet | None = None
                       ) -> QuerySet[LedgerEntry]:
    """The ledger entries with a receipt of ``wallet`` (by default ``user``'s own), newest
    first; none at all unless ``user`` may see that wallet's receipts."""
    wallets = _scoped(_viewable_wallets(user=user), user=user, wallet=wallet)
    # The wallets' ids as constants, and the credit kinds said outright: PostgreSQL then
    # reads the few credits through the partial index billing_ledger_wallet_credits. Given
    # a subquery of wallets it read the wallet's whole ledger index (1.5 million entries of
    # a busy wallet: 85 ms for a page of receipts, 2.6 ms this way).
    wallet_ids = list(wallets.values_list("pk", flat=True))
    return (LedgerEntry.objects.filter(RECEIPT_ENTRIES, kind__in=CREDIT_KINDS,
                                       wallet_id__in=wallet_ids)
            .select_related("wallet__user", "wallet__organization").order_by("-id"))


def receipt_for(*, user: User, entry_id: int, wallet: Wallet | None = None) -> Receipt:
    """The receipt of ledger entry ``entry_id`` of ``wallet`` (by default ``user``'s own);
    ReceiptNotFound unless ``user`` may see it, the entry is that wallet's, and it is a
    credit that has one."""
    entry = receipt_entries_of(user=user, wallet=wallet).filter(pk=entry_id).first()
    if entry is None:
        raise ReceiptNotFound("No such receipt.")
    return receipts_from(entries=[entry])[0]


def receipts_from(*, entries: Iterable[LedgerEntry]) -> list[Receipt]:
    """Receipts of entries from ``receipt_entries_of`` (a page of them): one more query, for
    the vouchers' prefixes."""
    entries = list(entries)
    voucher_ids = {int(ref) for entry in entries
                   if (ref := _after(entry.idempotency_key, _VOUCHER_KEY)).isdigit()}
    prefixes = dict(Voucher.objects.filter(pk__in=voucher_ids).values_list("pk", "code_prefix")
                    ) if voucher_ids else {}
    return [_receipt(entry, prefixes) for entry in entries]


def _receipt(entry: LedgerEntry, voucher_prefixes: dict[int, str]) -> Receipt:
    key = entry.idempotency_key
    payment_intent_id = voucher_prefix = None
    if entry.kind == LedgerEntry.Kind.VOUCHER:
        method = ReceiptMethod.VOUCHER
        voucher_ref = _after(key, _VOUCHER_KEY)
        voucher_prefix = voucher_prefixes.get(int(voucher_ref)) if voucher_ref.isdigit() else None
    elif entry.kind == LedgerEntry.Kind.TOPUP and key.startswith(_STRIPE_KEY):
        method = ReceiptMethod.CARD
        if not key.startswith(_STRIPE_SESSION_KEY):
            payment_intent_id = _after(key, _STRIPE_KEY)
    else:
        # A top-up or positive adjustment written by staff (the admin, the router CLI).
        method = ReceiptMethod.STAFF_CREDIT
    wallet = entry.wallet
    return Receipt(
        entry_id=entry.pk, number=receipt_number(entry.pk), issued_at=entry.created_at,
        amount_micros=entry.amount_micros, balance_after_micros=entry.balance_after_micros,
        method=method, payment_intent_id=payment_intent_id, voucher_code_prefix=voucher_prefix,
        payer_name=wallet.billing_name or _owner_label(wallet),
        payer_address=wallet.billing_address, issuer=settings.ROUTER_RECEIPT_ISSUER,
    )


def _owner_label(wallet: Wallet) -> str:
    """Who a receipt names when the wallet has no billing name: its user's email, or the
    organization's name."""
    if wallet.user_id is not None:
        return wallet.user.email
    return wallet.organization.name if wallet.organization_id is not None else ""


def _after(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else ""
