"""What the REST API reads and writes. Validation messages say what to fix."""

from datetime import UTC, timedelta

from django.contrib.auth.models import Group
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from audit.models import ChainVerdict
from environments.models import Environment, slug_validator
from nexo_portal.lib import dates
from nexo_portal.lib.api import CONFLICT_CODE, BooleanField, KnownFieldsOnly

from . import calver, image_gate, steps
from .models import (
    COMMIT_SHA_PATTERN,
    IMAGE_DIGEST_PATTERN,
    Approval,
    CheckResult,
    Promotion,
    PromotionState,
    Release,
    Service,
    validate_commit_time,
)


class CheckNameField(serializers.CharField):
    """A CI check's name as the environments require it: lowercase, so CI's "E2E" counts as e2e."""

    def __init__(self, **kwargs):
        super().__init__(max_length=50, validators=[slug_validator], **kwargs)

    def to_internal_value(self, data):
        return super().to_internal_value(data).lower()


class ServiceField(serializers.SlugRelatedField):
    default_error_messages = {
        "does_not_exist": "Unknown service '{value}'. Services are added by platform engineers in the admin.",
        "invalid": "Give the service's name, e.g. nexo-be.",
    }

    def __init__(self, **kwargs):
        super().__init__(slug_field="name", queryset=Service.objects.all(), **kwargs)

    def to_internal_value(self, data):
        # A JSON object, array, number or boolean is the wrong type (400), not a name that does not exist (404).
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EnvironmentField(serializers.SlugRelatedField):
    default_error_messages = {
        "does_not_exist": "Unknown environment '{value}'. Environments are: {known}.",
        "invalid": "Give the environment's name, e.g. staging.",
    }

    def __init__(self, **kwargs):
        super().__init__(slug_field="name", queryset=Environment.objects.all(), **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return self.get_queryset().get(name=data)
        except Environment.DoesNotExist:
            known = ", ".join(Environment.objects.in_pipeline_order().values_list("name", flat=True))
            self.fail("does_not_exist", value=str(data)[:50], known=known)


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^[2-9][0-9]{3}\.(0[1-9]|1[0-2])\.[1-9][0-9]{0,5}(-[0-9a-z][0-9a-z.-]{0,39})?$",
        "example": "2026.02.1",
    }
)
class VersionField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", calver.MAX_VERSION_LENGTH)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        try:
            calver.parse(text)
        except calver.InvalidVersion as error:
            raise serializers.ValidationError(str(error), code="invalid_version") from error
        return text


# A commit time as validate_commit_time and CommitTimeField take it, for the OpenAPI schema: dated from
# Git's first day (2005-04-07) to 2999, with a UTC offset.
COMMIT_TIME_PATTERN = (
    r"^(2005-04-(0[7-9]|[12][0-9]|30)|2005-(0[5-9]|1[0-2])-[0-9]{2}|200[6-9]-[0-9]{2}-[0-9]{2}"
    r"|20[1-9][0-9]-[0-9]{2}-[0-9]{2}|2[1-9][0-9]{2}-[0-9]{2}-[0-9]{2})T.*(Z|[+-][0-9]{2}(:?[0-9]{2})*)$"
)


@extend_schema_field(
    {"type": "string", "format": "date-time", "pattern": COMMIT_TIME_PATTERN, "example": "2026-02-03T10:00:00+01:00"}
)
class CommitTimeField(serializers.DateTimeField):
    """When a commit was made, as Git records it (`git show -s --format=%cI`): with its UTC offset, and not
    before Git existed (validate_commit_time, on the date as written); answered as the instant, in UTC."""

    default_error_messages = {
        "no_offset": "{value} has no UTC offset, so it could be any time over a day: send the commit's time as Git "
        "records it, with its offset (git show -s --format=%cI HEAD), e.g. {value}+01:00, or in UTC with Z.",
    }

    def __init__(self, **kwargs):
        super().__init__(validators=[validate_commit_time], **kwargs)

    def enforce_timezone(self, value):
        # Read in the portal's time zone, a local time from CI east or west of it would put the start
        # of lead time hours off. The offset stays for validate_commit_time, which judges the date as written.
        if timezone.is_naive(value):
            self.fail("no_offset", value=value.isoformat())
        return value

    def run_validation(self, data=empty):
        moment = super().run_validation(data)
        if not dates.in_range(moment):
            raise serializers.ValidationError(dates.OUT_OF_RANGE)
        # ISO 8601 allows offsets PostgreSQL refuses (beyond ±15:59); the instant is what matters.
        return moment.astimezone(UTC)


