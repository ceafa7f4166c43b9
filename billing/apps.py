from django.apps import AppConfig
from django.db.backends.signals import connection_created


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.session_settings import on_connection_created

        connection_created.connect(on_connection_created,
                                   dispatch_uid="billing.session_settings")
