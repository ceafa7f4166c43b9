"""A password-reset link reaches its mailbox and nowhere else: no log record and no output
carries it, whatever the email backend, except the console backend of `make run` (DEBUG on),
which prints the email for the developer on purpose. A reset link printed to a production
server's output was once used to take an account over."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import User
from tests.log_records import every_log_record

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new passphrase 7"


def _ask_for_a_reset(client, email: str) -> None:
    response = client.post(reverse("portal:password_reset"), {"email": email})
    assert response["Location"] == reverse("portal:password_reset_done")


def _link_path(user: User) -> str:
    """What every reset link of ``user`` starts with: the token follows."""
    return reverse("portal:password_reset_confirm", kwargs={
        "uidb64": urlsafe_base64_encode(force_bytes(user.pk)), "token": "T"}).removesuffix("T/")


def test_a_reset_and_its_link_write_the_token_to_no_log_record_and_no_output(
    client, member, settings, capfd
):
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with every_log_record() as lines:
        _ask_for_a_reset(client, member.email)
        link = re.search(r"http://testserver(/password-reset/\S+/(\S+)/)", mail.outbox[0].body)
        form_url = client.get(link.group(1))["Location"]
        response = client.post(form_url, {"new_password1": NEW_PASSWORD,
                                          "new_password2": NEW_PASSWORD})
        assert response["Location"] == reverse("portal:password_reset_complete")
    out, err = capfd.readouterr()

    token = link.group(2)
    assert len(token) > 20
    for text in [*(line.text for line in lines), out, err]:
        assert token not in text
        assert _link_path(member) not in text


def test_without_an_email_backend_a_reset_fails_saying_what_to_set_and_logs_no_link(
    client, member, settings, capfd
):
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "router_admin.mail.UnconfiguredEmailBackend"
    with every_log_record() as lines:
        _ask_for_a_reset(client, member.email)
    out, err = capfd.readouterr()

    assert mail.outbox == []
    failure = next(line.text for line in lines
                   if "Failed to send password reset email" in line.text)
    assert "Set EMAIL_HOST" in failure
    for text in [*(line.text for line in lines), out, err]:
        assert _link_path(member) not in text


def test_with_debug_on_the_console_backend_prints_the_reset_link_for_make_run(
    client, member, settings, capsys
):
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    _ask_for_a_reset(client, member.email)

    assert f"http://testserver{_link_path(member)}" in capsys.readouterr().out