class ServiceReleaseMixin:
    """Turns `service` + `version` into the release, with a clear error when there is none."""

    def resolve_release(self, attrs, field="version"):
        service, version = attrs["service"], attrs.get(field)
        if not version:
            return None
        release = Release.objects.filter(service=service, version=version).first()
        if release is None:
            raise serializers.ValidationError(
                {field: f"{service.name} has no release {version}. Register the build first (POST /api/v1/releases/)."},
                code="unknown_release",
            )
        return release


class RegisterBuildSerializer(KnownFieldsOnly, ServiceReleaseMixin, serializers.Serializer):
    service = ServiceField(help_text="The service's name, e.g. nexo-be.")
    commit_sha = serializers.RegexField(
        COMMIT_SHA_PATTERN,
        help_text="The full 40-character SHA of the commit the image was built from (`git rev-parse HEAD`).",
        error_messages={"invalid": "Give the full 40-character lowercase hex SHA of the commit (git rev-parse HEAD)."},
    )
    committed_at = CommitTimeField(
        help_text="When the commit was made (ISO 8601 with its offset, e.g. `git show -s --format=%cI`); the start "
        "of lead time. Without an offset, or dated before Git existed (2005-04-07), it is a 400; more than 5 "
        "minutes after the portal's clock, a 409."
    )
    image_digest = serializers.RegexField(
        IMAGE_DIGEST_PATTERN,
        help_text="The image's digest as pushed: sha256: followed by 64 lowercase hex characters.",
        error_messages={"invalid": "Give the image digest as sha256: followed by 64 lowercase hex characters."},
    )
    version = VersionField(
        required=False,
        help_text="A CalVer version (YYYY.MM.BUILD[-METADATA]). Leave it out to get the next build of this month.",
    )
    changelog = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=20000,
        default="",
        help_text=(
            "Markdown (CommonMark, tables and ~~strikethrough~~; raw HTML and images are not shown), a single "
            "newline a line break. Pages show a long one's first lines and fold the rest."
        ),
    )
    hotfix = BooleanField(required=False, default=False, help_text="This build is a hotfix.")
    fixes = VersionField(required=False, help_text="For a hotfix: the version it fixes.")

    # How far an explicit build number may run ahead of the month's highest registered build:
    # room for builds CI tagged but never registered, not for one that uses up the month.
    MAX_BUILD_SKIP = 100

    def validate_version(self, version):
        parsed = calver.parse(version)
        latest = timezone.now() + timedelta(days=1)  # a build made just after midnight somewhere east
        if (parsed.year, parsed.month) > (latest.year, latest.month):
            raise serializers.ValidationError(
                f"{version} is dated {parsed.year}.{parsed.month:02d}, after this month: a CalVer version carries "
                "the month it was built in. Leave version out to get the next build of this month.",
                code=CONFLICT_CODE,
            )
        return version

    def validate(self, attrs):
        version = attrs.get("version")
        if version:
            parsed = calver.parse(version)
            highest = (
                Release.objects.filter(service=attrs["service"], year=parsed.year, month=parsed.month).aggregate(
                    highest=Max("build")
                )["highest"]
                or 0
            )
            if parsed.build > highest + self.MAX_BUILD_SKIP:
                raise serializers.ValidationError(
                    {
                        "version": (
                            f"{version} skips ahead: the highest build of {attrs['service'].name} in "
                            f"{parsed.year}.{parsed.month:02d} is {highest}, and an explicit build may be at most "
                            f"{self.MAX_BUILD_SKIP} above it. Leave version out to get the next one."
                        )
                    },
                    code=CONFLICT_CODE,
                )
        if attrs.get("fixes"):
            if not attrs.get("hotfix"):
                raise serializers.ValidationError(
                    {"fixes": "Only a hotfix fixes another release: set hotfix to true."}, code=CONFLICT_CODE
                )
            attrs["fixes"] = self.resolve_release(attrs, "fixes")
        return attrs


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")

    class Meta:
        model = Approval
        fields = ["user", "decision", "comment", "created_at"]


class PromotionSummarySerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    version = serializers.CharField(source="release.version")
    environment = serializers.CharField(source="environment.name")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Promotion
        fields = [
            "id",
            "url",
            "service",
            "version",
            "environment",
            "kind",
            "state",
            "is_emergency",
            "requested_at",
            "finished_at",
        ]

    def get_url(self, promotion) -> str:
        return reverse("api:promotion-detail", args=[promotion.pk])


class FreezeSerializer(serializers.Serializer):
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField()


class PromotionSerializer(PromotionSummarySerializer):
    requested_by = serializers.CharField(source="requester_name")
    approvals = ApprovalSerializer(many=True)
    approvals_required = serializers.SerializerMethodField()
    held_by_freeze = serializers.SerializerMethodField(
        help_text="Approved before a change freeze began: its GitOps commit waits for the freeze's end."
    )
    held_up = serializers.SerializerMethodField(
        help_text="What holds up the step it is at, in the words of its page: Argo CD out of reach while the "
        "sync asks again (`sync_status` stays `running`), a verdict overdue, a step no worker has taken or "
        "carried on. Empty when nothing does."
    )

    class Meta(PromotionSummarySerializer.Meta):
        fields = [
            *PromotionSummarySerializer.Meta.fields,
            "emergency_reason",
            "requested_by",
            "previous_version",
            "approvals",
            "approvals_required",
            "approved_at",
            "commit_started_at",
            "committed_at",
            "sync_started_at",
            "deployed_at",
            "verification_started_at",
            "verdict_at",
            "gitops_commit_sha",
            "pr_url",
            "pr_number",
            "pr_state",
            "sync_status",
            "verification_status",
            "failed_step",
            "error",
            "applied_health",
            "held_by_freeze",
            "held_up",
        ]

    previous_version = serializers.CharField(
        source="previous_release.version", default=None, allow_null=True, read_only=True
    )

    def get_approvals_required(self, promotion) -> int:
        from .policy import approvals_required

        return approvals_required(promotion)

    @extend_schema_field(FreezeSerializer(allow_null=True))
    def get_held_by_freeze(self, promotion):
        from .policy import freeze_holding

        # Only an approved promotion waits for a freeze (a query each: a list holds few of them).
        freeze = freeze_holding(promotion) if promotion.state == PromotionState.APPROVED else None
        return FreezeSerializer(freeze).data if freeze else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_held_up(self, promotion):
        # The runs of promotions under way, read with them (api_views.promotions_with_details).
        return steps.held_up(promotion, promotion.active_runs, timezone.now()).why


class ReleaseSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    images = serializers.SerializerMethodField()
    fixes = serializers.CharField(source="fixes.version", default=None, allow_null=True, read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Release
        fields = [
            "id",
            "url",
            "service",
            "version",
            "tags",
            "images",
            "commit_sha",
            "committed_at",
            "image_digest",
            "changelog",
            "is_hotfix",
            "fixes",
            "registered_by",
            "registered_at",
            "image_checked_at",
            "signed_by",
            "signature_verified_at",
            "attested_by",
            "attestation_claims",
            "attested_at",
            "attestation_verified_at",
        ]

    def get_url(self, release) -> str:
        return reverse("api:release-detail", args=[release.service.name, release.version])

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_images(self, release):
        return [f"{release.service.image_repository}:{tag}" for tag in release.tags()]


class ReleaseDetailSerializer(ReleaseSerializer):
    promotions = PromotionSummarySerializer(many=True)

    class Meta(ReleaseSerializer.Meta):
        fields = [*ReleaseSerializer.Meta.fields, "promotions"]


class RegisteredBuildSerializer(ReleaseSerializer):
    created = serializers.BooleanField(help_text="False when this call repeated an earlier registration.")
    promotion = PromotionSummarySerializer(
        allow_null=True,
        help_text="The automatic promotion into the first environment, if any (a retry names the one its original "
        "started, or that started since).",
    )
    promotion_waits = serializers.CharField(
        allow_null=True,
        help_text="Why the first environment did not take the build now (busy, frozen, on hold): it goes there "
        "once the place is free, if it is still the service's newest build then.",
    )

    image_requirements = serializers.SerializerMethodField(
        help_text="What each environment that requires something of the image checks before a promotion into it."
    )

    class Meta(ReleaseSerializer.Meta):
        fields = [*ReleaseSerializer.Meta.fields, "created", "promotion", "promotion_waits", "image_requirements"]

    @extend_schema_field(serializers.DictField(child=serializers.ListField(child=serializers.CharField())))
    def get_image_requirements(self, registration):
        known = getattr(registration, "image_requirements", None)  # read with the registration's environments
        return known if known is not None else image_gate.requirements_by_environment()


class RequestPromotionSerializer(KnownFieldsOnly, ServiceReleaseMixin, serializers.Serializer):
    service = ServiceField()
    version = VersionField(help_text="The release to promote.")
    environment = EnvironmentField(help_text="Where it should run.")
    emergency = BooleanField(required=False, default=False, help_text="Break-glass promotion for an incident.")
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, default="", help_text="Required for break-glass."
    )

    def validate(self, attrs):
        attrs["release"] = self.resolve_release(attrs)
        return attrs


class RollbackSerializer(KnownFieldsOnly, ServiceReleaseMixin, serializers.Serializer):
    service = ServiceField()
    environment = EnvironmentField()
    version = VersionField(required=False, help_text="The release to go back to; default: the last one verified there.")
    running = VersionField(
        required=False,
        help_text="The release you saw running there, the one the rollback is to take out: when another runs now "
        "(a hotfix went out since), nothing is requested (409). Default: whatever runs.",
    )

    def validate(self, attrs):
        attrs["release"] = self.resolve_release(attrs)
        return attrs


