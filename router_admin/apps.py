from django.apps import AppConfig


class RouterAdminConfig(AppConfig):
    name = "router_admin"
    verbose_name = "Binom Router"
