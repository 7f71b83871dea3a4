from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from audit.admin_changes import AuditedAdmin
from environments.models import Environment

from . import transitions
from .models import (
    Approval,
    ApprovalNotice,
    BuildCounter,
    CheckResult,
    Deployment,
    DeploymentEvent,
    Hold,
    Incident,
    IncidentSource,
    Notice,
    Promotion,
    Release,
    Service,
    SlackIdentity,
    VerificationSample,
)
from .policy import PromotionError


class CommentForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class RejectionForm(forms.Form):
    # Required by the rejection rule itself (policy.why_not_reject); its refusal lands on this field.
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, help_text="Why it is rejected (required)."
    )


class RequestForm(forms.Form):
    environment = forms.ModelChoiceField(Environment.objects.in_pipeline_order())
    emergency = forms.BooleanField(required=False, label="Break-glass (production incident)")
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False, help_text="Required for break-glass."
    )


def confirm_then_apply(modeladmin, request, queryset, *, action, title, explanation, describe, form_class, apply):
    """An admin action with a confirmation page that says exactly what will happen.

    `apply(obj, request, cleaned_data)` calls one transition; refusals are shown, one per object.
    """
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        done, refused = [], []
        for obj in queryset:
            try:
                apply(obj, request, form.cleaned_data)
                done.append(describe(obj, form.cleaned_data))
            except PromotionError as refusal:
                if refusal.field in form.fields and not done:
                    # An input the rule needs is missing, for every one of them alike: ask for it again.
                    form.add_error(refusal.field, str(refusal))
                    break
                refused.append(f"{describe(obj, form.cleaned_data)}: {refusal}")
        if not form.errors:
            if done:
                modeladmin.message_user(request, f"{title}: " + "; ".join(done), messages.SUCCESS)
            for line in refused:
                modeladmin.message_user(request, line, messages.ERROR)
            return None
    return TemplateResponse(
        request,
        "admin/releases/confirm_action.html",
        {
            **modeladmin.admin_site.each_context(request),
            "opts": modeladmin.model._meta,
            "title": title,
            "explanation": explanation,
            "what_happens": [
                describe(obj, form.cleaned_data if form.is_bound and not form.errors else {}) for obj in queryset
            ],
            "queryset": queryset,
            "form": form,
            "action": action,
        },
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records the portal writes itself: visible to operators, changed only by the domain."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Service)
class ServiceAdmin(AuditedAdmin):
    list_display = ["name", "team", "image_repository", "auto_deploy_on_registration", "image_tag_key"]
    list_filter = ["team", "auto_deploy_on_registration"]
    search_fields = ["name", "description", "image_repository"]
    list_select_related = ["team"]
    fieldsets = [
        (None, {"fields": ["name", "description", "team", "image_repository", "source_repo_url"]}),
        ("GitOps", {"fields": ["auto_deploy_on_registration", "image_tag_key"]}),
        ("Signing (environments that require a signature)", {"fields": ["signing_public_keys"]}),
        (
            "Attestation (environments that require a Sigstore attestation)",
            {"fields": ["attestation_identity", "attestation_issuer"]},
        ),
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
class ReleaseAdmin(AuditedAdmin):
    list_display = ["version", "service", "short_sha", "short_digest", "is_hotfix", "registered_by", "registered_at"]
    list_filter = ["service", "is_hotfix", "year"]
    search_fields = ["version", "commit_sha", "image_digest", "service__name"]
    list_select_related = ["service"]
    date_hierarchy = "registered_at"
    ordering = ["service__name", "-year", "-month", "-build"]
    raw_id_fields = ["fixes"]
    # A release is an immutable artifact: only its changelog and hotfix link may be corrected.
    immutable_fields = [
        "service",
        "version",
        "commit_sha",
        "committed_at",
        "image_digest",
        "registered_by",
        "registered_at",
    ]

    def get_readonly_fields(self, request, obj=None):
        return [*self.immutable_fields, "tag_list"] if obj else ["tag_list"]

    actions = ["request_promotion"]

    @admin.action(description="Request a promotion of the selected releases")
    def request_promotion(self, request, queryset):
        return confirm_then_apply(
            self,
            request,
            queryset.select_related("service"),
            action="request_promotion",
            title="Request promotion",
            explanation="Each release below is asked to run in the environment you choose; the environment's "
            "approvals and rules apply as everywhere else.",
            describe=lambda release, data: (
                f"{release.service.name} {release.version} → "
                + (data["environment"].name if data.get("environment") else "…")
            ),
            form_class=RequestForm,
            apply=lambda release, request, data: transitions.request_promotion(
                release, data["environment"], request.user, is_emergency=data["emergency"], reason=data["reason"]
            ),
        )

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
    list_display = [
        "id",
        "service",
        "version",
        "environment",
        "kind",
        "state",
        "is_emergency",
        "requester",
        "requested_at",
    ]
    list_filter = ["state", "environment", "kind", "is_emergency", "service"]
    search_fields = ["service__name", "release__version", "gitops_commit_sha", "requested_by__username"]
    list_select_related = ["service", "release", "environment", "requested_by"]
    date_hierarchy = "requested_at"
    inlines = [ApprovalInline]
    actions = ["approve", "reject", "cancel"]

    def _confirm(self, request, queryset, action, title, explanation, form_class, apply):
        return confirm_then_apply(
            self,
            request,
            queryset.select_related("service", "release", "environment"),
            action=action,
            title=title,
            explanation=explanation,
            describe=lambda promotion, data: (
                f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"
            ),
            form_class=form_class,
            apply=apply,
        )

    @admin.action(description="Approve the selected promotions")
    def approve(self, request, queryset):
        return self._confirm(
            request,
            queryset,
            "approve",
            "Approve",
            "You approve these promotions. The approval rules are the same as on the board and in the API.",
            CommentForm,
            lambda promotion, request, data: transitions.approve(promotion, request.user, data["comment"]),
        )

    @admin.action(description="Reject the selected promotions")
    def reject(self, request, queryset):
        return self._confirm(
            request,
            queryset,
            "reject",
            "Reject",
            "You reject these promotions; each one ends. Say why.",
            RejectionForm,
            lambda promotion, request, data: transitions.reject(promotion, request.user, data["comment"]),
        )

    @admin.action(description="Cancel the selected promotions")
    def cancel(self, request, queryset):
        return self._confirm(
            request,
            queryset,
            "cancel",
            "Cancel",
            "These promotions stop before their GitOps commit.",
            CommentForm,
            lambda promotion, request, data: transitions.cancel(promotion, request.user, data["comment"]),
        )

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
        "service",
        "version",
        "environment",
        "deployed_at",
        "replaced_at",
        "source",
        "is_change",
        "is_rollback",
        "health",
    ]
    list_filter = ["environment", "source", "is_change", "is_rollback", "service"]
    search_fields = ["service__name", "release__version", "gitops_commit_sha"]
    list_select_related = ["service", "release", "environment"]
    date_hierarchy = "deployed_at"
    actions = ["roll_back"]

    @admin.action(description="Roll back the selected places to their last verified release")
    def roll_back(self, request, queryset):
        """Only a current deployment is rolled back: the changelist shows history too, and a rollback
        takes out what runs now, which a replaced row does not name. Its rows are read again when the
        confirmation is applied, and the release each showed running is what the rollback may take out."""
        queryset = queryset.select_related("service", "environment", "release")
        for replaced in queryset.filter(replaced_at__isnull=False):
            running = Deployment.objects.running(replaced.service, replaced.environment)
            now = (
                f"{running.release.version} runs there now. Select its current deployment (the row without "
                "“replaced at”) to roll it back."
                if running
                else "nothing runs there now, so there is nothing to roll back."
            )
            self.message_user(
                request,
                f"{replaced.service.name} in {replaced.environment.name}: the deployment of "
                f"{replaced.release.version} you selected was replaced; {now}",
                messages.ERROR,
            )
        current = queryset.filter(replaced_at__isnull=True)
        if not current.exists():
            return None
        return confirm_then_apply(
            self,
            request,
            current,
            action="roll_back",
            title="Roll back",
            explanation="Each service below goes back to the newest release verified in that environment before the "
            "one running; the environment's approvals apply, and automatic promotions there are put on hold.",
            describe=lambda deployment, data: (
                f"{deployment.service.name} in {deployment.environment.name} "
                f"(running {deployment.release.version}) → the last verified release"
            ),
            form_class=forms.Form,
            apply=lambda deployment, request, data: transitions.request_rollback(
                deployment.service, deployment.environment, request.user, expected=deployment.release.version
            ),
        )

    @admin.display(description="Version")
    def version(self, deployment):
        return deployment.release.version


@admin.register(BuildCounter)
class BuildCounterAdmin(ReadOnlyAdmin):
    list_display = ["service", "year", "month", "last_build"]
    list_filter = ["service", "year"]
    list_select_related = ["service"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["service", "environment", "reason", "placed_by", "placed_at", "lifted_by", "lifted_at"]
    list_filter = ["environment", "service"]
    list_select_related = ["service", "environment", "lifted_by"]
    actions = ["lift"]

    @admin.action(description="Lift the selected holds")
    def lift(self, request, queryset):
        return confirm_then_apply(
            self,
            request,
            queryset.select_related("service", "environment"),
            action="lift",
            title="Lift hold",
            explanation="Automatic promotions into these places resume.",
            describe=lambda hold, data: f"{hold.service.name} in {hold.environment.name}",
            form_class=forms.Form,
            apply=lambda hold, request, data: transitions.lift_hold(hold, request.user),
        )


@admin.register(CheckResult)
class CheckResultAdmin(ReadOnlyAdmin):
    list_display = ["name", "release", "environment", "passed", "url", "reported_by", "reported_at"]
    list_filter = ["name", "passed", "environment"]
    search_fields = ["release__version", "release__service__name"]
    list_select_related = ["release__service", "environment"]


@admin.register(VerificationSample)
class VerificationSampleAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "kind", "taken_at", "value", "ok", "detail"]
    list_filter = ["kind", "ok"]
    list_select_related = ["promotion__service", "promotion__release", "promotion__environment"]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "trigger", "application", "revision", "health_status", "phase", "outcome"]
    list_filter = ["trigger", "health_status"]
    search_fields = ["application", "revision"]


