"""What gets promoted and how: services, releases, promotions, approvals and deployments."""

from datetime import date

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone

from audit import log as audit_log
from audit.models import ACTOR_MAX_LENGTH, AuditAction
from environments import prometheus
from environments.models import SLUG_PATTERN, Environment, query_soak_errors, render_template, slug_validator
from nexo_portal.lib.inert import HTTP_URL_REGEX, validate_http_url
from nexo_portal.lib.queries import one_or_none
from nexo_portal.lib.words import listed

from . import attestations, calver, signatures

COMMIT_SHA_PATTERN = r"^[0-9a-f]{40}$"
IMAGE_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
TAG_KEY_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
# Git's first commit was made that day: a commit dated before it is a default or a clock gone wrong.
GIT_FIRST_DAY = date(2005, 4, 7)
# Who acted when no person or token did: the audit actor of every pipeline step, and who asks for
# automatic promotions and rollbacks (Promotion.requested_via).
PIPELINE = "pipeline"


def validate_commit_time(moment):
    """A commit time Git could have recorded: on or after its first day, by the date as written (the
    API keeps the offset a commit time is sent with; the admin gives the portal's time zone). A time of
    0 (1970-01-01) sent for a missing one would make a lead time of decades, unremarked."""
    if moment.date() < GIT_FIRST_DAY:
        raise ValidationError(
            f"A commit dated {moment.date()} is before Git existed (its first commit was made on {GIT_FIRST_DAY}): "
            "the time is a default or a clock gone wrong (1970-01-01 is a time of 0), and lead time would count "
            "from it. Give the commit's time as Git records it (git show -s --format=%cI HEAD).",
            code="before_git",
        )


class ServiceQuerySet(models.QuerySet):
    def for_team(self, team):
        return self.filter(team=team)


class Service(models.Model):
    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[slug_validator],
        help_text="Lowercase letters, digits and hyphens; used in file paths and Argo CD names.",
    )
    description = models.CharField(max_length=200, blank=True)
    image_repository = models.CharField(max_length=255, help_text="e.g. ghcr.io/nexo-org/nexo-be")
    source_repo_url = models.URLField(
        blank=True, validators=[validate_http_url], help_text="http(s), e.g. https://github.com/nexo-org/nexo-be"
    )
    team = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="services", help_text="Owning team."
    )
    auto_deploy_on_registration = models.BooleanField(
        default=True, help_text="Promote every registered build into the first environment automatically."
    )
    image_tag_key = models.CharField(
        max_length=100,
        default="image.tag",
        validators=[RegexValidator(TAG_KEY_PATTERN, "A dotted key path such as image.tag.")],
        help_text="YAML key path of the image tag in the values files.",
    )
    signing_public_keys = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="The Cosign public keys (PEM, ECDSA P-256: cosign.pub) whose signature environments that "
        "require one accept; several may follow each other.",
    )
    attestation_identity = models.CharField(
        max_length=300,
        blank=True,
        default="",
        db_default="",
        help_text="The certificate identity whose Sigstore attestation environments that require one accept: for "
        "GitHub Actions the workflow, e.g. https://github.com/nexo-org/nexo-be/.github/workflows/build.yml"
        "@refs/heads/main.",
    )
    attestation_issuer = models.CharField(
        max_length=200,
        default=attestations.GITHUB_ACTIONS_ISSUER,
        db_default=attestations.GITHUB_ACTIONS_ISSUER,
        help_text="The OIDC issuer that vouched for that identity (GitHub Actions: "
        "https://token.actions.githubusercontent.com).",
    )
    # Blank means: use the environment's template.
    values_path_template = models.CharField(max_length=255, blank=True)
    argocd_app_template = models.CharField(max_length=255, blank=True)
    prometheus_query_template = models.TextField(blank=True)
    health_url_templates = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=SLUG_PATTERN), name="service_name_is_slug"),
            models.CheckConstraint(condition=Q(image_tag_key__regex=TAG_KEY_PATTERN), name="service_tag_key_is_path"),
            models.CheckConstraint(
                condition=Q(source_repo_url="") | Q(source_repo_url__iregex=HTTP_URL_REGEX),
                name="service_repo_url_is_http",
            ),
        ]

    def __str__(self):
        return self.name

    def _render(self, field, environment):
        template = getattr(self, field) or getattr(environment, field)
        return render_template(template, service=self.name, environment=environment.name)

    def clean(self):
        try:
            signatures.load_public_keys(self.signing_public_keys)
        except signatures.InvalidPublicKey as error:
            raise ValidationError({"signing_public_keys": f"{error} Paste the content of cosign.pub."}) from error
        errors = attestations.identity_errors(self.attestation_identity, self.attestation_issuer)
        if query_errors := self._query_errors():
            errors["prometheus_query_template"] = query_errors
        if errors:
            raise ValidationError(errors)

    def _query_errors(self):
        """Why the service's own error-rate query could not measure the soak of an environment, which the
        environment's form would have refused for its own (Environment.clean)."""
        template = self.prometheus_query_template
        if not template:
            return []
        return prometheus.range_placeholder_errors(template) or [
            f"In {environment.name}: {error}"
            for environment in Environment.objects.in_pipeline_order()
            for error in query_soak_errors(template, environment.soak_windows())
        ]

    def values_path(self, environment):
        return self._render("values_path_template", environment)

    def argocd_app(self, environment):
        return self._render("argocd_app_template", environment)

    def prometheus_query(self, environment):
        return self._render("prometheus_query_template", environment)

    def health_urls(self, environment):
        return [line.strip() for line in self._render("health_url_templates", environment).splitlines() if line.strip()]

    def tag_key_path(self):
        return self.image_tag_key.split(".")


def own_query_soak_errors(soaks):
    """Why soaks this long ((name, window) pairs) could not measure the error-rate queries services carry
    of their own, one sentence per complaint naming the services that have it: Service.clean's rule, seen
    from the environment's form (registered in ReleasesConfig.ready)."""
    services_by_error = {}
    own_queries = Service.objects.exclude(prometheus_query_template="").order_by("name")
    for name, template in own_queries.values_list("name", "prometheus_query_template"):
        for error in query_soak_errors(template, soaks):
            services_by_error.setdefault(error, []).append(f"{name}'s")
    return [
        f"{listed(owners)} own error-rate {'query' if len(owners) == 1 else 'queries'}: {error}"
        for error, owners in services_by_error.items()
    ]


class BuildNumbersExhausted(Exception):
    """No build number is left in the month; the message says so."""


