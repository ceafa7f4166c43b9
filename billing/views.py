"""Billing's HTTP endpoints: Stripe's webhook. Thin: the service verifies and decides."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.errors import TopUpsDisabled, WebhookRejected
from billing.services.stripe_topups import stripe_webhook_handle


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"type": code, "message": message}}, status=status)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature is what authenticates it
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        # The raw body, byte for byte: the signature covers exactly what Stripe sent.
        outcome = stripe_webhook_handle(payload=request.body,
                                        signature=request.headers.get("Stripe-Signature", ""))
    except WebhookRejected as exc:
        return _error(400, "invalid_webhook", str(exc))
    except TopUpsDisabled as exc:
        # 503, not 4xx: Stripe keeps retrying for days, so events survive a missing setting.
        return _error(503, "topups_disabled", str(exc))
    # 200 for duplicates and ignored types too: anything else makes Stripe deliver again.
    return JsonResponse({"received": True, "outcome": outcome})
