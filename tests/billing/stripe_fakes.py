"""Stripe without the internet: a local server standing in for its API base, and webhook
deliveries signed offline with the SDK's own signature helper."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import stripe
from aiohttp import web
from django.test import Client
from django.urls import reverse

from billing.models import CheckoutTopUp
from tests.threaded_server import ThreadedServer

SECRET_KEY = "sk_test_binom_router_tests"
WEBHOOK_SECRET = "whsec_binom_router_tests"


@dataclass
class StripeCall:
    headers: dict[str, str]
    form: dict[str, str]  # flattened as the SDK sends it: ``line_items[0][quantity]``


class FakeStripeApi(ThreadedServer):
    """Answers ``POST /v1/checkout/sessions`` as Stripe would, and records each call.

    ``failures`` are answered first, one per call, as (status, error type) pairs.
    """

    name = "fake Stripe API"

    def __init__(self, failures: list[tuple[int, str]] | None = None) -> None:
        super().__init__()
        self.failures = list(failures or [])
        self.calls: list[StripeCall] = []

    def _app(self) -> web.Application:
        async def create_session(request: web.Request) -> web.Response:
            form = dict(parse_qsl(await request.text(), keep_blank_values=True))
            self.calls.append(StripeCall(headers=dict(request.headers), form=form))
            if self.failures:
                status, error_type = self.failures.pop(0)
                return web.json_response({"error": {"type": error_type,
                                                    "message": "Stripe says no."}},
                                         status=status)
            session_id = f"cs_test_{len(self.calls)}"
            return web.json_response({
                "id": session_id, "object": "checkout.session", "mode": "payment",
                "status": "open", "payment_status": "unpaid",
                "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                "currency": form["line_items[0][price_data][currency]"],
                "client_reference_id": form.get("client_reference_id"),
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            })

        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", create_session)
        return app


def session_event(topup: CheckoutTopUp, *, event_id: str = "evt_session_1",
                  type: str = "checkout.session.completed", payment_status: str = "paid",
                  payment_intent: str = "pi_test_1", amount_cents: int | None = None,
                  currency: str = "usd", metadata: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """A Checkout Session event for our top-up row, shaped as Stripe sends it."""
    return _event(event_id, type, {
        "id": topup.session_id or f"cs_test_for_{topup.pk}", "object": "checkout.session",
        "mode": "payment", "status": "complete", "payment_status": payment_status,
        "payment_intent": payment_intent, "currency": currency,
        "amount_total": topup.amount_micros // 10_000 if amount_cents is None else amount_cents,
        "client_reference_id": str(topup.pk),
        "metadata": _reference(topup) if metadata is None else metadata,
    })


def payment_intent_event(topup: CheckoutTopUp | None, *, event_id: str = "evt_intent_1",
                         payment_intent: str = "pi_test_1", amount_cents: int | None = None
                         ) -> dict[str, Any]:
    """``payment_intent.succeeded``; with no top-up, a payment that is not one of ours."""
    if amount_cents is None:
        amount_cents = topup.amount_micros // 10_000 if topup else 1_000
    return _event(event_id, "payment_intent.succeeded", {
        "id": payment_intent, "object": "payment_intent", "status": "succeeded",
        "amount": amount_cents, "amount_received": amount_cents, "currency": "usd",
        "metadata": _reference(topup) if topup else {},
    })


def _reference(topup: CheckoutTopUp) -> dict[str, str]:
    return {"user_id": str(topup.user_id), "topup_id": str(topup.pk)}


def _event(event_id: str, type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": type, "api_version": "2025-09-30",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "data": {"object": obj}}


def signature_for(body: str, *, secret: str = WEBHOOK_SECRET, age_seconds: int = 0) -> str:
    """The ``Stripe-Signature`` header Stripe would send, from the SDK's own helper."""
    return stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=int(time.time()) - age_seconds)


def deliver(client: Client, event: dict[str, Any] | str, *, signature: str | None = None,
            **sign_options: Any):
    """POST an event to the webhook URL as Stripe would: raw JSON body, signed header."""
    body = event if isinstance(event, str) else json.dumps(event)
    header = signature if signature is not None else signature_for(body, **sign_options)
    return client.post(reverse("billing:stripe-webhook"), data=body,
                       content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