class BuildCounter(models.Model):
    """The last build number handed out per service and month, so a number is never reused."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+")
    year = models.PositiveSmallIntegerField()
    month = models.PositiveSmallIntegerField()
    last_build = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "year", "month"], name="one_build_counter_per_service_month"),
        ]

    def __str__(self):
        return f"{self.service} {self.year}.{self.month:02d}: build {self.last_build}"

    @classmethod
    def allocate(cls, service, year, month):
        """Hand out the next build number for the service in that month.

        One statement, race-safe by itself: the counter's row is created or locked and bumped
        atomically, so concurrent allocations get distinct, consecutive numbers. Numbers taken by
        explicitly supplied versions are skipped.
        """
        greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
        counters, releases = cls._meta.db_table, Release._meta.db_table
        highest = f"COALESCE((SELECT MAX(build) FROM {releases} WHERE service_id = %s AND year = %s AND month = %s), 0)"
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {counters} (service_id, year, month, last_build) VALUES (%s, %s, %s, {highest} + 1) "
                f"ON CONFLICT (service_id, year, month) DO UPDATE "
                f"SET last_build = {greatest}({counters}.last_build, {highest}) + 1 RETURNING last_build",
                [service.pk, year, month, service.pk, year, month, service.pk, year, month],
            )
            (build,) = cursor.fetchone()
        if build > calver.MAX_BUILD:
            raise BuildNumbersExhausted(
                f"{service.name} has used every build number of {year}.{month:02d} (up to {calver.MAX_BUILD}); "
                "register the build with an explicit version of another month."
            )
        return build


class ReleaseQuerySet(models.QuerySet):
    def for_service(self, service):
        return self.filter(service=service)

    def newest_first(self):
        return self.order_by("-year", "-month", "-build")

    def newer_than(self, release):
        return self.filter(service=release.service).filter(
            Q(year__gt=release.year)
            | Q(year=release.year, month__gt=release.month)
            | Q(year=release.year, month=release.month, build__gt=release.build)
        )

    def older_than(self, release):
        return self.filter(service=release.service).filter(
            Q(year__lt=release.year)
            | Q(year=release.year, month__lt=release.month)
            | Q(year=release.year, month=release.month, build__lt=release.build)
        )

    def offered_into(self, service, environment):
        """The release a place is offered to promote: the newest verified in the environment before it,
        or for the first environment the newest of all (the board reads the same with a subquery per
        place, board._newest_release). None when there is none."""
        releases = self.filter(service=service).newest_first()
        previous = environment.previous()
        if previous is not None:
            verified = Promotion.objects.filter(
                release=OuterRef("pk"), environment=previous, state=PromotionState.VERIFIED
            )
            releases = releases.filter(Exists(verified))
        return releases.first()

    def rollback_targets(self, environment, taken_out):
        """What a rollback of `taken_out` in `environment` may go to: the releases of the service that
        ran there before and are older, newest first, and for a hotfix the release it fixed (a late
        hotfix is numbered below it). The one rule behind the rollback dialog, the API and the transition."""
        candidates = self.older_than(taken_out)
        if taken_out.is_hotfix and taken_out.fixes_id:
            candidates = self.filter(service=taken_out.service_id).filter(
                Q(pk__in=candidates.values("pk")) | Q(pk=taken_out.fixes_id)
            )
        return candidates.filter(
            Exists(Deployment.objects.filter(release=OuterRef("pk"), environment=environment))
        ).newest_first()

    def default_rollback_target(self, environment, taken_out):
        """Where a rollback goes unless someone chooses: the target verified there last. Not the newest
        by number: after a late hotfix (numbered below the release it fixed) that is the broken release,
        and after people rolled back away from a release, that release."""
        verified = Promotion.objects.filter(
            release=OuterRef("pk"), environment=environment, state=PromotionState.VERIFIED
        ).order_by("-finished_at")
        return (
            self.rollback_targets(environment, taken_out)
            .annotate(verified_at=Subquery(verified.values("finished_at")[:1]))
            .filter(verified_at__isnull=False)
            .order_by("-verified_at", "-year", "-month", "-build")
            .first()
        )


class Release(models.Model):
    # No index of its own: the (service, year, month, build) constraint's index leads with the
    # service and also answers "newest first" and "how many are newer" as index range scans.
    # A second, single-column index made PostgreSQL's planner pick it and filter every
    # release of the service instead (the board's "builds behind" took 4× as long).
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="releases", db_index=False)
    version = models.CharField(max_length=calver.MAX_VERSION_LENGTH)
    year = models.PositiveSmallIntegerField(editable=False)
    month = models.PositiveSmallIntegerField(editable=False)
    build = models.PositiveIntegerField(editable=False)
    metadata = models.CharField(max_length=calver.MAX_METADATA_LENGTH, blank=True, editable=False)
    commit_sha = models.CharField(
        max_length=40, validators=[RegexValidator(COMMIT_SHA_PATTERN, "A full 40-character lowercase hex commit SHA.")]
    )
    committed_at = models.DateTimeField(
        null=True, blank=True, validators=[validate_commit_time], help_text="Commit time, the start of lead time."
    )
    image_digest = models.CharField(
        max_length=71,
        validators=[RegexValidator(IMAGE_DIGEST_PATTERN, "sha256: followed by 64 lowercase hex characters.")],
    )
    changelog = models.TextField(blank=True)
    is_hotfix = models.BooleanField(default=False)
    fixes = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fixed_by",
        help_text="For a hotfix: the release it fixes.",
    )
    registered_by = models.CharField(
        max_length=ACTOR_MAX_LENGTH, blank=True, help_text="User, API token or GitHub Actions run that registered it."
    )
    registered_at = models.DateTimeField(default=timezone.now)
    # The image as the registry showed it before the last promotion that asked (releases/image_gate.py).
    image_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    signed_by = models.CharField(
        max_length=100,
        blank=True,
        default="",
        db_default="",  # rows written without the ORM (the benchmarks' COPY) need it too
        editable=False,
        help_text="The Cosign key that signed the digest (its SHA-256).",
    )
    signature_verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    attested_by = models.CharField(
        max_length=300,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="The certificate identity of the Sigstore attestation that was verified (for GitHub: the workflow).",
    )
    # The rest of what the certificate said (issuer, repository, ref, commit, trigger), the predicate
    # and the bundle's digest in the registry: what the audit event keeps, for the pages.
    attestation_claims = models.JSONField(default=dict, db_default={}, blank=True, editable=False)
    attested_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the transparency log took the attestation."
    )
    attestation_verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Old versions found in the GitOps history were never registered, so their commit and
    # digest may be unknown (blank); only such rows may leave them blank.
    is_imported = models.BooleanField(default=False, editable=False)

    objects = ReleaseQuerySet.as_manager()

    class Meta:
        ordering = ["service", "-year", "-month", "-build"]
        constraints = [
            models.UniqueConstraint(fields=["service", "version"], name="release_version_unique_per_service"),
            models.UniqueConstraint(
                fields=["service", "year", "month", "build"], name="release_build_unique_per_month"
            ),
            models.UniqueConstraint(
                fields=["service", "commit_sha", "image_digest"],
                condition=~Q(image_digest=""),
                name="release_build_registered_once",
            ),
            models.CheckConstraint(
                condition=Q(commit_sha__regex=COMMIT_SHA_PATTERN) | Q(is_imported=True, commit_sha=""),
                name="release_commit_sha_is_hex40",
            ),
            models.CheckConstraint(
                condition=Q(image_digest__regex=IMAGE_DIGEST_PATTERN) | Q(is_imported=True, image_digest=""),
                name="release_digest_is_sha256",
            ),
            models.CheckConstraint(condition=Q(month__gte=1) & Q(month__lte=12), name="release_month_in_range"),
            models.CheckConstraint(condition=Q(build__gte=1), name="release_build_positive"),
        ]

    def __str__(self):
        return f"{self.service} {self.version}"

    def save(self, *args, **kwargs):
        parsed = calver.parse(self.version)
        self.year, self.month, self.build, self.metadata = parsed.year, parsed.month, parsed.build, parsed.metadata
        if self._state.adding:
            super().save(*args, **kwargs)
            return
        # Only a save that may change the hotfix link reads it first (not the image gate's, say).
        fields = kwargs.get("update_fields")
        link_saved = fields is None or bool({"is_hotfix", "fixes", "fixes_id"} & set(fields))
        with transaction.atomic():
            link = (
                Release.objects.filter(pk=self.pk).values_list("is_hotfix", "fixes_id").first() if link_saved else None
            )
            super().save(*args, **kwargs)
            self.deployments.exclude(release_committed_at=self.committed_at, release_is_hotfix=self.is_hotfix).update(
                release_committed_at=self.committed_at, release_is_hotfix=self.is_hotfix
            )
            if link_saved and link != (self.is_hotfix, self.fixes_id):
                Incident.objects.follow_hotfix_link(self)

    def get_absolute_url(self):
        return reverse("releases:release-detail", args=[self.service.name, self.version])

    @property
    def calver(self):
        return calver.CalVer(self.year, self.month, self.build, self.metadata)

    @property
    def short_sha(self):
        return self.commit_sha[:7]

    def tags(self):
        if not self.commit_sha:
            return [self.version]
        return self.calver.tags(self.commit_sha)

    def image_reference(self):
        return f"{self.service.image_repository}@{self.image_digest}"

    def clean(self):
        try:
            calver.parse(self.version)
        except calver.InvalidVersion as error:
            raise ValidationError({"version": str(error)}) from error

    def is_newer_than(self, other):
        return self.calver > other.calver


class PromotionKind(models.TextChoices):
    AUTO = "auto", "Automatic"
    MANUAL = "manual", "Manual"
    ROLLBACK = "rollback", "Rollback"


class PromotionState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved"
    COMMITTING = "committing", "Committing"
    COMMITTED = "committed", "Committed"
    SYNCING = "syncing", "Syncing"
    DEPLOYED = "deployed", "Deployed"
    VERIFYING = "verifying", "Verifying"
    VERIFIED = "verified", "Verified"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Superseded"
    ROLLED_BACK = "rolled_back", "Rolled back"

    @classmethod
    def active(cls):
        return [
            cls.AWAITING_APPROVAL,
            cls.APPROVED,
            cls.COMMITTING,
            cls.COMMITTED,
            cls.SYNCING,
            cls.DEPLOYED,
            cls.VERIFYING,
        ]

    @classmethod
    def in_flight(cls):
        """Past approval: the GitOps commit is made or being made, so it can no longer be replaced."""
        return [cls.APPROVED, cls.COMMITTING, cls.COMMITTED, cls.SYNCING, cls.DEPLOYED, cls.VERIFYING]


class PullRequestState(models.TextChoices):
    """A promotion's pull request on the GitOps repository, as GitHub last said (docs/pull-requests.md)."""

    OPEN = "open", "Open"
    MERGED = "merged", "Merged"
    CLOSED = "closed", "Closed"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    NOT_CONFIGURED = "not_configured", "Not configured"


class PromotionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(state__in=PromotionState.active())

    def for_service(self, service):
        return self.filter(service=service)

    def with_details(self):
        return self.select_related("release", "service", "environment", "requested_by")

    def last_committed_in(self, service, environment):
        """The promotion of the portal's last GitOps commit in the place, or None: what its values file
        holds, unless someone changed it since."""
        return (
            self.filter(service=service, environment=environment)
            .exclude(gitops_commit_sha="")
            .order_by("-committed_at", "-pk")
            .first()
        )


class Promotion(models.Model):
    """One release going into one environment, with the time of every step."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="promotions")
    # Denormalised from the release so the database can hold one active promotion per place.
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="promotions")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="promotions")
    kind = models.CharField(max_length=10, choices=PromotionKind.choices, default=PromotionKind.MANUAL)
    state = models.CharField(max_length=20, choices=PromotionState.choices, default=PromotionState.AWAITING_APPROVAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="requested_promotions"
    )
    requested_via = models.CharField(
        max_length=150, blank=True, help_text="Who asked when it was not a person: an API token or the pipeline."
    )
    accountable_requester = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=(
            "Whom the request counts as for separation of duties: the person who asked, or the person who "
            "created the API token it came through. They may not approve or reject it."
        ),
    )
    is_emergency = models.BooleanField(default=False, help_text="Break-glass promotion for a production incident.")
    emergency_reason = models.TextField(blank=True)
    rolls_back = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rolled_back_by",
        help_text="For a rollback: the promotion whose release it takes out.",
    )
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes"
    )
    previous_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="What ran before."
    )

    requested_at = models.DateTimeField(default=timezone.now)
    approved_at = models.DateTimeField(null=True, blank=True)
    commit_started_at = models.DateTimeField(null=True, blank=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    sync_started_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    verification_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    verdict_at = models.DateTimeField(null=True, blank=True, help_text="When the soak window ends.")
    argocd_sync_id = models.CharField(
        max_length=64, blank=True, help_text="Argo CD's history id of the sync that deployed it, when Argo CD said."
    )
    updated_at = models.DateTimeField(auto_now=True)

    gitops_commit_sha = models.CharField(max_length=40, blank=True)
    gitops_commit_message = models.TextField(blank=True)
    push_may_have_landed = models.BooleanField(
        default=False,
        db_default=False,
        help_text=(
            "A push (or merge) of its GitOps commit was under way and the portal has not learnt since whether "
            "it reached the branch: until then, nobody may be told that nothing was written."
        ),
    )
    sync_status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    verification_status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    failed_step = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    applied_health = models.CharField(
        max_length=20,
        blank=True,
        default="",
        db_default="",
        help_text="Its sync failed on the health its release came up with once Argo CD had applied its commit "
        "(Degraded): its manifests run there, unhealthy. Empty otherwise.",
    )
    slo_breached_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was found active past its environment's target time (alerted once)."
    )

    # Delivered by pull request (docs/pull-requests.md): the PR, its branch and the head commit the
    # approvals bind to (the portal's own commit, or a later one pushed by someone else).
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    pr_url = models.URLField(blank=True, max_length=500, validators=[validate_http_url], help_text="http(s) only.")
    pr_branch = models.CharField(max_length=255, blank=True)
    pr_head_sha = models.CharField(max_length=40, blank=True)
    pr_state = models.CharField(max_length=10, choices=PullRequestState.choices, blank=True)
    pr_reviews_seen = models.JSONField(
        default=list, blank=True, editable=False, help_text="Ids of the GitHub reviews the portal has acted on."
    )

    objects = PromotionQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "environment"],
                condition=Q(state__in=PromotionState.active()),
                name="one_active_promotion_per_service_environment",
            ),
            models.CheckConstraint(
                condition=Q(is_emergency=False) | ~Q(emergency_reason=""), name="emergency_promotion_has_reason"
            ),
            models.CheckConstraint(condition=Q(state__in=PromotionState.values), name="promotion_state_is_known"),
            models.CheckConstraint(condition=Q(kind__in=PromotionKind.values), name="promotion_kind_is_known"),
        ]
        indexes = [
            models.Index(fields=["environment", "state"], name="promotion_env_state_idx"),
            # "Is this release verified there?": promote-artifacts rule, board, version matrix.
            models.Index(
                fields=["release", "environment"],
                condition=Q(state=PromotionState.VERIFIED),
                name="promotion_verified_idx",
            ),
        ]

    def __str__(self):
        return f"{self.service} {self.release.version} → {self.environment}"

    def save(self, *args, **kwargs):
        if self.release_id and not self.service_id:
            self.service_id = self.release.service_id
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("releases:promotion-detail", args=[self.pk])

    @property
    def is_active(self):
        return self.state in PromotionState.active()

    @property
    def is_rollback(self):
        return self.kind == PromotionKind.ROLLBACK

    @property
    def verification_window(self):
        """How long it soaks: a rollback follows its environment's rollback policy."""
        if self.is_rollback:
            return self.environment.rollback_verification_window
        return self.environment.verification_window

    def approver_names(self):
        """Who approved it, in the order they did (for the commit message and the audit log)."""
        username = f"user__{get_user_model().USERNAME_FIELD}"
        return list(self.approvals.filter(decision=ApprovalDecision.APPROVE).values_list(username, flat=True))

    def requester_name(self):
        return self.requested_by.get_username() if self.requested_by else (self.requested_via or PIPELINE)

    def clean(self):
        if self.release_id and self.service_id and self.release.service_id != self.service_id:
            raise ValidationError({"release": "The release belongs to another service."})


