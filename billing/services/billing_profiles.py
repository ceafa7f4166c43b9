"""Writes of a wallet's billing details: the name and address its receipts are made out to."""

from __future__ import annotations

import unicodedata

from django.db import transaction

from audit.actors import Actor
from audit.services import audit_record
from billing.errors import BillingError
from billing.models import Wallet

BILLING_NAME_MAX = Wallet._meta.get_field("billing_name").max_length
# The address column is unbounded text; a receipt has room for a postal address, not a page.
BILLING_ADDRESS_MAX = 500
BILLING_ADDRESS_LINES_MAX = 8


class BillingProfileInvalid(BillingError):
    """Billing details that cannot be saved; the message says why."""


def wallet_billing_profile_set(*, wallet: Wallet, billing_name: str, billing_address: str,
                               actor: Actor | None = None) -> Wallet:
    """Set the name and address ``wallet``'s receipts name (empty name: the owner's email).

    Only those two columns are written: the balances of the row are moved by the request
    path at any moment, and saving a copy read earlier would put old balances back. With an
    ``actor`` (staff) the change is audited, like other staff changes.
    """
    name = billing_name_clean(billing_name)
    address = billing_address_clean(billing_address)
    with transaction.atomic():
        locked = (Wallet.objects.select_for_update().only("pk", "billing_name", "billing_address")
                  .get(pk=wallet.pk))
        before = {"billing_name": locked.billing_name, "billing_address": locked.billing_address}
        after = {"billing_name": name, "billing_address": address}
        if before != after:
            Wallet.objects.filter(pk=wallet.pk).update(billing_name=name, billing_address=address)
            if actor is not None:
                audit_record(actor=actor, action="wallet.billing_profile", obj=locked,
                             before=before, after=after)
    wallet.billing_name, wallet.billing_address = name, address
    return wallet


def billing_name_clean(raw: str) -> str:
    """The name as it is kept: one line, single spaces; BillingProfileInvalid if too long."""
    name = " ".join(raw.split())  # one line, single spaces: it is printed on one line
    if len(name) > BILLING_NAME_MAX:
        raise BillingProfileInvalid(f"The billing name is at most {BILLING_NAME_MAX} "
                                    "characters.")
    _refuse_control_characters(name, what="billing name")
    return name


def billing_address_clean(raw: str) -> str:
    """The address as it is kept: its non-empty lines, each with single spaces."""
    lines = [" ".join(line.split()) for line in raw.replace("\r\n", "\n").split("\n")]
    address = "\n".join(line for line in lines if line)
    if len(address) > BILLING_ADDRESS_MAX:
        raise BillingProfileInvalid(f"The billing address is at most {BILLING_ADDRESS_MAX} "
                                    "characters.")
    if address.count("\n") >= BILLING_ADDRESS_LINES_MAX:
        raise BillingProfileInvalid(f"The billing address is at most "
                                    f"{BILLING_ADDRESS_LINES_MAX} lines.")
    _refuse_control_characters(address.replace("\n", ""), what="billing address")
    return address


# Bidirectional embeddings, overrides and isolates: they reorder the text around them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _refuse_control_characters(text: str, *, what: str) -> None:
    # A NUL, an escape or a bidi override would print a receipt that does not read as it
    # looks in the form.
    if any(unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS for char in text):
        raise BillingProfileInvalid(f"The {what} contains control characters.")
