from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, post_save, pre_migrate
from django_rq.apps import DjangoRqAdminConfig


class NexoPortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "nexo_portal"
    verbose_name = "API access"
    default = True  # of the configs this module holds

    def ready(self):
        from . import sign_in_delay  # noqa: F401 - connects its signal receivers
        from .database_roles import grant_after_migrate, refuse_the_owner_before_migrate
        from .lib.postgres import use_c_timestamp_loader
        from .models import revoke_personal_tokens_of_deactivated
        from .sessions import end_sessions_of_deactivated

        connection_created.connect(use_c_timestamp_loader, dispatch_uid="nexo_portal.c_timestamp_loader")
        # Deactivating someone ends their access for good: reactivated, they sign in and make tokens again.
        post_save.connect(
            end_sessions_of_deactivated, sender=settings.AUTH_USER_MODEL, dispatch_uid="nexo_portal.end_sessions"
        )
        post_save.connect(
            revoke_personal_tokens_of_deactivated,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="nexo_portal.revoke_personal_tokens",
        )

        # Once per migrate: the runtime role checked before any app's migrations, granted after all of
        # them (the tables all exist by then).
        pre_migrate.connect(refuse_the_owner_before_migrate, sender=self, dispatch_uid="nexo_portal.runtime_role")
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="nexo_portal.grant_runtime_role")


class JobQueueConfig(DjangoRqAdminConfig):
    """django-rq, named in words in the admin's index (its own config leaves the module name)."""

    default = False
    verbose_name = "Job queue"