class Step(models.TextChoices):
    COMMIT = "commit", "GitOps commit"
    SYNC = "sync", "Argo CD sync"
    VERIFY = "verify", "Soak sample"
    PULL_REQUEST = "pr", "Pull request opened"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    RETRY = "retry", "Transient error, tried again"
    CRASHED = "crashed", "Crashed"

    @classmethod
    def open(cls):
        return [cls.QUEUED, cls.RUNNING]


class StepRunQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=RunStatus.open())


class StepRun(models.Model):
    """One run of a pipeline step for a promotion: the row is the truth, RQ only delivers it.

    Created in the transition's transaction, handed to RQ once it commits. A worker claims it
    (queued → running) and renews its lease while it works; a run whose lease expired lost its
    worker, and the reconciler starts another. A transient error (Git, Redis, the database
    unreachable) ends a run as `retry` with a new run after a backoff; an unexpected one as
    `crashed`, and a step that crashes too often fails its promotion.
    """

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="runs")
    step = models.CharField(max_length=10, choices=Step.choices)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    run_after = models.DateTimeField(default=timezone.now, help_text="It may not start before this.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="The worker that claimed it.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The first of an unbroken series of transient errors of this step, carried from run to run.
    troubled_since = models.DateTimeField(null=True, blank=True)

    objects = StepRunQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["promotion"], condition=Q(status__in=["queued", "running"]), name="one_open_run_per_promotion"
            ),
            models.CheckConstraint(condition=Q(step__in=Step.values), name="step_run_step_is_known"),
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="step_run_status_is_known"),
        ]
        indexes = [models.Index(fields=["status", "run_after"], name="step_run_due_idx")]

    def __str__(self):
        return f"{self.get_step_display()} of promotion #{self.promotion_id}: {self.get_status_display().lower()}"

    @property
    def rq_job_id(self):
        return f"step-run-{self.pk}"


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class Approval(models.Model):
    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=10, choices=ApprovalDecision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Delivered by pull request: the PR's head commit the decision was given on, and the GitHub
    # review it came from (blank when given on the portal).
    head_sha = models.CharField(max_length=40, blank=True)
    github_review_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["promotion", "user"], name="one_decision_per_user_per_promotion"),
            models.CheckConstraint(
                condition=Q(decision=ApprovalDecision.APPROVE) | ~Q(comment=""), name="rejection_has_comment"
            ),
            models.CheckConstraint(
                condition=Q(decision__in=ApprovalDecision.values), name="approval_decision_is_known"
            ),
        ]

    def __str__(self):
        return f"{self.user} {self.get_decision_display().lower()} {self.promotion}"


class DeploymentSource(models.TextChoices):
    PORTAL = "portal", "Portal promotion"
    IMPORT = "import", "Imported from GitOps history"


