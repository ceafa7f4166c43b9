"""django-otp's device apps under the names the admin's index shows for them."""

from django_otp.plugins.otp_static.apps import DefaultConfig as StaticConfig
from django_otp.plugins.otp_totp.apps import DefaultConfig as TotpConfig


class AuthenticatorAppsConfig(TotpConfig):
    verbose_name = "Staff sign-in: authenticator apps"


class RecoveryCodesConfig(StaticConfig):
    verbose_name = "Staff sign-in: recovery codes"
