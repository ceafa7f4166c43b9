"""The credit-or-adjust form on a user's admin page. It parses; billing's services decide."""

from __future__ import annotations

from billing.forms import WalletCreditForm


class UserWalletCreditForm(WalletCreditForm):
    """The wallet admin's credit form (amount as exact USD text, kind, reason, and the
    operation id fixed when the form is drawn), for one user.

    Prefixed so its fields cannot be mistaken for the user form's on the same page, and so
    each control has an id of its own for its label.
    """

    prefix = "credit"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["amount_usd"].help_text = (
            "Exact, up to 6 decimals: 10 or 0.25 credits; -5 removes money (as an adjustment "
            "only, and never more than is available).")
        self.fields["reason"].help_text = "Kept on the ledger entry and the audit trail."

    def user_credit_key(self, *, user_id: int) -> str:
        # The form is drawn with a fresh operation id; every submission of that drawing (a
        # double click, a retried POST) carries it, so the ledger's unique key takes it once.
        return f"admin:user-credit:{self.cleaned_data['operation_id']}:{user_id}"
