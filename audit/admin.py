from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from .admin_changes import AuditedAdmin
from .models import AuditEvent


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
    pass


@admin.register(Group)
class PortalGroupAdmin(AuditedAdmin, GroupAdmin):
    pass
