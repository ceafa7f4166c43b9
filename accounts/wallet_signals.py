"""A wallet for a user created by a path that does not go through ``user_create``.

Every path of ours creates the wallet explicitly, in the transaction that creates the user
(``accounts.services.user_create``: the sign-up, the CLI; the admin's add form). Django's
``createsuperuser`` does not: it calls ``UserManager.create_superuser`` directly, and its
command cannot be overridden from ``accounts`` (``django.contrib.auth`` comes first in
INSTALLED_APPS, and the first app to define a command wins). This receiver is the net for
that path, and for code that calls ``User.objects.create_user`` itself (scripts, a shell).

It runs after the user's INSERT: inside the caller's transaction when there is one (the
admin, ``user_create``: there it finds the wallet already made), right after it otherwise
(``createsuperuser`` saves in autocommit). If that second statement ever failed, the user
would be left without a wallet until ``wallets_create_missing`` (migration 0004) runs again;
nothing else depends on the wallet existing, since ``wallet_credit`` makes one too.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from accounts.models import User
from billing.services.wallets import wallet_get_or_create


def wallet_for_new_user(sender: type[User], instance: User, created: bool, raw: bool = False,
                        **kwargs: Any) -> None:
    # ``raw``: loading fixtures, whose wallets (if any) come from the fixture itself.
    if created and not raw:
        wallet_get_or_create(user=instance)


def connect() -> None:
    post_save.connect(wallet_for_new_user, sender=User, dispatch_uid="accounts.wallet_for_new_user")
