from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from . import log as audit_log
from .admin_changes import AuditedAdmin
from .models import AuditAction, AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is written by the portal and never edited by hand."""

    list_display = ["created_at", "action", "actor", "service", "environment", "version", "message"]
    list_filter = ["action", "service", "environment"]
    search_fields = ["actor", "service", "version", "message"]
    date_hierarchy = "created_at"
    list_per_page = 100
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Group membership decides who may request and approve: people and groups changed here are audited.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class PortalUserAdmin(AuditedAdmin, UserAdmin):
    def user_change_password(self, request, id, form_url=""):
        """Django's password form saves through none of AuditedAdmin's hooks, yet whoever sets an
        approver's password can sign in and approve as them: a password set or disabled here is
        audited, never its value, in the same transaction as the change."""
        if request.method != "POST":
            return super().user_change_password(request, id, form_url)
        with audit_log.chain_transaction():
            user = self.get_object(request, unquote(id))
            before = user.password if user is not None else None
            response = super().user_change_password(request, id, form_url)
            if user is not None:
                user.refresh_from_db(fields=["password"])
            if user is not None and user.password != before:
                state = "set" if user.has_usable_password() else "disabled"
                audit_log.record(
                    AuditAction.ADMIN_CHANGED,
                    actor=request.user,
                    message=f"{user._meta.verbose_name} {user} changed in the admin: password {state}",
                    data={"model": user._meta.label, "object": user.pk, "changes": {"password": state}},
                )
        return response


@admin.register(Group)
class PortalGroupAdmin(AuditedAdmin, GroupAdmin):
    pass
