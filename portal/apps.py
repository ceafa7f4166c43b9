from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The users' own web pages and self-service REST API. Views only: every read and write
    goes through the selectors and services of ``accounts`` and ``billing``."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "portal"