class DeploymentQuerySet(models.QuerySet):
    def current(self):
        return self.filter(replaced_at__isnull=True)

    def in_place(self, service, environment):
        return self.filter(service=service, environment=environment)

    def running(self, service, environment):
        """What runs in the place: its current deployment, with its release, or None. What the board, the
        promotion page and the rollback dialog show there, and what a request or a rollback decides on."""
        return one_or_none(self.current().in_place(service, environment).select_related("release"))

    def holding_commit_of(self, promotion):
        """The current deployment of the place whose values file the drift check found holding
        `promotion`'s commit, where it differs from what runs (the promotion did not finish), or None."""
        if not promotion.gitops_commit_sha or promotion.is_active:
            return None
        return one_or_none(self.current().filter(drifted_tag_committed_by=promotion).select_related("release"))

    def live_at(self, service, environment, at):
        """The deployment that was running in that place at that time, or None."""
        return (
            self.in_place(service, environment)
            .filter(deployed_at__lte=at)
            .filter(Q(replaced_at__isnull=True) | Q(replaced_at__gt=at))
            .order_by("-deployed_at", "-id")
            .first()
        )

    def classify(self, release, environment, deployed_at, *, before, declared_rollback=False):
        """(is_rollback, is_change) of a deployment of `release` there at `deployed_at`, after `before`.

        The one rule for live recording and the GitOps import alike (docs/dora.md): the release running
        again is a redeploy; a deployment declared a rollback (a rollback promotion, whose target the
        portal checked; a rollback or revert commit) is one; a release that was live here before and is
        older than the one running is a rollback. Anything else is a change, whatever its number: a
        release new here (a late hotfix, a promotion out of CalVer order) or the newer release again
        after a rollback. A version number alone never makes a rollback.
        """
        if before is not None and before.release_id == release.pk:
            return False, False
        if declared_rollback:
            return True, False
        if before is None or not release.calver < before.release.calver:
            return False, True
        was_live_here = (
            self.in_place(release.service_id, environment).filter(release=release, deployed_at__lt=deployed_at).exists()
        )
        return was_live_here, not was_live_here

    def record(
        self,
        *,
        release,
        environment,
        deployed_at,
        promotion=None,
        is_rollback=False,
        source=DeploymentSource.PORTAL,
        gitops_commit_sha="",
        health="",
    ):
        """Record a successful deployment (its finish is `deployed_at`) and everything it implies.

        The one way deployments are written, by the pipeline and the GitOps import alike: it
        closes the deployment it replaces, works out whether this one is a rollback, a redeploy or
        a change (`classify`; DORA counts only changes; `is_rollback` says it was declared one), and
        records the incident a rollback or a hotfix stands for. History may arrive out of order (an
        import after the portal already deployed), so the deployment is placed between the ones
        before and after it in time.
        """
        service = release.service
        with transaction.atomic():
            # Deployments of one service are recorded one at a time, so "the one before" is exact.
            Service.objects.select_for_update().filter(pk=service.pk).first()
            place = self.in_place(service, environment)
            # Locked: the reconciler's far-behind flag moves from it to the new current deployment below, and
            # its drift flag is taken off; an update of either running meanwhile must see that, not write it
            # behind us.
            before = (
                place.filter(deployed_at__lte=deployed_at).order_by("-deployed_at", "-id").select_for_update().first()
            )
            after = place.filter(deployed_at__gt=deployed_at).order_by("deployed_at", "id").first()
            is_rollback, is_change = self.classify(
                release, environment, deployed_at, before=before, declared_rollback=is_rollback
            )
            # A place far behind the first environment stays so across a promotion: the crossing belongs to
            # the place, so it follows the current deployment, and the reconciler ends it (or keeps it) once.
            far_behind_since = None
            if before is not None:
                if after is None:
                    far_behind_since, before.far_behind_since = before.far_behind_since, None
                # What the values file held where it differed from the replaced deployment is not carried:
                # the drift check compares the file with the new one afresh (a promotion's commit rewrote
                # it, and says in the audit log what it replaced), and only a current deployment is flagged.
                before.drifted_tag, before.drifted_tag_committed_by, before.drift_detected_at = "", None, None
                before.replaced_at = deployed_at
                before.save(
                    update_fields=[
                        "replaced_at",
                        "far_behind_since",
                        "drifted_tag",
                        "drifted_tag_committed_by",
                        "drift_detected_at",
                    ]
                )
            deployment = self.create(
                service=service,
                environment=environment,
                release=release,
                promotion=promotion,
                source=source,
                is_rollback=is_rollback,
                is_change=is_change,
                gitops_commit_sha=gitops_commit_sha,
                deployed_at=deployed_at,
                replaced_at=after.deployed_at if after else None,
                health=health,
                far_behind_since=far_behind_since,
            )
            if after is not None and not after.is_rollback and after.is_change != (after.release_id != release.pk):
                after.is_change = after.release_id != release.pk
                after.save(update_fields=["is_change"])
                if not after.is_change:
                    # Now a redeploy of this one: what blamed it blames the change it repeats, or a
                    # failed change would stop counting (an incident on a deployment that is no change).
                    Incident.objects.filter(caused_by=after).update(caused_by=after.introducing_change() or after)
            if is_rollback:
                Incident.objects.record_for_rollback(deployment, taken_out=before)
            elif deployment.is_change and release.is_hotfix and release.fixes_id:
                Incident.objects.record_for_hotfix(deployment)
            return deployment


class Deployment(models.Model):
    """What actually ran where and from when: the version matrix and DORA are read from here."""

    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="deployments")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="deployments")
    promotion = models.OneToOneField(
        Promotion, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployment"
    )
    source = models.CharField(max_length=10, choices=DeploymentSource.choices, default=DeploymentSource.PORTAL)
    is_rollback = models.BooleanField(default=False, help_text="It took out the release that was running.")
    # Stored rather than derived so DORA reports aggregate one indexed table (see docs/dora.md).
    is_change = models.BooleanField(
        default=True,
        help_text="Counted by DORA: neither a rollback nor a redeploy of the release already running there.",
    )
    # Copies of the release's commit time and hotfix flag, taken on creation and kept in step by
    # Release.save(), so the DORA report reads one table instead of joining every deployment to its release.
    release_committed_at = models.DateTimeField(null=True, blank=True, editable=False)
    release_is_hotfix = models.BooleanField(default=False, editable=False)
    gitops_commit_sha = models.CharField(max_length=40, blank=True)
    deployed_at = models.DateTimeField(help_text="When the deployment finished (healthy).")
    replaced_at = models.DateTimeField(null=True, blank=True)
    health = models.CharField(max_length=20, blank=True, help_text="Last health Argo CD reported.")
    health_checked_at = models.DateTimeField(null=True, blank=True)
    # What the drift check found, on the current deployment only: record() clears it from the one it replaces.
    drifted_tag = models.CharField(
        max_length=150, blank=True, help_text="The tag the GitOps repo holds when it differs from this deployment."
    )
    drifted_tag_committed_by = models.ForeignKey(
        Promotion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The promotion whose GitOps commit wrote drifted_tag: the portal's last commit there, which did "
        "not finish (its sync failed). Empty when the tag was written outside the portal.",
    )
    drift_detected_at = models.DateTimeField(null=True, blank=True)
    # The place's crossing, not this deployment's: record() moves it to the deployment that replaces this one.
    far_behind_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it was found more than its environment's drift_alert_builds behind the first environment "
        "(alerted and audited once per crossing).",
    )

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-deployed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "environment"],
                condition=Q(replaced_at__isnull=True),
                name="one_current_deployment_per_service_environment",
            ),
            models.CheckConstraint(
                condition=Q(replaced_at__isnull=True) | Q(replaced_at__gte=F("deployed_at")),
                name="deployment_replaced_after_deployed",
            ),
            models.CheckConstraint(
                condition=Q(is_rollback=False) | Q(is_change=False), name="deployment_rollback_is_not_a_change"
            ),
        ]
        indexes = [
            models.Index(fields=["environment", "deployed_at"], name="deployment_env_time_idx"),
            models.Index(fields=["service", "environment", "deployed_at"], name="deployment_place_time_idx"),
        ]

    def __str__(self):
        return f"{self.service} {self.release.version} in {self.environment} since {self.deployed_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if self._state.adding:
            self.release_committed_at = self.release.committed_at
            self.release_is_hotfix = self.release.is_hotfix
        super().save(*args, **kwargs)

    def introducing_change(self):
        """The change deployment that brought this deployment's release here (itself, for a change).

        A redeploy points back to the change it repeated; a rollback introduced no change.
        """
        if self.is_change:
            return self
        if self.is_rollback:
            return None
        return (
            Deployment.objects.in_place(self.service_id, self.environment_id)
            .filter(release_id=self.release_id, is_change=True, deployed_at__lte=self.deployed_at)
            .order_by("-deployed_at", "-id")
            .first()
        )


