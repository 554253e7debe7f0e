from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo content: `manage.py load_demo` (run by `make run`) and its model packages."""

    name = "demo"
    verbose_name = "Demo content"
