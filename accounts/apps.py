from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from accounts import schema, signals  # noqa: F401  (schema extensions; organization at sign-up)
