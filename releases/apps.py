from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "releases"

    def ready(self):
        from django.db.models.signals import post_delete, post_save, pre_save
        from django.urls import register_converter

        from environments.models import register_soak_need

        from . import metrics, steps
        from .calver import PathConverter
        from .models import own_query_soak_errors

        # Before any URLconf is read: the pages' and the API's release URLs both use it.
        register_converter(PathConverter, "version")
        # RQ forks a work horse per job; importing the jobs (GitPython, ruamel.yaml, the
        # HTTP clients) here, in the parent, spares every job ~150 ms of imports.
        from . import jobs  # noqa: F401

        # environments knows nothing of promotions: a freeze changed there wakes the commits it held.
        pre_save.connect(steps.freeze_changing, sender="environments.ChangeFreeze", dispatch_uid="freeze-saving")
        post_save.connect(steps.freeze_changed, sender="environments.ChangeFreeze", dispatch_uid="freeze-saved")
        post_delete.connect(steps.freeze_changed, sender="environments.ChangeFreeze", dispatch_uid="freeze-deleted")
        # Nor of services: a soak shortened under a query a service carries of its own is refused there too.
        register_soak_need(own_query_soak_errors)
        # Every process (web, worker, reconciler) counts its failures from 0, so increase() sees the first.
        metrics.count_from_zero()
