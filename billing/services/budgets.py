"""Spend caps on API keys (and members' budgets in organizations): setting them, and moving
a budget with its holds."""

from __future__ import annotations

from datetime import date

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiKey
from audit.actors import Actor
from audit.services import audit_record
from audit.snapshots import snapshot
from billing.errors import InvalidAmount, KeySpendCapReached
from billing.models import KeyBudget, MemberBudget
from billing.models.budgets import SpendBudget


def current_month() -> date:
    """The calendar month (UTC) that monthly caps count, as its first day."""
    return timezone.now().date().replace(day=1)


CAP_FIELDS = ("lifetime_limit_micros", "monthly_limit_micros")


def key_budget_set(*, api_key: ApiKey, lifetime_limit_micros: int | None,
                   monthly_limit_micros: int | None, actor: Actor | None = None) -> KeyBudget:
    """Set (or clear, with None) a key's caps; a cap below what the key has already spent or
    reserved is refused. With an ``actor`` the change is audited."""
    for limit in (lifetime_limit_micros, monthly_limit_micros):
        if limit is not None and limit < 0:
            raise InvalidAmount("A spend cap cannot be negative.")
    try:
        with transaction.atomic():
            budget, created = KeyBudget.objects.select_for_update().get_or_create(api_key=api_key)
            before = None if created else snapshot(budget, fields=CAP_FIELDS)
            budget.lifetime_limit_micros = lifetime_limit_micros
            budget.monthly_limit_micros = monthly_limit_micros
            budget.save(update_fields=["lifetime_limit_micros", "monthly_limit_micros"])
            if actor is not None:
                audit_record(actor=actor, action="key_budget.set", obj=budget, before=before,
                             after=snapshot(budget, fields=CAP_FIELDS))
            return budget
    except IntegrityError:
        raise InvalidAmount("A spend cap cannot be below what the key has already spent or "
                            "reserved this period.") from None


def _month_spent(budget: KeyBudget, month: date) -> int:
    return budget.month_spent_micros if budget.month == month else 0


def cap_shortfall(budget: SpendBudget, amount_micros: int, *,
                  scope: str = "") -> KeySpendCapReached | None:
    """The cap that ``amount_micros`` more would pass, as the refusal to raise, or None.
    ``scope`` "member " names a member's budget in an organization (the same columns)."""
    if budget.lifetime_limit_micros is not None:
        remaining = budget.lifetime_limit_micros - budget.spent_micros - budget.pending_micros
        if amount_micros > remaining:
            return KeySpendCapReached(needed_micros=amount_micros, remaining_micros=remaining,
                                      period=f"{scope}lifetime",
                                      held_micros=budget.pending_micros)
    if budget.monthly_limit_micros is not None:
        remaining = (budget.monthly_limit_micros - _month_spent(budget, current_month())
                     - budget.pending_micros)
        if amount_micros > remaining:
            return KeySpendCapReached(needed_micros=amount_micros, remaining_micros=remaining,
                                      period=f"{scope}monthly",
                                      held_micros=budget.pending_micros)
    return None


def budget_reserve(budget: SpendBudget, amount_micros: int, *,
                   scope: str = "") -> None:
    """Count a new hold against a locked budget row (a key's, or a member's), or refuse it."""
    refusal = cap_shortfall(budget, amount_micros, scope=scope)
    if refusal is not None:
        raise refusal
    month = current_month()
    budget.month_spent_micros = _month_spent(budget, month)
    budget.month = month
    budget.pending_micros += amount_micros
    budget.save(update_fields=["pending_micros", "month_spent_micros", "month"])


def budget_resolve(budget: SpendBudget, *, amount_micros: int,
                   charged_micros: int) -> None:
    """Release a hold from a locked budget row, counting what it charged as spent."""
    month = current_month()
    budget.pending_micros -= amount_micros
    budget.spent_micros += charged_micros
    budget.month_spent_micros = _month_spent(budget, month) + charged_micros
    budget.month = month
    budget.save(update_fields=["pending_micros", "spent_micros", "month_spent_micros",
                               "month"])


def member_budget_open(*, organization_id: int, user_id: int) -> MemberBudget:
    """The member's budget row in the organization, made when they join (so what they spend
    is counted from their first request); no caps until an admin sets them."""
    budget, _ = MemberBudget.objects.get_or_create(organization_id=organization_id,
                                                   user_id=user_id)
    return budget


def member_budget_set(*, organization_id: int, user_id: int,
                      lifetime_limit_micros: int | None, monthly_limit_micros: int | None,
                      actor: Actor | None = None) -> MemberBudget:
    """Set (or clear, with None) a member's caps in an organization; a cap below what they
    have already spent or reserved this period is refused, as for a key's."""
    for limit in (lifetime_limit_micros, monthly_limit_micros):
        if limit is not None and limit < 0:
            raise InvalidAmount("A budget cannot be negative.")
    try:
        with transaction.atomic():
            budget = MemberBudget.objects.select_for_update().get(
                organization_id=organization_id, user_id=user_id)
            before = snapshot(budget, fields=CAP_FIELDS)
            budget.lifetime_limit_micros = lifetime_limit_micros
            budget.monthly_limit_micros = monthly_limit_micros
            budget.save(update_fields=["lifetime_limit_micros", "monthly_limit_micros"])
            if actor is not None:
                audit_record(actor=actor, action="member_budget.set", obj=budget,
                             before=before, after=snapshot(budget, fields=CAP_FIELDS))
            return budget
    except IntegrityError:
        raise InvalidAmount("A budget cannot be below what the member has already spent or "
                            "reserved this period.") from None
