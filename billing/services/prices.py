from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from audit.actors import Actor
from audit.services import audit_record
from audit.snapshots import snapshot
from billing.errors import InvalidAmount
from billing.models import ModelKind, ModelPrice
from billing.selectors import price_current

DEFAULT_MAX_OUTPUT_TOKENS = 4096
# What a price version is, for the audit trail (its id and author are the row's own).
PRICE_AUDIT_FIELDS = ("model", "input_usd_per_mtok", "output_usd_per_mtok",
                      "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "kind",
                      "max_output_tokens", "context_length", "effective_from")


def _price(value: Decimal | str, *, field: str) -> Decimal:
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidAmount(f"{field} {value!r} is not a number.") from None
    if not price.is_finite() or price < 0:
        raise InvalidAmount(f"{field} must be a price of zero or more USD per 1M tokens.")
    if price != price.quantize(Decimal("0.000001")) or price >= Decimal("1000000"):
        raise InvalidAmount(f"{field} {value} has more than 6 decimals or is too large.")
    return price


def price_set(
    *,
    model: str,
    input_usd_per_mtok: Decimal | str,
    output_usd_per_mtok: Decimal | str,
    cached_input_usd_per_mtok: Decimal | str | None = None,
    max_output_tokens: int | None = None,
    cache_write_usd_per_mtok: Decimal | str | None = None,
    kind: str | None = None,
    context_length: int | None = None,
    effective_from: datetime | None = None,
    created_by: User | None = None,
    actor: Actor | None = None,
) -> ModelPrice:
    """Add a new price version for ``model``; earlier versions stay for the records using them.
    With an ``actor`` it is audited, against the version in force until now."""
    model = model.strip()
    if not model or len(model) > 200:
        raise InvalidAmount("A model name of 1 to 200 characters is required.")
    current = price_current(model=model)
    if max_output_tokens is None:
        max_output_tokens = current.max_output_tokens if current else DEFAULT_MAX_OUTPUT_TOKENS
    if max_output_tokens < 1:
        raise InvalidAmount("max_output_tokens must be at least 1.")
    if kind is None:
        kind = current.kind if current else ModelKind.CHAT
    if context_length is None and current is not None:
        context_length = current.context_length
    if context_length is not None and context_length < 1:
        raise InvalidAmount("context_length must be at least 1.")
    if kind not in ModelKind.values:
        raise InvalidAmount(f"kind must be one of: {', '.join(ModelKind.values)}.")
    try:
        with transaction.atomic():
            created = ModelPrice.objects.create(
                model=model,
                input_usd_per_mtok=_price(input_usd_per_mtok, field="input"),
                output_usd_per_mtok=_price(output_usd_per_mtok, field="output"),
                cached_input_usd_per_mtok=(
                    None if cached_input_usd_per_mtok is None
                    else _price(cached_input_usd_per_mtok, field="cached input")
                ),
                cache_write_usd_per_mtok=(
                    None if cache_write_usd_per_mtok is None
                    else _price(cache_write_usd_per_mtok, field="cache write")
                ),
                kind=kind,
                context_length=context_length,
                max_output_tokens=max_output_tokens,
                effective_from=effective_from or timezone.now(),
                created_by=created_by,
            )
            if actor is not None:
                audit_record(
                    actor=actor, action="price.set", obj=created,
                    before=snapshot(current, fields=PRICE_AUDIT_FIELDS) if current else None,
                    after=snapshot(created, fields=PRICE_AUDIT_FIELDS),
                )
            return created
    except IntegrityError:
        raise InvalidAmount(
            f"{model} already has a price taking effect at that instant."
        ) from None
