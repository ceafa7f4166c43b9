"""Reserve -> settle: the money side of one request.

Lock order, everywhere: the hold row, then the wallet row, then the key's budget, then the
key owner's budget in its organization. ``hold_create`` only locks the wallet and budgets
(its hold does not exist yet), so no two of these can wait on each other in a cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from billing.errors import HoldNotFound, IdempotencyConflict, InsufficientFunds, InvalidAmount
from billing.models import (
    Hold,
    KeyBudget,
    LedgerEntry,
    MemberBudget,
    ModelPrice,
    UsageRecord,
    Wallet,
)
from billing.services.budgets import budget_reserve, budget_resolve
from billing.services.ledger import ledger_post
from billing.services.wallets import wallet_get_or_create

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageReport:
    """What a finished request used, as the proxy measured or the upstream reported it."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the upstream's cache
    source: str = UsageRecord.Source.PROVIDER
    status: str = UsageRecord.Status.OK
    estimate_reason: str = ""  # why the router's own count was charged (UsageRecord's)
    over_cap: bool = False  # the upstream passed the output cap and was cut there
    worker: str = ""
    latency_ms: int | None = None
    ttft_ms: int | None = None
    endpoint: str = UsageRecord.Endpoint.CHAT  # the API the request came in through
    # What the upstream charges us for these same tokens (proxy.UpstreamCost, rounded like
    # the charge); None: unknown. A voided hold records None whatever this says.
    upstream_cost_micros: int | None = None


def hold_create(
    *,
    user: User | None = None,
    wallet: Wallet | None = None,
    hold_id: str,
    amount_micros: int,
    price: ModelPrice,
    model: str,
    api_key: ApiKey | None = None,
    expires_at: datetime | None = None,
) -> Hold:
    """Reserve ``amount_micros`` of a wallet's available balance (``wallet``, or ``user``'s
    own) for request ``hold_id``; with an ``api_key``, within its caps and, for an
    organization's key, its owner's budget there.

    Raises InsufficientFunds when the available balance cannot cover it (KeySpendCapReached
    for a cap). Calling it again with the same id returns the existing hold and reserves
    nothing more.
    """
    if amount_micros <= 0:
        raise InvalidAmount("A hold must reserve a positive amount.")
    expires_at = expires_at or timezone.now() + timedelta(
        seconds=settings.ROUTER_HOLD_TTL_SECONDS
    )
    if wallet is None:
        if user is None:
            raise InvalidAmount("A hold needs a wallet or a user.")
        wallet = wallet_get_or_create(user=user)
    wallet_id = wallet.pk
    try:
        with transaction.atomic():
            # The row lock serialises every reservation against this wallet, so the check
            # below and the increment after it see the same balance.
            wallet = Wallet.objects.select_for_update().get(pk=wallet_id)
            existing = Hold.objects.filter(pk=hold_id).first()
            if existing is not None:
                return _same_hold_or_conflict(existing, wallet=wallet, amount=amount_micros)
            if wallet.available_micros < amount_micros:
                raise InsufficientFunds(needed_micros=amount_micros,
                                        available_micros=wallet.available_micros,
                                        held_micros=wallet.pending_micros)
            if api_key is not None:
                # Lock order: wallet, then the key's budget (as in settle and the SQL path).
                budget = KeyBudget.objects.select_for_update().filter(
                    api_key_id=api_key.pk).first()
                if budget is not None:
                    budget_reserve(budget, amount_micros)
                member = _member_budget(api_key)
                if member is not None:
                    budget_reserve(member, amount_micros, scope="member ")
            wallet.pending_micros += amount_micros
            wallet.save(update_fields=["pending_micros", "updated_at"])
            return Hold.objects.create(
                id=hold_id, wallet=wallet, api_key=api_key, price=price, model=model,
                amount_micros=amount_micros, expires_at=expires_at,
            )
    except IntegrityError:
        # The same id was reserved concurrently against another wallet.
        existing = Hold.objects.filter(pk=hold_id).first()
        if existing is None:
            raise
        raise IdempotencyConflict(f"The hold id {hold_id!r} is already in use.") from None


