from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "releases"

    def ready(self):
        # RQ forks a work horse per job; importing the jobs (GitPython, ruamel.yaml, the
        # HTTP clients) here, in the parent, spares every job ~150 ms of imports.
        from . import jobs  # noqa: F401
