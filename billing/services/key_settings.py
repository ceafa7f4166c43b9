"""An API key and its spend caps, created or changed as one: the portal and the self-service
API offer them in one form, and a refused cap must not leave a key half-changed.

The caps live in billing (beside the wallet they are moved with), the key in accounts, so
this is where the two meet.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.models import ApiKey, User
from accounts.services import CreatedApiKey, api_key_create, api_key_update
from audit.actors import Actor
from billing.selectors.budgets import SpendCaps, key_spend_caps
from billing.services.budgets import key_budget_set


def api_key_create_with_caps(*, user: User, caps: SpendCaps, actor: Actor | None = None,
                             **policies: Any) -> CreatedApiKey:
    """``accounts.services.api_key_create`` (``policies`` are its keyword arguments) with
    ``caps``, in one transaction; audited with an ``actor``."""
    with transaction.atomic():
        created = api_key_create(user=user, actor=actor, **policies)
        # A key without caps keeps no budget row: the request path then skips it.
        if caps.any:
            key_budget_set(api_key=created.api_key,
                           lifetime_limit_micros=caps.lifetime_limit_micros,
                           monthly_limit_micros=caps.monthly_limit_micros, actor=actor)
        return created


def api_key_configure(*, api_key: ApiKey, caps: SpendCaps, actor: Actor | None = None,
                      **policies: Any) -> ApiKey:
    """``accounts.services.api_key_update`` (``policies`` are its keyword arguments) and the
    caps, in one transaction; caps are written only when they change. Audited with an
    ``actor``."""
    with transaction.atomic():
        if caps != key_spend_caps(api_key=api_key):
            key_budget_set(api_key=api_key, lifetime_limit_micros=caps.lifetime_limit_micros,
                           monthly_limit_micros=caps.monthly_limit_micros, actor=actor)
        return api_key_update(api_key=api_key, actor=actor, **policies)