def _same_hold_or_conflict(hold: Hold, *, wallet: Wallet, amount: int) -> Hold:
    if hold.wallet_id != wallet.pk or hold.amount_micros != amount:
        raise IdempotencyConflict(f"The hold id {hold.pk!r} is already in use.")
    return hold


@dataclass(frozen=True)
class HoldOutcome:
    hold: Hold
    usage_record: UsageRecord | None
    charged_micros: int
    already_resolved: bool  # True when an earlier call resolved it and this one did nothing


def hold_settle(*, hold_id: str, usage: UsageReport) -> HoldOutcome:
    """Charge what the request actually cost and release the rest of its reservation.

    Only a pending hold is settled; settling a resolved one is a no-op that reports what the
    first settlement did, so retries and concurrent settlers cannot charge twice.
    """
    with transaction.atomic():
        hold = _lock_hold(hold_id)
        if hold.status != Hold.Status.PENDING:
            return _resolved(hold)
        cost = hold.price.cost_micros(
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens,
        )
        charged = min(cost, hold.amount_micros)
        if cost > hold.amount_micros:
            # The estimate is a worst case by construction, so this means a bug or an upstream
            # that ignored max_tokens. The user never pays past what they agreed to reserve.
            logger.error("hold %s: cost %d exceeds the hold of %d; charging the hold",
                         hold.pk, cost, hold.amount_micros)
        wallet = Wallet.objects.select_for_update().get(pk=hold.wallet_id)
        wallet.pending_micros -= hold.amount_micros
        if charged:
            ledger_post(
                wallet=wallet, kind=LedgerEntry.Kind.CHARGE, amount_micros=-charged,
                idempotency_key=f"charge:{hold.pk}", memo=f"{hold.model} request {hold.pk}",
                hold=hold,
            )
        else:
            wallet.save(update_fields=["pending_micros", "updated_at"])
        _resolve(hold, Hold.Status.POSTED, charged_micros=charged)
        _budget_release(hold, charged_micros=charged)
        record = _usage_record_create(hold, wallet=wallet, usage=usage, cost_micros=charged,
                                      upstream_cost_micros=usage.upstream_cost_micros,
                                      over_hold=cost > hold.amount_micros)
        return HoldOutcome(hold=hold, usage_record=record, charged_micros=charged,
                           already_resolved=False)


def hold_void(*, hold_id: str, usage: UsageReport | None = None) -> HoldOutcome:
    """Release a reservation without charging: the request produced nothing billable."""
    return _release(hold_id, Hold.Status.VOIDED, usage)


def hold_expire(*, hold_id: str, usage: UsageReport | None = None) -> HoldOutcome:
    """Release a reservation that nobody settled in time (a crashed process, say)."""
    return _release(hold_id, Hold.Status.EXPIRED, usage)


def hold_discard(*, hold_id: str) -> bool:
    """Delete a pending hold its request never used (refused by the limits while the hold
    was taken beside their check) and give its money back: no usage record, no ledger
    entry, as if it had never been taken. False when the hold was no longer pending (it
    stays as it was)."""
    with transaction.atomic():
        hold = _lock_hold(hold_id)
        if hold.status != Hold.Status.PENDING:
            return False
        wallet = Wallet.objects.select_for_update().get(pk=hold.wallet_id)
        wallet.pending_micros -= hold.amount_micros
        wallet.save(update_fields=["pending_micros", "updated_at"])
        _budget_release(hold, charged_micros=0)
        hold.delete()
        return True