@admin.register(Incident)
class IncidentAdmin(AuditedAdmin):
    """Incidents may be entered and corrected by hand: they decide which deployments count as failed."""

    audit_changes = False  # Incident.audit records entries and corrections; deletions are audited here

    list_display = ["title", "service", "environment", "severity", "source", "started_at", "resolved_at", "caused_by"]
    list_filter = ["environment", "severity", "source", "service"]
    search_fields = ["title", "external_id", "service__name"]
    list_select_related = [
        "service",
        "environment",
        "caused_by__release",
        "caused_by__service",
        "caused_by__environment",
    ]
    date_hierarchy = "started_at"
    raw_id_fields = ["caused_by", "fixed_by"]
    fields = [
        "service",
        "environment",
        "title",
        "severity",
        "started_at",
        "resolved_at",
        "caused_by",
        "fixed_by",
        "source",
        "external_id",
        "external_url",
    ]

    def get_readonly_fields(self, request, obj=None):
        # What PagerDuty or the pipeline recorded stays theirs; times, severity and links may be corrected.
        return ["source", "external_id", "external_url"] if obj else ["source"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.source = IncidentSource.MANUAL
        super().save_model(request, obj, form, change)
        obj.audit(request.user, verb="changed in the admin" if change else "entered in the admin")


@admin.register(SlackIdentity)
class SlackIdentityAdmin(AuditedAdmin):
    """Who a Slack user is in the portal: their Approve and Reject buttons act as this person."""

    list_display = ["user", "slack_user_id", "linked_by", "linked_at"]
    search_fields = ["user__username", "user__email", "slack_user_id"]
    readonly_fields = ["linked_by", "linked_at"]
    autocomplete_fields = ["user"]


@admin.register(ApprovalNotice)
class ApprovalNoticeAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "slack_channel", "slack_ts", "notified_at", "reminded_at"]


@admin.register(Notice)
class NoticeAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "kind", "created_at", "attempts", "sent_at", "given_up_at", "last_error"]
    list_filter = ["kind"]
    date_hierarchy = "created_at"