class IncidentSource(models.TextChoices):
    ROLLBACK = "rollback", "Rollback"
    HOTFIX = "hotfix", "Hotfix release"
    PAGERDUTY = "pagerduty", "PagerDuty"
    MANUAL = "manual", "Entered by hand"


class IncidentSeverity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class IncidentQuerySet(models.QuerySet):
    def _record(self, source, fixed_by, caused_by, severity, title):
        """One incident per rollback or hotfix deployment, however often it is recorded."""
        incident, created = self.get_or_create(
            source=source,
            fixed_by=fixed_by,
            defaults={
                "service_id": fixed_by.service_id,
                "environment_id": fixed_by.environment_id,
                "caused_by": caused_by,
                "started_at": caused_by.deployed_at,
                "resolved_at": fixed_by.deployed_at,
                "severity": severity,
                "title": title,
            },
        )
        if created:
            incident.audit("system")
        return incident

    def record_for_rollback(self, rollback, taken_out=None):
        """The incident a rollback stands for: the release it took out had failed.

        `taken_out` is the deployment the rollback replaced (looked up when not given). The
        failed deployment is the change that brought that release in; when the rollback took
        out another rollback there is no such change and the incident points at that rollback.
        Returns None for a rollback with nothing before it.
        """
        if taken_out is None:
            taken_out = (
                Deployment.objects.in_place(rollback.service_id, rollback.environment_id)
                .filter(deployed_at__lte=rollback.deployed_at)
                .exclude(pk=rollback.pk)
                .order_by("-deployed_at", "-id")
                .first()
            )
        if taken_out is None:
            return None
        caused_by = taken_out.introducing_change() or taken_out
        title = (
            f"{rollback.service.name} {caused_by.release.version} rolled back to "
            f"{rollback.release.version} in {rollback.environment.name}"
        )
        return self._record(IncidentSource.ROLLBACK, rollback, caused_by, IncidentSeverity.HIGH, title)

    def follow_hotfix_link(self, release):
        """`release`'s hotfix link was corrected after it was deployed (ReleaseAdmin allows it): the
        incidents its change deployments stand for follow, as if it had been deployed with the link.
        Before, rework counted the hotfix at once but no failed change was blamed (or the incident of
        a link removed stayed)."""
        changes = release.deployments.filter(is_change=True)
        withdrawn = self.filter(source=IncidentSource.HOTFIX, fixed_by__in=changes)
        if release.is_hotfix and release.fixes_id:
            withdrawn = withdrawn.exclude(caused_by__release_id=release.fixes_id)
        for incident in withdrawn.select_related("service", "environment", "caused_by__release"):
            incident.audit("system", verb="withdrawn, the hotfix link it stood for was corrected")
            incident.delete()
        if release.is_hotfix and release.fixes_id:
            for deployment in changes.select_related("service", "environment", "release"):
                self.record_for_hotfix(deployment)

    def record_for_hotfix(self, hotfix):
        """The incident a hotfix deployment stands for: the release it fixes had failed here.

        The failed deployment is the latest change deployment of the fixed release in the same
        place before the hotfix. Returns None when that release never ran there.
        """
        fixed_release_id = hotfix.release.fixes_id
        if not fixed_release_id:
            return None
        caused_by = (
            Deployment.objects.in_place(hotfix.service_id, hotfix.environment_id)
            .filter(release_id=fixed_release_id, is_change=True, deployed_at__lte=hotfix.deployed_at)
            .order_by("-deployed_at", "-id")
            .first()
        )
        if caused_by is None:
            return None
        title = (
            f"{hotfix.service.name} {caused_by.release.version} fixed by hotfix "
            f"{hotfix.release.version} in {hotfix.environment.name}"
        )
        return self._record(IncidentSource.HOTFIX, hotfix, caused_by, IncidentSeverity.MEDIUM, title)


class Incident(models.Model):
    """Something went wrong in an environment; linked to the deployment that caused it, a failed change for DORA."""

    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="incidents")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="incidents")
    title = models.CharField(max_length=255)
    severity = models.CharField(max_length=10, choices=IncidentSeverity.choices, default=IncidentSeverity.HIGH)
    source = models.CharField(max_length=10, choices=IncidentSource.choices, default=IncidentSource.MANUAL)
    started_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="Blank while it is still open.")
    caused_by = models.ForeignKey(
        Deployment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="incidents",
        help_text="The deployment that caused it: that deployment counts as failed in DORA.",
    )
    fixed_by = models.ForeignKey(
        Deployment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fixed_incidents",
        help_text="The rollback or hotfix deployment that ended it, if one did.",
    )
    external_id = models.CharField(max_length=100, blank=True, help_text="The incident's id in PagerDuty.")
    external_url = models.URLField(blank=True, validators=[validate_http_url], help_text="http(s) only.")
    external_updated_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the last PagerDuty event applied to it occurred."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(resolved_at__isnull=True) | Q(resolved_at__gte=F("started_at")),
                name="incident_resolved_after_it_started",
            ),
            models.CheckConstraint(condition=Q(source__in=IncidentSource.values), name="incident_source_is_known"),
            models.CheckConstraint(
                condition=Q(severity__in=IncidentSeverity.values), name="incident_severity_is_known"
            ),
            models.CheckConstraint(condition=~Q(title=""), name="incident_has_title"),
            models.CheckConstraint(
                condition=Q(external_url="") | Q(external_url__iregex=HTTP_URL_REGEX), name="incident_url_is_http"
            ),
            models.CheckConstraint(
                condition=~Q(source__in=[IncidentSource.ROLLBACK, IncidentSource.HOTFIX])
                | (Q(caused_by__isnull=False) & Q(fixed_by__isnull=False)),
                name="derived_incident_names_both_deployments",
            ),
            models.UniqueConstraint(
                fields=["source", "fixed_by"],
                condition=Q(source__in=[IncidentSource.ROLLBACK, IncidentSource.HOTFIX]),
                name="one_incident_per_rollback_or_hotfix",
            ),
            models.UniqueConstraint(
                fields=["source", "external_id"], condition=~Q(external_id=""), name="one_incident_per_external_id"
            ),
        ]

    def __str__(self):
        return self.title

    def save(self, *args, **kwargs):
        # Every path (PagerDuty, rollbacks, hotfixes, the admin) blames the change that introduced
        # the running version: a redeploy repeated a change and is not one, so the failure belongs
        # to the change it repeated (a rollback introduced no change and stays the suspect).
        if self.caused_by is not None and not self.caused_by.is_change:
            self.caused_by = self.caused_by.introducing_change() or self.caused_by
        super().save(*args, **kwargs)

    def clean(self):
        errors = {}
        for field in ("caused_by", "fixed_by"):
            deployment = getattr(self, field)
            if deployment and (deployment.service_id, deployment.environment_id) != (
                self.service_id,
                self.environment_id,
            ):
                errors[field] = "Choose a deployment of the same service in the same environment as the incident."
        if self.caused_by and self.started_at and self.started_at < self.caused_by.deployed_at:
            errors["started_at"] = (
                f"The incident cannot start before the deployment that caused it finished "
                f"({self.caused_by.deployed_at:%Y-%m-%d %H:%M %Z})."
            )
        if self.resolved_at and self.started_at and self.resolved_at < self.started_at:
            errors["resolved_at"] = "An incident is resolved after it started."
        if errors:
            raise ValidationError(errors)

    def audit(self, actor, verb="recorded"):
        audit_log.record(
            AuditAction.INCIDENT_RECORDED,
            actor=actor,
            service=self.service.name,
            environment=self.environment.name,
            version=self.caused_by.release.version if self.caused_by else "",
            message=f"Incident {verb}: {self.title}",
            data={
                "incident": self.pk,
                "source": self.source,
                "severity": self.severity,
                "started_at": self.started_at,
                "resolved_at": self.resolved_at,
                "caused_by": self.caused_by_id,
                "fixed_by": self.fixed_by_id,
                "external_id": self.external_id,
            },
        )