def holds_extend(*, hold_ids: list[str], expires_at: datetime) -> int:
    """Push back the expiry of holds whose requests are still running (a long stream), so
    the sweeper does not release money a live request will still settle. Only pending holds
    move, and only later; returns how many did. No lock is taken but the rows' own: a
    sweeper that claimed a hold first wins, and the hold then stays resolved."""
    return Hold.objects.filter(pk__in=hold_ids, status=Hold.Status.PENDING,
                               expires_at__lt=expires_at).update(expires_at=expires_at)


def _release(hold_id: str, status: str, usage: UsageReport | None) -> HoldOutcome:
    with transaction.atomic():
        hold = _lock_hold(hold_id)
        if hold.status != Hold.Status.PENDING:
            return _resolved(hold)
        wallet = Wallet.objects.select_for_update().get(pk=hold.wallet_id)
        wallet.pending_micros -= hold.amount_micros
        wallet.save(update_fields=["pending_micros", "updated_at"])
        _resolve(hold, status, charged_micros=0)
        _budget_release(hold, charged_micros=0)
        record = (
            _usage_record_create(hold, wallet=wallet, usage=usage, cost_micros=0,
                                 upstream_cost_micros=None)
            if usage is not None
            else None
        )
        return HoldOutcome(hold=hold, usage_record=record, charged_micros=0,
                           already_resolved=False)


def _budget_release(hold: Hold, *, charged_micros: int) -> None:
    if hold.api_key_id is None:
        return
    budget = KeyBudget.objects.select_for_update().filter(api_key_id=hold.api_key_id).first()
    if budget is not None:
        budget_resolve(budget, amount_micros=hold.amount_micros, charged_micros=charged_micros)
    member = _member_budget(hold.api_key)
    if member is not None:
        budget_resolve(member, amount_micros=hold.amount_micros, charged_micros=charged_micros)


def _member_budget(api_key: ApiKey) -> MemberBudget | None:
    """The locked budget of an organization key's owner there (lock order: after the
    key's budget); None for a personal or a service key."""
    if api_key.organization_id is None or api_key.service:
        return None
    return MemberBudget.objects.select_for_update().filter(
        organization_id=api_key.organization_id, user_id=api_key.user_id).first()


def _lock_hold(hold_id: str) -> Hold:
    hold = (
        Hold.objects.select_for_update(of=("self",))
        .select_related("price")
        .filter(pk=hold_id)
        .first()
    )
    if hold is None:
        raise HoldNotFound(f"No hold has the id {hold_id!r}.")
    return hold


def _resolve(hold: Hold, status: str, *, charged_micros: int) -> None:
    hold.status = status
    hold.charged_micros = charged_micros
    hold.resolved_at = timezone.now()
    hold.save(update_fields=["status", "charged_micros", "resolved_at"])


def _resolved(hold: Hold) -> HoldOutcome:
    return HoldOutcome(
        hold=hold,
        usage_record=UsageRecord.objects.filter(request_id=hold.pk).first(),
        charged_micros=hold.charged_micros,
        already_resolved=True,
    )


def _usage_record_create(
    hold: Hold, *, wallet: Wallet, usage: UsageReport, cost_micros: int,
    upstream_cost_micros: int | None, over_hold: bool = False,
) -> UsageRecord:
    # An organization's request is its key owner's; a personal one, the wallet's owner's.
    user_id = hold.api_key.user_id if hold.api_key_id is not None else wallet.user_id
    return UsageRecord.objects.create(
        request_id=hold.pk, user_id=user_id, organization_id=wallet.organization_id,
        api_key_id=hold.api_key_id, model=hold.model,
        worker=usage.worker, prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens, endpoint=usage.endpoint,
        cost_micros=cost_micros, upstream_cost_micros=upstream_cost_micros, price=hold.price,
        source=usage.source, status=usage.status,
        estimate_reason=usage.estimate_reason, over_cap=usage.over_cap, over_hold=over_hold,
        latency_ms=usage.latency_ms, ttft_ms=usage.ttft_ms,
    )
