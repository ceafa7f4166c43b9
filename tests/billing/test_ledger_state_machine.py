"""Random sequences of every money operation keep the books balanced."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from accounts.services import user_create
from billing.errors import InsufficientFunds
from billing.models import Hold, Wallet
from billing.selectors import wallet_audit
from billing.services import (
    UsageReport,
    hold_create,
    hold_expire,
    hold_settle,
    hold_void,
    price_set,
    wallet_credit,
    wallet_get_or_create,
)

_ids = itertools.count()
amounts = st.integers(min_value=1, max_value=50_000)
tokens = st.integers(min_value=0, max_value=20_000)


class LedgerMachine(RuleBasedStateMachine):
    """Checks the services against a plain model of what each wallet must hold."""

    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        run = next(_ids)
        self.users = [user_create(email=f"sm{run}-{i}@example.com") for i in range(2)]
        for user in self.users:
            wallet_get_or_create(user=user)
        self.price = price_set(model=f"sm-model-{run}", input_usd_per_mtok="0.7",
                               output_usd_per_mtok="2.3", cached_input_usd_per_mtok="0.1")
        self.posted = [0, 0]
        self.pending = [0, 0]
        self.hold_owner: dict[str, tuple[int, int]] = {}

    @rule(who=st.integers(0, 1), amount=amounts)
    def credit(self, who: int, amount: int) -> None:
        wallet_credit(user=self.users[who], amount_micros=amount,
                      idempotency_key=f"credit-{next(_ids)}", memo="sm", kind="topup")
        self.posted[who] += amount

    @rule(who=st.integers(0, 1), amount=amounts)
    def debit(self, who: int, amount: int) -> None:
        try:
            wallet_credit(user=self.users[who], amount_micros=-amount,
                          idempotency_key=f"debit-{next(_ids)}", memo="sm")
        except InsufficientFunds:
            assert self.posted[who] - self.pending[who] < amount
        else:
            self.posted[who] -= amount

    @rule(target=holds, who=st.integers(0, 1), amount=amounts)
    def reserve(self, who: int, amount: int) -> str:
        hold_id = f"h{next(_ids)}"
        try:
            hold_create(user=self.users[who], hold_id=hold_id, amount_micros=amount,
                        price=self.price, model=self.price.model)
        except InsufficientFunds:
            assert self.posted[who] - self.pending[who] < amount
            return "refused"
        self.pending[who] += amount
        self.hold_owner[hold_id] = (who, amount)
        return hold_id

    @rule(hold_id=consumes(holds), prompt=tokens, completion=tokens, cached=tokens)
    def settle(self, hold_id: str, prompt: int, completion: int, cached: int) -> None:
        if hold_id not in self.hold_owner:
            return
        who, amount = self.hold_owner.pop(hold_id)
        outcome = hold_settle(hold_id=hold_id, usage=UsageReport(
            prompt_tokens=prompt, completion_tokens=completion, cached_tokens=min(cached, prompt)))
        expected = min(amount, self.price.cost_micros(
            prompt_tokens=prompt, completion_tokens=completion, cached_tokens=min(cached, prompt)))
        assert outcome.charged_micros == expected
        self.pending[who] -= amount
        self.posted[who] -= expected

    @rule(hold_id=consumes(holds), expire=st.booleans())
    def release(self, hold_id: str, expire: bool) -> None:
        if hold_id not in self.hold_owner:
            return
        who, amount = self.hold_owner.pop(hold_id)
        (hold_expire if expire else hold_void)(hold_id=hold_id)
        self.pending[who] -= amount

    @rule(hold_id=holds)
    def resolve_again_changes_nothing(self, hold_id: str) -> None:
        if hold_id == "refused" or hold_id in self.hold_owner:
            return
        outcome = hold_settle(hold_id=hold_id, usage=UsageReport(prompt_tokens=9,
                                                                 completion_tokens=9))
        assert outcome.already_resolved

    @invariant()
    def books_balance(self) -> None:
        for who, user in enumerate(self.users):
            wallet = Wallet.objects.get(user=user)
            audit = wallet_audit(wallet_id=wallet.pk)
            assert audit.consistent, audit
            assert wallet.available_micros >= 0
            assert (wallet.posted_micros, wallet.pending_micros) == (self.posted[who],
                                                                     self.pending[who])
        assert Hold.objects.filter(pk__in=self.hold_owner, status="pending").count() == len(
            self.hold_owner)


@pytest.mark.django_db
def test_random_sequences_of_money_operations_keep_every_wallet_balanced():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=25, stateful_step_count=25, deadline=None),
    )