class HoldQuerySet(models.QuerySet):
    def active(self):
        return self.filter(lifted_at__isnull=True)

    def reason_in_each(self, environments, service):
        """`environments` (a queryset), each with `hold_reason`: why automatic promotions of `service`
        into it are on hold, or None."""
        held = self.active().filter(service=service, environment=OuterRef("pk"))
        return environments.annotate(hold_reason=Subquery(held.values("reason")[:1]))


class Hold(models.Model):
    """Stops automatic promotions into one place, e.g. after a rollback, until someone lifts it; one the
    portal placed for a release's failure there is lifted by itself once a later release is verified there."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="holds")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="holds")
    reason = models.CharField(max_length=300)
    placed_by = models.CharField(max_length=150, help_text="User name, or the pipeline.")
    failed_release = models.ForeignKey(
        Release,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The release whose failure here the portal placed it for: lifted by itself once a later release "
        "(or a hotfix of this one) is verified here. Empty: a person's decision (their rollback), or placed before "
        "the portal kept this; a person lifts it.",
    )
    placed_at = models.DateTimeField(default=timezone.now)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lifted_at = models.DateTimeField(null=True, blank=True)

    objects = HoldQuerySet.as_manager()

    class Meta:
        ordering = ["-placed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "environment"], condition=Q(lifted_at__isnull=True), name="one_active_hold_per_place"
            ),
        ]

    def __str__(self):
        return f"Hold on {self.service} in {self.environment}: {self.reason}"

    def is_superseded_by(self, release):
        """Whether `release`, verified here, leaves the hold about nothing that runs here: a later release
        than the one whose failure placed it, or a hotfix of that one (a late hotfix may be numbered below it)."""
        if self.failed_release is None:
            return False
        return release.is_newer_than(self.failed_release) or release.fixes_id == self.failed_release_id


class SampleCheck(models.TextChoices):
    ERROR_RATE = "error_rate", "Error rate"
    HEALTH_URL = "health_url", "Health URL"
    ARGOCD_HEALTH = "argocd_health", "Argo CD health"


# How a sample without a verdict of its own begins its detail: nothing to judge (NaN, no series),
# a measurement that went wrong (Prometheus or Argo CD could not answer), or one not taken yet.
NO_DATA, ERROR, WAITING = "no data: ", "error: ", "waiting: "


class VerificationSample(models.Model):
    """One observation taken during a promotion's soak window."""

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=20, choices=SampleCheck.choices)
    target = models.TextField(help_text="The query, URL or application checked.")
    value = models.FloatField(null=True, blank=True)
    ok = models.BooleanField(null=True, help_text="Empty when the sample had no data (NaN, no series, an error).")
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["taken_at", "id"]

    def __str__(self):
        return f"{self.get_kind_display()} at {self.taken_at:%H:%M:%S}: {self.detail}"

    @property
    def outcome(self):
        """What the pages call the sample: ok, failed, error (it could not be taken: Prometheus or Argo CD
        did not answer) or no data (nothing to judge, or not taken yet)."""
        if self.ok is not None:
            return "ok" if self.ok else "failed"
        return "error" if self.detail.startswith(ERROR) else "no data"


def newest_per_check(results):
    """The result that counts for each check: the newest one of each (release, environment, name).

    `results` come newest first (CheckResult's default order). Each result that counts gets
    `earlier_runs`: how many older results of the same check it overrides.
    """
    counting = {}
    for result in results:
        key = (result.release_id, result.environment_id, result.name)
        if key in counting:
            counting[key].earlier_runs += 1
        else:
            result.earlier_runs = 0
            counting[key] = result
    return list(counting.values())


class CheckResultQuerySet(models.QuerySet):
    def newest_per_check(self):
        """The results that count (see `newest_per_check`), newest first."""
        return newest_per_check(self.order_by("-reported_at", "-id"))

    def counting(self):
        """The results that count, as a filter the database applies (for a subquery, the board's): those
        no newer result of the same check of the release there overrides, in `newest_per_check`'s order."""
        newer = CheckResult.objects.filter(
            Q(reported_at__gt=OuterRef("reported_at")) | Q(reported_at=OuterRef("reported_at"), id__gt=OuterRef("id")),
            release=OuterRef("release"),
            environment=OuterRef("environment"),
            name=OuterRef("name"),
        )
        return self.filter(~Exists(newer))


