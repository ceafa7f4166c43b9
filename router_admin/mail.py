"""The email backend of a deployment that configured none (DEBUG off, neither EMAIL_HOST nor
EMAIL_BACKEND set): see the email settings in router_admin/settings.py."""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

NOT_CONFIGURED = ("No email was sent: no email backend is configured. Set EMAIL_HOST (SMTP, "
                  "with EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS) or "
                  "EMAIL_BACKEND.")


class UnconfiguredEmailBackend(BaseEmailBackend):
    """Sends nothing and says so. Django's console backend would print the message instead,
    and a password-reset link in the server's log lets whoever reads it take the account.
    The error names the settings, never a message's content: a caller may log it (Django's
    password-reset form does, and the outbox keeps it as the delivery's last error)."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages or self.fail_silently:
            return 0
        raise ImproperlyConfigured(NOT_CONFIGURED)
