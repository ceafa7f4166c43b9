"""One user, from one page: what staff see on the user's admin page.

A fixed number of queries whatever the user's history (each list is a LIMIT on an index
that exists), so a user with millions of requests opens as fast as a new one:
the wallet by its unique ``user_id``; keys by ``accounts_apikey.user_id``; the latest
requests by ``UsageRecord (user, -created_at)``; the latest credits by
``LedgerEntry (wallet, -id)``; the month's spend as the portal computes it (daily roll-ups
for finished days, the records of today), so staff and the user see one number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from accounts.models import ApiKey, User
from billing.models import LedgerEntry, UsageRecord, Wallet
from billing.selectors import usage_spend_summary

RECENT_REQUESTS = 20
RECENT_CREDITS = 10
KEYS_SHOWN = 50

# What staff mean by "top-ups": money that came in, by card, by voucher or by staff (an
# adjustment goes both ways: a staff debit is listed too, it is the same action).
CREDIT_KINDS = (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER, LedgerEntry.Kind.ADJUSTMENT)

_REQUEST_FIELDS = ("id", "request_id", "created_at", "endpoint", "model", "prompt_tokens",
                   "completion_tokens", "cached_tokens", "cost_micros", "status")
_KEY_FIELDS = ("id", "prefix", "name", "created_at", "last_used_at", "revoked_at",
               "expires_at")


@dataclass(frozen=True)
class UserOverview:
    wallet_id: int | None
    posted_micros: int
    pending_micros: int
    month_spend_micros: int
    api_keys: list[ApiKey]
    recent_requests: list[UsageRecord]
    recent_credits: list[LedgerEntry]

    @property
    def available_micros(self) -> int:
        return self.posted_micros - self.pending_micros


def user_overview(*, user: User, now: datetime | None = None) -> UserOverview:
    """The wallet, keys, latest requests and credits and this month's spend of ``user``.

    The balances are read without a lock: a display, taken a moment before the page is
    drawn. Crediting re-reads the wallet under its row lock (``wallet_credit``).
    """
    now = now or timezone.now()
    wallet = Wallet.objects.filter(user=user).only(
        "id", "posted_micros", "pending_micros").first()
    api_keys = list(ApiKey.objects.filter(user=user).only(*_KEY_FIELDS)
                    .order_by("-created_at", "-pk")[:KEYS_SHOWN])
    # Ordered by created_at alone, the index's order: a tie-break on id would make
    # PostgreSQL sort rather than read the first rows of the index.
    recent_requests = list(UsageRecord.objects.filter(user=user).only(*_REQUEST_FIELDS)
                           .order_by("-created_at")[:RECENT_REQUESTS])
    recent_credits: list[LedgerEntry] = []
    if wallet is not None:
        recent_credits = list(
            LedgerEntry.objects.filter(wallet_id=wallet.pk, kind__in=CREDIT_KINDS)
            .select_related("created_by").order_by("-id")[:RECENT_CREDITS])
    return UserOverview(
        wallet_id=wallet.pk if wallet else None,
        posted_micros=wallet.posted_micros if wallet else 0,
        pending_micros=wallet.pending_micros if wallet else 0,
        month_spend_micros=usage_spend_summary(user=user, now=now).month_micros,
        api_keys=api_keys,
        recent_requests=recent_requests,
        recent_credits=recent_credits,
    )