class CheckResult(models.Model):
    """A verification result reported by CI (E2E, performance, security scan) for a release somewhere.

    A check may be run again; the newest result of each check is the one that counts.
    """

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="check_results")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="check_results")
    name = models.CharField(max_length=50, validators=[slug_validator])
    passed = models.BooleanField()
    url = models.URLField(blank=True, max_length=500, validators=[validate_http_url], help_text="http(s) only.")
    summary = models.CharField(max_length=300, blank=True)
    reported_by = models.CharField(max_length=ACTOR_MAX_LENGTH)
    reported_at = models.DateTimeField(default=timezone.now)

    objects = CheckResultQuerySet.as_manager()

    class Meta:
        ordering = ["-reported_at", "-id"]
        indexes = [models.Index(fields=["release", "environment", "name"], name="check_result_lookup_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(url="") | Q(url__iregex=HTTP_URL_REGEX), name="check_result_url_is_http")
        ]

    def __str__(self):
        return f"{self.name} {'passed' if self.passed else 'failed'} for {self.release} in {self.environment}"


class DeploymentEventTrigger(models.TextChoices):
    ON_DEPLOYED = "on-deployed", "on-deployed"
    ON_SYNC_FAILED = "on-sync-failed", "on-sync-failed"


class DeploymentEvent(models.Model):
    """A signed Argo CD Notifications delivery, kept as received; its signature is never accepted twice."""

    trigger = models.CharField(max_length=20, choices=DeploymentEventTrigger.choices)
    application = models.CharField(max_length=253)
    revision = models.CharField(max_length=64, blank=True)
    sync_status = models.CharField(max_length=30, blank=True)
    health_status = models.CharField(max_length=30, blank=True)
    phase = models.CharField(max_length=30, blank=True)
    message = models.TextField(blank=True)
    promotion = models.ForeignKey(
        Promotion, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployment_events"
    )
    outcome = models.CharField(max_length=300, blank=True, help_text="What the portal did with it.")
    signature = models.CharField(max_length=64, unique=True, help_text="The HMAC, so a replay is refused.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self):
        return f"{self.trigger} {self.application} @ {self.revision[:7]}"


class SlackIdentityLink(models.TextChoices):
    EMAIL = "email", "Slack's confirmed e-mail matched the portal account's"
    ADMIN = "admin", "Linked by an administrator"


class SlackIdentity(models.Model):
    """Who a Slack user is in the portal: found once by a confirmed e-mail address, or linked by an
    administrator. Approval messages mention these people; their Slack buttons act as them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identity")
    slack_user_id = models.CharField(
        max_length=30,
        unique=True,
        validators=[RegexValidator(r"^[UW][A-Z0-9]{2,29}$", "A Slack user id looks like U024BE7LH.")],
        help_text="The Slack member id (Slack: profile → ⋮ → Copy member ID), e.g. U024BE7LH.",
    )
    linked_by = models.CharField(max_length=10, choices=SlackIdentityLink.choices, default=SlackIdentityLink.ADMIN)
    linked_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "Slack identities"
        constraints = [
            models.CheckConstraint(
                condition=Q(linked_by__in=SlackIdentityLink.values), name="slack_identity_link_is_known"
            ),
        ]

    def __str__(self):
        return f"{self.user} = Slack {self.slack_user_id}"


class ApprovalNotice(models.Model):
    """The approvers of a promotion were told it awaits them: the Slack message to update when it is
    decided, and when they were reminded."""

    promotion = models.OneToOneField(Promotion, on_delete=models.CASCADE, related_name="approval_notice")
    slack_channel = models.CharField(max_length=30, blank=True)
    slack_ts = models.CharField(max_length=30, blank=True, help_text="The Slack message's timestamp (its id).")
    notified_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the approvers were e-mailed (empty: not yet, or e-mails are off)."
    )
    reminded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Approval notice of {self.promotion}"


class NoticeKind(models.TextChoices):
    FAILURE_ALERT = "failure_alert", "Failed promotion alert"
    AUDIT_CHAIN_ALERT = "audit_chain_alert", "Broken audit chain alert"
    DISCARDED_APPROVALS = "discarded_approvals", "Discarded approvals notice"
    SLO_BREACH = "slo_breach", "Promotion past its SLO alert"
    FAR_BEHIND = "far_behind", "Far behind the first environment alert"
    APPROVAL_REQUEST = "approval_request", "Approval request"
    APPROVAL_UPDATE = "approval_update", "Approval message update"
    APPROVAL_REMINDER = "approval_reminder", "Approval reminder"


class NoticeQuerySet(models.QuerySet):
    def owed(self):
        return self.filter(sent_at__isnull=True, given_up_at__isnull=True)


class Notice(models.Model):
    """An alert or notice owed to Slack or the approvers' mailboxes: the outbox (releases/notices.py).

    Written in the transaction of the change it reports, so a change rolled back owes nothing; RQ
    only delivers it, and the reconciler hands RQ again what is owed and was lost. It ends sent, or
    given up with the reason in `last_error`.
    """

    kind = models.CharField(max_length=20, choices=NoticeKind.choices)
    args = models.JSONField(default=list, blank=True, help_text="What its sender is called with.")
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="It is not tried before this.")
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    given_up_at = models.DateTimeField(null=True, blank=True)
    parts_done = models.JSONField(
        default=list, blank=True, help_text="The ways of telling (slack, email) an earlier attempt did already."
    )

    objects = NoticeQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=NoticeKind.values), name="notice_kind_is_known"),
            models.CheckConstraint(
                condition=Q(sent_at__isnull=True) | Q(given_up_at__isnull=True), name="notice_sent_or_given_up"
            ),
            models.CheckConstraint(
                condition=Q(given_up_at__isnull=True) | ~Q(last_error=""), name="notice_given_up_says_why"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(sent_at__isnull=True, given_up_at__isnull=True),
                name="notice_owed_idx",
            )
        ]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def rq_job_id(self):
        # One per attempt: a retry is handed to RQ while the job of the attempt before still runs.
        return f"notice-{self.pk}-{self.attempts}"


class StateVersion(models.Model):
    """One row whose number every committed change the board or a promotion's page shows moves on.

    Database triggers bump it (releases/state.py), whoever writes — a transition, a webhook, the
    admin, a migration —, so a page rendered at a version is known to be current while it holds.
    """

    version = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="state_version_single_row")]

    def __str__(self):
        return f"state version {self.version}"


class ReconcilerRound(models.Model):
    """When `manage.py reconcile` last ended a round: one row, written at the end of each.

    /metrics gives it (nexo_reconciler_last_round_timestamp_seconds) for an alert on a reconciler
    that stopped, killed or stuck in a round: nothing else it does shows on its own, and the SLO
    breaches it counts go silent with it. Kept in PostgreSQL, not beside the workers' liveness in
    Redis, because a round needs the database and not Redis: it goes on while Redis is away, and
    a restarted Redis would forget it.
    """

    ended_at = models.DateTimeField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="reconciler_round_single_row")]

    def __str__(self):
        return f"reconciler round ended at {self.ended_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(cls, ended_at):
        # One statement, so that two reconcilers (a rolling update) writing the first row both succeed.
        cls.objects.bulk_create(
            [cls(id=1, ended_at=ended_at)], update_conflicts=True, unique_fields=["id"], update_fields=["ended_at"]
        )

    @classmethod
    def last_ended_at(cls):
        """When the last round ended, or None when none has."""
        return cls.objects.filter(id=1).values_list("ended_at", flat=True).first()
