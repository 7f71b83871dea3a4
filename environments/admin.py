from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from audit import log as audit_log
from audit.admin_changes import AuditedAdmin
from audit.models import AuditAction

from .models import ChangeFreeze, Environment


class ChangeFreezeInline(admin.TabularInline):
    model = ChangeFreeze
    extra = 0
    fields = ["starts_at", "ends_at", "reason", "created_by"]
    readonly_fields = ["created_by"]


@admin.register(Environment)
class EnvironmentAdmin(AuditedAdmin):
    list_display = [
        "name",
        "position",
        "auto_promote",
        "required_approvals",
        "approver_group_names",
        "verification_window",
        "rollback_on_failed_verification",
        "requires_image_check",
        "requires_signature",
        "requires_attestation",
        "promotion_slo_minutes",
    ]
    ordering = ["position"]
    filter_horizontal = ["approver_groups", "requester_groups"]
    inlines = [ChangeFreezeInline]
    fieldsets = [
        (None, {"fields": ["name", "position"]}),
        (
            "Promotion policy",
            {
                "fields": [
                    "auto_promote",
                    "required_approvals",
                    "rollback_required_approvals",
                    "approver_groups",
                    "requester_groups",
                    "allows_break_glass",
                    "verification_window",
                    "rollback_verification_window",
                    "sample_interval_seconds",
                    "error_rate_threshold",
                    "failure_limit",
                    "consecutive_error_limit",
                    "required_checks",
                    "requires_image_check",
                    "requires_signature",
                    "requires_attestation",
                    "rollback_on_failed_verification",
                    "drift_warning_builds",
                    "drift_alert_builds",
                ]
            },
        ),
        (
            "Promotion SLOs (the reference docs' targets by default)",
            {
                "fields": [
                    "promotion_slo_minutes",
                    "promotion_slo_success_percent",
                    "promotion_slo_rollback_percent",
                ]
            },
        ),
        (
            "How to reach it ({service} and {environment} are filled in)",
            {
                "fields": [
                    "values_path_template",
                    "argocd_app_template",
                    "argocd_auto_sync",
                    "prometheus_query_template",
                    "health_url_templates",
                    "dashboard_url_template",
                ]
            },
        ),
        (
            "Delivery to the GitOps repository (docs/pull-requests.md)",
            {"fields": ["delivery_mode", "branch_name", "pull_request_labels", "pull_request_reviewer_teams"]},
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("approver_groups")

    @admin.display(description="Approver groups")
    def approver_group_names(self, environment):
        return ", ".join(group.name for group in environment.approver_groups.all()) or "—"

    def save_formset(self, request, form, formset, change):
        with transaction.atomic():
            for freeze in formset.save(commit=False):
                if freeze.created_by_id is None:
                    freeze.created_by = request.user
                freeze.save()
            for freeze in formset.new_objects:
                freeze.audit(AuditAction.FREEZE_CREATED, request.user)
            for freeze, _ in formset.changed_objects:
                freeze.audit(AuditAction.FREEZE_CHANGED, request.user)
            for freeze in formset.deleted_objects:
                freeze.audit(AuditAction.FREEZE_DELETED, request.user)
                freeze.delete()


@admin.register(ChangeFreeze)
class ChangeFreezeAdmin(admin.ModelAdmin):
    list_display = ["environment", "starts_at", "ends_at", "reason", "is_active", "created_by"]
    list_filter = ["environment"]
    search_fields = ["reason"]
    date_hierarchy = "starts_at"
    readonly_fields = ["created_by"]

    @admin.display(boolean=True, description="Active now")
    def is_active(self, freeze):
        return freeze.starts_at <= timezone.now() < freeze.ends_at

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        audit_log.lock_chain()  # the chain before the row, as every writer takes them
        if obj.created_by_id is None:
            obj.created_by = request.user
        # Moved to another environment, it frees the one it held (the reconciler reads the event).
        before = ChangeFreeze.objects.filter(pk=obj.pk).values_list("environment__name", flat=True).first()
        super().save_model(request, obj, form, change)
        obj.audit(
            AuditAction.FREEZE_CHANGED if change else AuditAction.FREEZE_CREATED,
            request.user,
            moved_from=before if before != obj.environment.name else None,
        )

    @transaction.atomic
    def delete_model(self, request, obj):
        obj.audit(AuditAction.FREEZE_DELETED, request.user)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for freeze in queryset:
            self.delete_model(request, freeze)
