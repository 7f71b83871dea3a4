from django.contrib import admin

from .models import Approval, BuildCounter, Deployment, Incident, IncidentSource, Promotion, Release, Service


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records the portal writes itself: visible to operators, changed only by the domain."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "image_repository", "auto_deploy_on_registration", "image_tag_key"]
    list_filter = ["team", "auto_deploy_on_registration"]
    search_fields = ["name", "description", "image_repository"]
    list_select_related = ["team"]
    fieldsets = [
        (None, {"fields": ["name", "description", "team", "image_repository", "source_repo_url"]}),
        ("GitOps", {"fields": ["auto_deploy_on_registration", "image_tag_key"]}),
        (
            "Overrides of the environment templates (blank: use the environment's)",
            {
                "classes": ["collapse"],
                "fields": [
                    "values_path_template",
                    "argocd_app_template",
                    "prometheus_query_template",
                    "health_url_templates",
                ],
            },
        ),
    ]


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = ["version", "service", "short_sha", "short_digest", "is_hotfix", "registered_by", "registered_at"]
    list_filter = ["service", "is_hotfix", "year"]
    search_fields = ["version", "commit_sha", "image_digest", "service__name"]
    list_select_related = ["service"]
    date_hierarchy = "registered_at"
    ordering = ["service__name", "-year", "-month", "-build"]
    raw_id_fields = ["fixes"]
    # A release is an immutable artifact: only its changelog and hotfix link may be corrected.
    immutable_fields = ["service", "version", "commit_sha", "committed_at", "image_digest", "registered_by", "registered_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.immutable_fields + ["tag_list"] if obj else ["tag_list"]

    @admin.display(description="Commit")
    def short_sha(self, release):
        return release.short_sha

    @admin.display(description="Digest")
    def short_digest(self, release):
        return release.image_digest[:19] + "…" if release.image_digest else "unknown (imported)"

    @admin.display(description="Tags")
    def tag_list(self, release):
        return ", ".join(release.tags()) if release.pk else "—"


class ApprovalInline(admin.TabularInline):
    model = Approval
    extra = 0
    fields = ["user", "decision", "comment", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Promotion)
class PromotionAdmin(ReadOnlyAdmin):
    list_display = ["id", "service", "version", "environment", "kind", "state", "is_emergency", "requester", "requested_at"]
    list_filter = ["state", "environment", "kind", "is_emergency", "service"]
    search_fields = ["service__name", "release__version", "gitops_commit_sha", "requested_by__username"]
    list_select_related = ["service", "release", "environment", "requested_by"]
    date_hierarchy = "requested_at"
    inlines = [ApprovalInline]

    @admin.display(description="Version", ordering="release__year")
    def version(self, promotion):
        return promotion.release.version

    @admin.display(description="Requested by")
    def requester(self, promotion):
        return promotion.requester_name()


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "user", "decision", "comment", "created_at"]
    list_filter = ["decision"]
    search_fields = ["user__username", "comment"]
    list_select_related = ["promotion__release__service", "promotion__environment", "promotion__service", "user"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = [
        "service", "version", "environment", "deployed_at", "replaced_at", "source", "is_change", "is_rollback", "health"
    ]
    list_filter = ["environment", "source", "is_change", "is_rollback", "service"]
    search_fields = ["service__name", "release__version", "gitops_commit_sha"]
    list_select_related = ["service", "release", "environment"]
    date_hierarchy = "deployed_at"

    @admin.display(description="Version")
    def version(self, deployment):
        return deployment.release.version


@admin.register(BuildCounter)
class BuildCounterAdmin(ReadOnlyAdmin):
    list_display = ["service", "year", "month", "last_build"]
    list_filter = ["service", "year"]
    list_select_related = ["service"]


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Incidents may be entered and corrected by hand: they decide which deployments count as failed."""

    list_display = ["title", "service", "environment", "severity", "source", "started_at", "resolved_at", "caused_by"]
    list_filter = ["environment", "severity", "source", "service"]
    search_fields = ["title", "external_id", "service__name"]
    list_select_related = ["service", "environment", "caused_by__release", "caused_by__service", "caused_by__environment"]
    date_hierarchy = "started_at"
    raw_id_fields = ["caused_by", "fixed_by"]
    fields = [
        "service", "environment", "title", "severity", "started_at", "resolved_at", "caused_by", "fixed_by",
        "source", "external_id", "external_url",
    ]

    def get_readonly_fields(self, request, obj=None):
        # What PagerDuty or the pipeline recorded stays theirs; times, severity and links may be corrected.
        return ["source", "external_id", "external_url"] if obj else ["source"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.source = IncidentSource.MANUAL
        super().save_model(request, obj, form, change)
        obj.audit(request.user, verb="changed in the admin" if change else "entered in the admin")
