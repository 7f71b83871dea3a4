from django.apps import AppConfig


class DoraConfig(AppConfig):
    name = "releases.dora"
    label = "dora"
    verbose_name = "DORA metrics"
