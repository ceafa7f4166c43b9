"""The one way this code talks to Stripe's API: a client with a timeout and bounded retries."""

from __future__ import annotations

import stripe
from django.conf import settings

# Staff and users wait on these calls: a short timeout, and the SDK's bounded retries, which
# only retry what Stripe says is safe to retry and reuse our idempotency key, so a retried
# create cannot make a second session or a second refund.
STRIPE_TIMEOUT_SECONDS = 20
STRIPE_NETWORK_RETRIES = 2


def stripe_client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=STRIPE_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=STRIPE_TIMEOUT_SECONDS),
    )
