"""The invitation email, sent through Django's email backend by the portal and the API alike.

Sent after the invitation is committed, never inside its transaction: a slow mail server
must not hold the organization's row. A failure to send leaves the invitation in place and
is reported to the inviter, who can revoke it and invite again once email works.
"""

from __future__ import annotations

import logging
import smtplib

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import User
from organizations.models import Invitation

logger = logging.getLogger(__name__)


def invitation_accept_url(request: HttpRequest, token: str) -> str:
    return request.build_absolute_uri(reverse("portal:invitation_accept", args=[token]))


def invitation_email_send(*, request: HttpRequest, invitation: Invitation, token: str,
                          inviter: User) -> bool:
    """Email the link; True when the backend took it."""
    context = {"invitation": invitation, "organization": invitation.organization,
               "inviter": inviter, "accept_url": invitation_accept_url(request, token)}
    subject = render_to_string("portal/organizations/email/invitation_subject.txt", context)
    body = render_to_string("portal/organizations/email/invitation.txt", context)
    try:
        send_mail(subject=" ".join(subject.split()), message=body, from_email=None,
                  recipient_list=[invitation.email])
    except (smtplib.SMTPException, OSError, ImproperlyConfigured) as exc:
        # The error's class only: its text could carry the message, and the link in it
        # lets whoever reads the log join the organization.
        logger.warning("invitation %d: email not sent (%s)", invitation.pk,
                       exc.__class__.__name__)
        return False
    return True