class DecisionSerializer(KnownFieldsOnly, serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class RejectionSerializer(KnownFieldsOnly, serializers.Serializer):
    """A rejection's comment is required (400 when missing or empty, as the schema says). One of blanks
    only matches the schema and is the rejection rule's to refuse (policy.why_not_reject): a 409."""

    comment = serializers.CharField(max_length=2000, trim_whitespace=False, help_text="Why it is rejected (required).")


# An http(s) link, checked by its shape alone (as the schema states it): a report's address is shown as a
# link, so no other scheme; its host is the CI's business, not a DNS rule a fuzzer's 300-character name breaks.
HTTP_URL_PATTERN = r"^https?://[^\s/?#\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"


class StopSerializer(KnownFieldsOnly, serializers.Serializer):
    """The body of a stop as the schema documents it. The view reads it as a DecisionSerializer:
    that the comment is required is the stopping rule's own (policy.why_not_stop), answered 400."""

    comment = serializers.CharField(max_length=2000, help_text="Why the soak is stopped (required).")


class CheckResultSerializer(KnownFieldsOnly, ServiceReleaseMixin, serializers.ModelSerializer):
    service = ServiceField(write_only=True)
    url = serializers.RegexField(
        HTTP_URL_PATTERN,
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="The report's address, http(s).",
        error_messages={"invalid": "Give the report's address as an http:// or https:// URL."},
    )
    version = VersionField(write_only=True)
    environment = EnvironmentField()
    passed = BooleanField(help_text="Whether the check passed.")
    check = CheckNameField(
        source="name",
        help_text="A check an environment requires (e2e, performance, security… as set in the admin), here or "
        "elsewhere; a name none requires is a 409 naming those they do. E2E is taken as e2e.",
    )

    class Meta:
        model = CheckResult
        fields = [
            "id",
            "service",
            "version",
            "environment",
            "check",
            "passed",
            "url",
            "summary",
            "reported_by",
            "reported_at",
        ]
        read_only_fields = ["reported_by", "reported_at"]

    def validate(self, attrs):
        attrs["release"] = self.resolve_release(attrs)
        attrs.pop("service")
        attrs.pop("version")
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["service"] = instance.release.service.name
        data["version"] = instance.release.version
        return data


class DeploymentEventSerializer(KnownFieldsOnly, serializers.Serializer):
    """The JSON the Argo CD Notifications template sends (see docs/argocd-notifications.md)."""

    trigger = serializers.ChoiceField(choices=["on-deployed", "on-sync-failed"])
    application = serializers.CharField(max_length=253)
    revision = serializers.RegexField(
        r"^[0-9a-f]{40}$", error_messages={"invalid": "The synced commit's full 40-character SHA."}
    )
    sync_status = serializers.CharField(max_length=30, required=False, allow_blank=True, default="")
    health_status = serializers.CharField(max_length=30, required=False, allow_blank=True, default="")
    phase = serializers.CharField(max_length=30, required=False, allow_blank=True, default="")
    message = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")


class DeploymentEventResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    outcome = serializers.CharField()
    promotion = serializers.IntegerField(source="promotion_id", allow_null=True)


class MatrixCellSerializer(serializers.Serializer):
    environment = serializers.CharField()
    version = serializers.CharField(allow_null=True, help_text="What runs there; null when nothing does.")
    deployed_at = serializers.DateTimeField(allow_null=True)
    health = serializers.CharField(allow_null=True, help_text='Argo CD\'s last word on it, or "not configured".')
    verification = serializers.CharField(allow_null=True, help_text="soaking, verified, failed at …, rolled back…")
    builds_behind = serializers.IntegerField(allow_null=True, help_text="Builds behind the environment before it.")
    drift = serializers.CharField(allow_null=True, help_text="The drift against the environment before, in words.")
    drift_warning = serializers.BooleanField(help_text="Past the environment's drift threshold.")
    builds_behind_first = serializers.IntegerField(
        allow_null=True, help_text="Builds behind the first environment of the pipeline (develop); null there."
    )
    far_behind = serializers.BooleanField(help_text="More builds behind the first environment than drift_alert_builds.")
    overdue = serializers.BooleanField(
        help_text="A promotion here has been active longer than the environment's target."
    )
    gitops_tag = serializers.CharField(
        allow_blank=True,
        help_text="The values file's tag when it differs from the deployment; `(no tag)` when it was cleared.",
    )
    gitops_tag_promotion = serializers.IntegerField(
        allow_null=True,
        help_text="The promotion whose GitOps commit wrote gitops_tag: the portal's last commit there, which did "
        "not finish (its sync failed). Null when the tag was written outside the portal (drift).",
    )
    waiting = serializers.CharField(allow_blank=True, help_text="awaiting approval 1/2, committing, syncing…")
    waiting_promotion = serializers.IntegerField(allow_null=True)
    waiting_is_emergency = serializers.BooleanField(help_text="The waiting promotion is a break-glass one.")
    hold = serializers.CharField(allow_blank=True, help_text="Why automatic promotions are held here, if they are.")
    image_requirements = serializers.ListField(
        child=serializers.CharField(),
        help_text="What a promotion into here must show of its image (registry, signature); empty: none.",
    )


class MatrixRowSerializer(serializers.Serializer):
    service = serializers.CharField()
    team = serializers.CharField(allow_null=True)
    environments = MatrixCellSerializer(many=True)


class AuditExportRecordSerializer(serializers.Serializer):
    """One record of the export, in the shape of versioning-and-promotion.md's structured audit log:
    a completed promotion (`event` "promotion", the default), or with `per=step` one audit event."""

    event = serializers.CharField(help_text='"promotion", or the audit action of a step (promotion.approved, …).')
    service = serializers.CharField(allow_null=True)
    version = serializers.CharField(allow_null=True)
    from_environment = serializers.CharField(allow_null=True)
    to_environment = serializers.CharField(allow_null=True)
    timestamp = serializers.DateTimeField()
    initiator = serializers.CharField(help_text="E-mail address where known, else the user name or the token.")
    approvers = serializers.ListField(child=serializers.CharField())
    rollback = serializers.BooleanField()
    validation_results = serializers.DictField(child=serializers.CharField(), required=False)
    pr_url = serializers.URLField(allow_null=True, required=False, help_text="The pull request, else the commit.")
    argocd_sync_id = serializers.CharField(allow_null=True, required=False)
    outcome = serializers.ChoiceField(choices=["verified", "failed"], required=False)
    failed_step = serializers.CharField(
        allow_null=True, required=False, help_text="Where a failed promotion failed; null when it was verified."
    )
    error = serializers.CharField(
        allow_null=True, required=False, help_text="Why it failed, in the verdict's words; null when it was verified."
    )
    emergency = serializers.BooleanField(required=False)
    deployed_at = serializers.DateTimeField(required=False)
    audit_event_id = serializers.IntegerField(required=False)
    id = serializers.IntegerField(required=False)
    actor = serializers.CharField(required=False)
    promotion_id = serializers.IntegerField(allow_null=True)
    commit = serializers.CharField(allow_null=True)
    message = serializers.CharField(required=False, allow_blank=True)
    data = serializers.DictField(required=False)
    hash = serializers.CharField()
    previous_hash = serializers.CharField(required=False)
    chain = serializers.ChoiceField(
        choices=ChainVerdict.choices,
        help_text="What the last verification of the audit chain says of the event (per promotion, of its verdict).",
    )


class MatrixQuerySerializer(serializers.Serializer):
    """Query parameters of GET /api/v1/matrix/: a name that does not exist is a 404, not an empty matrix."""

    team = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Group.objects.filter(services__isnull=False).distinct(),
        required=False,
        error_messages={"does_not_exist": "No team owns a service under the name '{value}'."},
        help_text="Only this team's services.",
    )
    service = ServiceField(required=False, help_text="Only this service.")


class SLOQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(
        required=False, default=30, min_value=1, max_value=366, help_text="The window: the last this many days."
    )


class SLOEnvironmentSerializer(serializers.Serializer):
    environment = serializers.CharField()
    target_minutes = serializers.IntegerField(help_text="Target time from request to verified.")
    success_target_percent = serializers.FloatField()
    rollback_target_percent = serializers.FloatField(allow_null=True, help_text="Null: no rollback target here.")
    requested = serializers.IntegerField(help_text="Promotions requested in the window.")
    verified = serializers.IntegerField()
    failed = serializers.IntegerField()
    success_percent = serializers.FloatField(allow_null=True, help_text="Verified among those that got a verdict.")
    success_met = serializers.BooleanField(allow_null=True)
    within_target = serializers.IntegerField(help_text="Verified no later than the target time after the request.")
    within_target_percent = serializers.FloatField(allow_null=True)
    median_minutes = serializers.FloatField(allow_null=True)
    p90_minutes = serializers.FloatField(allow_null=True)
    stage_median_minutes = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="Median minutes of each stage: waiting_for_approval, commit, sync, soak.",
    )
    slowest_stage = serializers.CharField(allow_null=True)
    deployments = serializers.IntegerField()
    rollbacks = serializers.IntegerField()
    rollback_percent = serializers.FloatField(allow_null=True)
    rollback_met = serializers.BooleanField(allow_null=True)
    active_breaching = serializers.IntegerField(help_text="Promotions active now past the target time.")


class SLOReportSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    days = serializers.IntegerField()
    environments = SLOEnvironmentSerializer(many=True)
