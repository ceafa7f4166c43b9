"""Stripe's customers, setup sessions, payment intents and payment methods without the
internet: a local server that answers as Stripe's test mode does for its test cards, and the
events Stripe sends about an auto top-up's payment intent.

Like test mode, what a charge does depends on the card (Stripe's test payment methods):
``pm_card_visa`` succeeds, ``pm_card_chargeDeclinedInsufficientFunds`` is declined and
``pm_card_authenticationRequired`` needs the cardholder, which off-session is a decline with
the code ``authentication_required``. A repeated Idempotency-Key gets the first answer again,
as from Stripe.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from billing.models import AutoTopUpCharge
from tests.billing.stripe_fakes import StripeCall, _event
from tests.threaded_server import ThreadedServer

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeDeclinedInsufficientFunds"
AUTHENTICATION_REQUIRED = "pm_card_authenticationRequired"
CARDS = {VISA: ("visa", "4242"), DECLINED: ("visa", "9995"),
         AUTHENTICATION_REQUIRED: ("visa", "3184")}


def _metadata(form: dict[str, str], prefix: str = "metadata") -> dict[str, str]:
    start = f"{prefix}["
    return {key[len(start):-1]: value for key, value in form.items()
            if key.startswith(start) and key.count("[") == prefix.count("[") + 1}


class FakeStripeAutoTopUp(ThreadedServer):
    """``intent_status`` is what a successful create answers (``succeeded`` as for a card,
    or ``processing`` / ``requires_action``); ``lose_answers`` drops that many answers to
    payment intent creations after making the intent, as a network that failed would."""

    name = "fake Stripe auto top-up API"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, StripeCall]] = []
        self.customers: dict[str, dict[str, Any]] = {}  # by idempotency key
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}  # by idempotency key
        self.intent_status = "succeeded"
        self.lose_answers = 0
        # Set to hold payment intent creations until a test releases them.
        self.release = threading.Event()
        self.release.set()
        self._ids = itertools.count(1)

    def calls_to(self, path: str) -> list[StripeCall]:
        return [call for called, call in self.calls if called == path]

    def intent_creations(self) -> list[StripeCall]:
        return self.calls_to("/v1/payment_intents")

    def _record(self, request: web.Request, text: str) -> dict[str, str]:
        form = dict(parse_qsl(text, keep_blank_values=True))
        self.calls.append((request.path, StripeCall(headers=dict(request.headers), form=form)))
        return form

    def _app(self) -> web.Application:
        async def create_customer(request: web.Request) -> web.Response:
            form = self._record(request, await request.text())
            key = request.headers.get("Idempotency-Key", f"none-{next(self._ids)}")
            self.customers.setdefault(key, {
                "id": f"cus_test_{len(self.customers) + 1}", "object": "customer",
                "email": form.get("email"), "metadata": _metadata(form)})
            return web.json_response(self.customers[key])

        async def create_session(request: web.Request) -> web.Response:
            form = self._record(request, await request.text())
            session_id = f"cs_test_{next(self._ids)}"
            self.sessions[session_id] = {
                "id": session_id, "object": "checkout.session", "mode": form["mode"],
                "status": "open", "customer": form.get("customer"),
                "metadata": _metadata(form), "url": f"https://checkout.stripe.test/{session_id}",
                "setup_intent": None,
            }
            return web.json_response(self.sessions[session_id])

        async def retrieve_session(request: web.Request) -> web.Response:
            self._record(request, request.query_string)
            session = self.sessions.get(request.match_info["session_id"])
            if session is None:
                return web.json_response({"error": {"type": "invalid_request_error",
                                                    "message": "No such session"}}, status=404)
            return web.json_response(session)

        async def create_intent(request: web.Request) -> web.Response:
            form = self._record(request, await request.text())
            key = request.headers["Idempotency-Key"]
            # Stripe answers a repeated key with the first request's answer, never charging
            # again; the test can hold creations to make them overlap.
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
            if key not in self.intents:
                self.intents[key] = self._intent(form)
            status, body = self.intents[key]["answer"]
            if self.lose_answers:
                self.lose_answers -= 1
                return web.json_response({"error": {"type": "api_error", "message": "lost"}},
                                         status=500, headers={"Stripe-Should-Retry": "false"})
            return web.json_response(body, status=status)

        async def retrieve_intent(request: web.Request) -> web.Response:
            self._record(request, request.query_string)
            for intent in self.intents.values():
                if intent["object"]["id"] == request.match_info["intent_id"]:
                    return web.json_response(intent["object"])
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "message": "No such payment_intent"}},
                                     status=404)

        async def retrieve_method(request: web.Request) -> web.Response:
            self._record(request, request.query_string)
            return web.json_response(payment_method(request.match_info["method_id"]))

        app = web.Application()
        app.router.add_post("/v1/customers", create_customer)
        app.router.add_post("/v1/checkout/sessions", create_session)
        app.router.add_get("/v1/checkout/sessions/{session_id}", retrieve_session)
        app.router.add_post("/v1/payment_intents", create_intent)
        app.router.add_get("/v1/payment_intents/{intent_id}", retrieve_intent)
        app.router.add_get("/v1/payment_methods/{method_id}", retrieve_method)
        return app

    def _intent(self, form: dict[str, str]) -> dict[str, Any]:
        method = form["payment_method"]
        intent: dict[str, Any] = {
            "id": f"pi_test_{len(self.intents) + 1}", "object": "payment_intent",
            "amount": int(form["amount"]), "amount_received": 0,
            "currency": form["currency"], "customer": form["customer"],
            "payment_method": method, "metadata": _metadata(form), "status": self.intent_status,
            "last_payment_error": None,
        }
        if method in (DECLINED, AUTHENTICATION_REQUIRED):
            declined = method == DECLINED
            error = {"type": "card_error", "code": "card_declined" if declined
                     else "authentication_required",
                     "decline_code": "insufficient_funds" if declined
                     else "authentication_required",
                     "message": "Your card has insufficient funds." if declined
                     else "Your card was declined. This transaction requires authentication."}
            intent.update(status="requires_payment_method", last_payment_error=error)
            return {"object": intent, "answer": (402, {"error": {**error,
                                                                 "payment_intent": intent}})}
        if intent["status"] == "succeeded":
            intent["amount_received"] = intent["amount"]
        return {"object": intent, "answer": (200, intent)}

    def complete_setup(self, session_id: str, method: str = VISA) -> dict[str, Any]:
        """The owner entered a card on the setup page: the session completes."""
        session = self.sessions[session_id]
        session["status"] = "complete"
        session["setup_intent"] = {"id": f"seti_{session_id}", "object": "setup_intent",
                                   "status": "succeeded", "customer": session["customer"],
                                   "payment_method": payment_method(method),
                                   "metadata": session["metadata"]}
        return session


def payment_method(method: str) -> dict[str, Any]:
    brand, last4 = CARDS.get(method, ("visa", "4242"))
    return {"id": method, "object": "payment_method", "type": "card",
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034}}


def intent_event(charge: AutoTopUpCharge, *, type: str = "payment_intent.succeeded",
                 event_id: str = "evt_auto_1", status: str | None = None,
                 intent_id: str | None = None, amount_cents: int | None = None,
                 error: dict[str, str] | None = None) -> dict[str, Any]:
    """An event about an auto top-up charge's payment intent, as Stripe sends it."""
    status = status or {"payment_intent.succeeded": "succeeded",
                        "payment_intent.payment_failed": "requires_payment_method",
                        "payment_intent.requires_action": "requires_action",
                        "payment_intent.canceled": "canceled"}[type]
    amount = charge.amount_micros // 10_000 if amount_cents is None else amount_cents
    return _event(event_id, type, {
        "id": intent_id or charge.payment_intent_id or "pi_test_1", "object": "payment_intent",
        "status": status, "amount": amount,
        "amount_received": amount if status == "succeeded" else 0, "currency": "usd",
        "customer": charge.stripe_customer_id, "payment_method": charge.payment_method_id,
        "last_payment_error": error,
        "metadata": {"wallet_id": str(charge.wallet_id),
                     "auto_topup_charge_id": str(charge.pk)},
    })


def setup_intent_event(*, wallet_id: int, customer: str, method: str = VISA,
                       event_id: str = "evt_seti_1") -> dict[str, Any]:
    return _event(event_id, "setup_intent.succeeded", {
        "id": "seti_test_1", "object": "setup_intent", "status": "succeeded",
        "usage": "off_session", "customer": customer, "payment_method": method,
        "metadata": {"wallet_id": str(wallet_id), "purpose": "auto_topup_card"}})
