from django.apps import AppConfig


class PoolsAppConfig(AppConfig):
    name = "pools_app"
    verbose_name = "Pools"
    default_auto_field = "django.db.models.BigAutoField"
