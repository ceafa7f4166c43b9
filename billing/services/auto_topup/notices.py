"""Telling a wallet's contacts that auto top-up switched itself off, through the outbox:
queued in the transaction that switched it off (so an email goes if and only if that
commits), sent by ``billing.services.outbox`` with its retries."""

from __future__ import annotations

import logging

from django.core.mail import send_mail
from django.utils import timezone

from accounts.models import User
from billing.models import OutboxMessage, Wallet
from billing.money import format_usd
from billing.selectors.auto_topup import wallet_contacts

logger = logging.getLogger(__name__)

AUTO_TOPUP_DISABLED = "auto_topup_disabled"


def auto_topup_disabled_queue(*, wallet_id: int, reason: str, amount_micros: int) -> None:
    # The recipients are not fixed here but when it is sent (wallet_contacts), so a message
    # retried later reaches whoever answers for the wallet then. The outbox row must name a
    # user: the wallet's owner, or for a wallet without one, its first contact's account.
    wallet = Wallet.objects.select_related("user").get(pk=wallet_id)
    user_id = wallet.user_id or User.objects.filter(
        email__in=wallet_contacts(wallet)).values_list("pk", flat=True).first()
    if user_id is None:
        logger.warning("wallet %d: auto top-up switched off and nobody to tell", wallet_id)
        return
    now = timezone.now()
    OutboxMessage.objects.create(
        kind=AUTO_TOPUP_DISABLED, user_id=user_id, created_at=now, next_attempt_at=now,
        payload={"wallet_id": wallet_id, "reason": reason, "amount_micros": amount_micros})


def auto_topup_disabled_send(message: OutboxMessage) -> None:
    wallet = Wallet.objects.select_related("user", "organization").filter(
        pk=message.payload.get("wallet_id")).first()
    recipients = wallet_contacts(wallet) if wallet is not None else []
    if not recipients:
        return  # nobody to tell (the wallet or its people are gone): nothing to retry
    amount = format_usd(int(message.payload.get("amount_micros", 0)))
    # An organization's owners and billing members are told whose balance it is.
    whose = (f"{wallet.organization.name}'s" if wallet.organization is not None
             else "your")
    send_mail(
        subject="Binom Router: auto top-up is off, your card could not be charged",
        message=(f"We tried to add ${amount} to {whose} Binom Router balance with the saved "
                 f"card, and it did not go through:\n\n{message.payload.get('reason', '')}\n\n"
                 "Auto top-up is now off, so nothing more will be tried. Check the card (or "
                 "save another) and turn auto top-up on again on the portal's Auto top-up "
                 "page. Your API keys keep working until the balance runs out."),
        from_email=None, recipient_list=recipients)
