"""Stripe's refund API and refund events, without the internet: a local server answering
``POST /v1/refunds`` as Stripe does (replaying the first answer for a repeated
Idempotency-Key), and the events Stripe sends about refunds."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from billing.models import CheckoutTopUp
from tests.billing.stripe_fakes import StripeCall
from tests.threaded_server import ThreadedServer


class FakeStripeRefunds(ThreadedServer):
    name = "fake Stripe refunds API"

    def __init__(self, *, status: str = "succeeded",
                 failures: list[tuple[int, str]] | None = None) -> None:
        super().__init__()
        self.status = status
        self.failures = list(failures or [])
        self.calls: list[StripeCall] = []
        self.refunds: dict[str, dict[str, Any]] = {}  # by idempotency key

    def _app(self) -> web.Application:
        async def create_refund(request: web.Request) -> web.Response:
            form = dict(parse_qsl(await request.text(), keep_blank_values=True))
            self.calls.append(StripeCall(headers=dict(request.headers), form=form))
            if self.failures:
                status, error_type = self.failures.pop(0)
                return web.json_response({"error": {"type": error_type,
                                                    "message": "Stripe says no."}},
                                         status=status)
            key = request.headers.get("Idempotency-Key", "")
            if key not in self.refunds:
                self.refunds[key] = {
                    "id": f"re_test_{len(self.refunds) + 1}", "object": "refund",
                    "amount": int(form["amount"]), "currency": "usd",
                    "payment_intent": form["payment_intent"], "status": self.status,
                    "metadata": {k[9:-1]: v for k, v in form.items()
                                 if k.startswith("metadata[")},
                }
            return web.json_response(self.refunds[key])

        app = web.Application()
        app.router.add_post("/v1/refunds", create_refund)
        return app


def refund_object(topup: CheckoutTopUp, *, refund_id: str = "re_dash_1", amount_cents: int,
                  status: str = "succeeded", metadata: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    return {"id": refund_id, "object": "refund", "amount": amount_cents, "currency": "usd",
            "payment_intent": topup.payment_intent_id, "status": status,
            "metadata": metadata or {}}


def refund_event(refund: dict[str, Any], *, event_id: str = "evt_refund_1",
                 type: str = "refund.updated") -> dict[str, Any]:
    return _event(event_id, type, refund)


def charge_refunded_event(topup: CheckoutTopUp, refunds: list[dict[str, Any]], *,
                          event_id: str = "evt_charge_refunded_1") -> dict[str, Any]:
    return _event(event_id, "charge.refunded", {
        "id": "ch_test_1", "object": "charge", "payment_intent": topup.payment_intent_id,
        "amount": topup.amount_micros // 10_000, "currency": "usd", "refunded": True,
        "amount_refunded": sum(r["amount"] for r in refunds),
        "refunds": {"object": "list", "data": refunds}})


def _event(event_id: str, type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": type, "api_version": "2025-09-30",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "data": {"object": obj}}
