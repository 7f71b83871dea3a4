from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from audit.admin_changes import AuditedAdmin

from .models import OIDC_SCOPES, SCOPES_HELP, ApiToken, TokenScope, TrustPolicy


class ApiTokenForm(forms.ModelForm):
    issuer = None  # the admin sets the signed-in user, who must be allowed to create this token
    scopes = forms.MultipleChoiceField(
        choices=TokenScope.choices, widget=forms.CheckboxSelectMultiple, help_text=SCOPES_HELP
    )

    class Meta:
        model = ApiToken
        fields = ["name", "scopes", "all_services", "services", "user", "expires_at"]

    def clean_scopes(self):
        return " ".join(self.cleaned_data["scopes"])

    def clean(self):
        cleaned_data = super().clean()
        self.instance.user = cleaned_data.get("user")
        self.instance.validate_issuer(self.issuer)
        if "services" in cleaned_data:
            self.instance.all_services = cleaned_data.get("all_services", False)
            self.instance.validate_services(cleaned_data["services"])
        return cleaned_data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Create, list and revoke API tokens. The secret is shown once, on the page after
    creation; afterwards only its prefix is visible, and a token is never edited or deleted:
    it is revoked and replaced."""

    form = ApiTokenForm
    list_display = [
        "name",
        "prefix",
        "scope_names",
        "service_names",
        "user",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "status",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    filter_horizontal = ["services"]
    raw_id_fields = ["user"]
    actions = ["revoke"]
    view_fields = [
        "name",
        "prefix",
        "scope_names",
        "service_names",
        "user",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "status",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").prefetch_related("services")

    def get_fields(self, request, obj=None):
        return self.view_fields if obj else ApiTokenForm.Meta.fields

    def get_readonly_fields(self, request, obj=None):
        return self.view_fields if obj else []

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.issuer = request.user
        return form

    def has_change_permission(self, request, obj=None):
        # The list may be used (revoking needs it); a single token is only ever viewed.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm("nexo_portal.change_apitoken")

    def save_model(self, request, obj, form, change):
        obj.created_by = request.user
        obj.plain_token = obj.set_secret()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # The admin's add view runs in one transaction, so the event commits with the token.
        form.instance.record_creation()

    def response_add(self, request, obj, post_url_continue=None):
        """The one and only time the plain token is shown."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API token {obj.name} created",
            "token": obj,
            "plain_token": obj.plain_token,
        }
        response = TemplateResponse(request, "admin/nexo_portal/apitoken/created.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected API tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = [token.name for token in queryset if token.revoke(by=request.user)]
        if revoked:
            self.message_user(
                request, f"Revoked: {', '.join(revoked)}. Pipelines using them now get 401.", messages.SUCCESS
            )
        else:
            self.message_user(request, "Those tokens were already revoked.", messages.WARNING)

    @admin.display(description="Scopes")
    def scope_names(self, token):
        return ", ".join(token.scope_list)

    @admin.display(description="Services")
    def service_names(self, token):
        return token.describe_services()

    @admin.display(description="Status")
    def status(self, token):
        return token.get_status_display()


class SpaceSeparatedChoicesField(forms.MultipleChoiceField):
    """Checkboxes for a space-separated list stored as text, so before and after read alike in the audit log."""

    def prepare_value(self, value):
        return value.split() if isinstance(value, str) else value

    def has_changed(self, initial, data):
        return super().has_changed(self.prepare_value(initial), data)


class TrustPolicyForm(forms.ModelForm):
    scopes = SpaceSeparatedChoicesField(
        choices=[(scope.value, scope.label) for scope in OIDC_SCOPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="What a trusted run may do; it never promotes or approves.",
    )

    class Meta:
        model = TrustPolicy
        fields = [
            "name",
            "repository",
            "repository_id",
            "refs",
            "ref_type",
            "workflows",
            "environment",
            "services",
            "scopes",
            "is_active",
        ]

    def clean_scopes(self):
        return " ".join(self.cleaned_data["scopes"])


class ServicesLeftFilter(admin.SimpleListFilter):
    """Policies whose services were all deleted: the form asks for at least one, so only deletions leave none."""

    title = "services left"
    parameter_name = "services_left"

    def lookups(self, request, model_admin):
        return [("none", "None: all deleted")]

    def queryset(self, request, queryset):
        return queryset.filter(services__isnull=True) if self.value() == "none" else queryset


@admin.register(TrustPolicy)
class TrustPolicyAdmin(AuditedAdmin):
    """Which GitHub Actions runs may register builds or report results with their OIDC ID token.

    Every addition, change (each field before and after) and deletion goes into the audit log."""

    form = TrustPolicyForm
    list_display = ["name", "repository", "ref_list_shown", "service_names", "scopes", "is_active", "created_by"]
    list_filter = ["is_active", ServicesLeftFilter]
    search_fields = ["name", "repository", "workflows"]
    filter_horizontal = ["services"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by").prefetch_related("services")

    def save_model(self, request, obj, form, change):
        if obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for warning in form.instance.breadth_warnings():  # after its services are saved: it names them
            self.message_user(request, warning, messages.WARNING)

    @admin.display(description="Refs")
    def ref_list_shown(self, policy):
        return ", ".join(policy.ref_list)

    @admin.display(description="Services")
    def service_names(self, policy):
        names = ", ".join(service.name for service in policy.services.all())
        return names or "none left: its services were deleted, it trusts runs with nothing"
