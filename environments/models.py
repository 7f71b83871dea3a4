"""Where things run and the rules to get there: environments, their promotion policy, freezes."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from audit import log as audit_log
from nexo_portal.lib.inert import HTTP_URL_REGEX, validate_http_url

from . import prometheus

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$"
# The admin's duration field takes up to 999,999,999 days; a soak ending after the year 9999 cannot
# even be scheduled (its verdict time overflows), and one of more than a year is a typo.
MAX_SOAK = timedelta(days=366)
SOAK_TOO_LONG = "A soak of at most 366 days (DD HH:MM:SS); they are usually minutes."
slug_validator = RegexValidator(
    SLUG_PATTERN,
    "Use lowercase letters, digits and hyphens only, starting and ending with a letter or digit (at most 50).",
)


def validate_check_names(value):
    """The CI checks an environment requires: a list of check names as CI reports them."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError('Give the checks as a list of names, e.g. ["e2e", "performance", "security"].')
    for name in value:
        try:
            slug_validator(name)
        except ValidationError:
            raise ValidationError(
                f"“{name}” is not a check name: use lowercase letters, digits and hyphens (e.g. e2e); "
                "CI's results are matched by these names."
            ) from None
    if len(set(value)) != len(value):
        raise ValidationError("Name each check once.")


def render_template(template, *, service, environment):
    """Fill `{service}` and `{environment}` in a template and nothing else.

    str.format would choke on the braces of PromQL label matchers, so only these two
    placeholders are replaced.
    """
    return template.replace("{service}", service).replace("{environment}", environment)


def query_soak_errors(template, soaks):
    """Why an error-rate query template (its `{range:…}` placeholders valid) would measure nothing in
    soaks this long, one sentence each; `soaks`: (name, window) pairs, as Environment.soak_windows().

    Its samples wait until the deployment has been healthy for the shortest `{range}`
    (VERIFICATION_MIN_RANGE_SECONDS) or the query's fixed range ([5m]): in a shorter soak every one
    waits and the verdict fails for want of data, at every promotion. A zero window does not soak.
    """
    if prometheus.has_range_placeholder(template):
        shortest = timedelta(seconds=settings.VERIFICATION_MIN_RANGE_SECONDS)
        return [
            f"The query's {{range}} is at least {prometheus.describe_duration(shortest)} "
            f"(VERIFICATION_MIN_RANGE_SECONDS), longer than the {name} ({prometheus.describe_duration(window)}): its "
            "error-rate samples would wait until the soak is over, and the verdict would have no data. Lengthen the "
            f"{name} to at least {prometheus.describe_duration(shortest)}."
            for name, window in soaks
            if window is not None and timedelta(0) < window < shortest
        ]
    fixed = prometheus.longest_range(template)
    if fixed is None:
        return []
    return [
        f"The query's {prometheus.describe_duration(fixed)} range is longer than the {name} "
        f"({prometheus.describe_duration(window)}): its error-rate samples would wait for the release before to "
        "leave the range until the soak is over, and the verdict would have no data. Write [{range}] instead, or "
        "lengthen the soak."
        for name, window in soaks
        if window is not None and timedelta(0) < window < fixed
    ]


# What other apps keep that needs a soak of some length: releases registers the error-rate queries
# services carry of their own, from its AppConfig.ready. environments sits below releases
# (docs/architecture.md, tests/test_layers.py) and may not ask Service itself, yet it is the
# environment's form that must refuse a soak those queries cannot measure.
_soak_needs = []


def register_soak_need(need):
    """Have Environment.clean ask `need(soaks)` why soaks this long ((name, window) pairs, as
    Environment.soak_windows()) would not do: one sentence each, naming what needs more."""
    if need not in _soak_needs:
        _soak_needs.append(need)


class DeliveryMode(models.TextChoices):
    """How a promotion's change reaches the GitOps repository's branch (docs/pull-requests.md)."""

    DIRECT = "direct", "Direct commit"
    PULL_REQUEST = "pull_request", "Pull request"


def validate_url_template(template):
    """A link template: with its placeholders filled in, an http:// or https:// address."""
    validate_http_url(render_template(template, service="service", environment="environment"))


class EnvironmentQuerySet(models.QuerySet):
    def in_pipeline_order(self):
        return self.order_by("position")

    def with_active_freeze(self, at=None):
        """Each environment with `frozen_until` and `freeze_reason` of the freeze in force (None: open)."""
        active = ChangeFreeze.objects.active(at).filter(environment=OuterRef("pk")).order_by("-ends_at")
        return self.annotate(
            frozen_until=Subquery(active.values("ends_at")[:1]),
            freeze_reason=Subquery(active.values("reason")[:1]),
        )

    def required_check_names(self):
        """{environment name: the CI checks it requires}, in pipeline order, for those that require any."""
        return {
            name: checks for name, checks in self.in_pipeline_order().values_list("name", "required_checks") if checks
        }

    def first_in_pipeline(self):
        """Where registered builds go first (develop), or None without environments."""
        first = self.in_pipeline_order().first()
        if first is not None:
            first._previous = None  # nothing comes before it: spares previous() its query
        return first


class Environment(models.Model):
    name = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    position = models.PositiveSmallIntegerField(
        unique=True, help_text="Order in the pipeline: develop 1, qa 2, staging 3, production 4."
    )

    # Promotion policy (defaults from versioning-and-promotion.md, editable here).
    auto_promote = models.BooleanField(
        default=False,
        help_text="Enter automatically: the first environment on CI registration, the others once "
        "the release is verified in the environment before.",
    )
    required_approvals = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(10)], help_text="Distinct approvals needed before the GitOps commit."
    )
    rollback_required_approvals = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="Distinct approvals a rollback requested by a person or an API token needs here; the rollbacks "
        "the pipeline makes by policy need none. A rollback nobody else in the approver groups could approve is "
        "refused when it is requested.",
    )
    approver_groups = models.ManyToManyField(
        Group, blank=True, related_name="approvable_environments", help_text="Members of these groups may approve."
    )
    requester_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="requestable_environments",
        help_text="Also allowed to request promotions here, besides the service's owning team and the approvers.",
    )
    allows_break_glass = models.BooleanField(
        default=False,
        help_text="Emergency promotions for incidents: a reason is required, approvals still are, "
        "the previous-environment verification and change freezes are not.",
    )
    verification_window = models.DurationField(
        default=timedelta(minutes=5),
        validators=[MaxValueValidator(MAX_SOAK, SOAK_TOO_LONG)],
        help_text="Soak window after the deployment is healthy, during which samples are taken (HH:MM:SS).",
    )
    rollback_verification_window = models.DurationField(
        default=timedelta(minutes=2),
        validators=[MaxValueValidator(MAX_SOAK, SOAK_TOO_LONG)],
        help_text="Soak window of a rollback here (HH:MM:SS), judged only on the release rolled back to. "
        "0: rollbacks do not soak, one round of samples decides at once (an error rate, which needs time "
        "to measure, is then not judged).",
    )
    sample_interval_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)], help_text="Time between two samples during the soak."
    )
    error_rate_threshold = models.DecimalField(
        max_digits=6,
        decimal_places=5,
        default=0.01,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Highest acceptable error rate (0.01 = 1 %) for the Prometheus query.",
    )
    failure_limit = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="Failed samples of one check (the error rate, a health URL, Argo CD health) a soak tolerates; "
        "one more fails it at once, as Argo Rollouts' failureLimit. 0: the first failed sample fails it.",
    )
    consecutive_error_limit = models.PositiveSmallIntegerField(
        default=4,
        validators=[MaxValueValidator(100)],
        help_text="Measurement errors in a row of one check (Prometheus or Argo CD could not answer) a soak "
        "tolerates; one more fails it at once, as Argo Rollouts' consecutiveErrorLimit.",
    )
    required_checks = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_check_names],
        help_text='CI verification results that must pass here, e.g. ["e2e", "performance", "security"].',
    )
    requires_image_check = models.BooleanField(
        default=False,
        db_default=False,  # rows written without the ORM (the benchmarks' COPY) need it too
        help_text="Before promoting here, ask the registry that the release's digest exists and that its version "
        "tags point to it (REGISTRY_* settings).",
    )
    requires_signature = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Before promoting here, require a Cosign signature of the digest made with one of the service's "
        "signing keys.",
    )
    # Beside, not instead of, the Cosign key: a key says who held it, a keyless attestation which CI
    # workflow built the image; production may want both, and moving from keys to keyless is one
    # switch on, then the other off.
    requires_attestation = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Before promoting here, require a Sigstore attestation of the digest (GitHub's "
        "actions/attest-build-provenance, cosign attest --new-bundle-format) signed keylessly by the service's "
        "expected workflow identity, verified offline against SIGSTORE_TRUSTED_ROOT.",
    )
    rollback_on_failed_verification = models.BooleanField(
        default=False, help_text="Roll back automatically to the last verified release when verification fails."
    )
    # Promotion SLOs (releases/slo.py): the reference docs' targets by default (environments/defaults.py).
    promotion_slo_minutes = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Target time from request to verified, approval and soak included, so longer than the soak "
        "windows. A promotion active longer is marked on the board and alerted once.",
    )
    promotion_slo_success_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=98,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Target share of promotions that end verified, of those that reach a verdict (%).",
    )
    promotion_slo_rollback_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Highest acceptable share of deployments here that are rollbacks (%); blank: no target.",
    )
    drift_warning_builds = models.PositiveIntegerField(
        default=20, help_text="Warn when this environment is more builds behind the one before."
    )
    drift_alert_builds = models.PositiveIntegerField(
        default=20,
        help_text="Alert (board, matrix, Slack, audit log) when this environment is more builds behind the first "
        "environment of the pipeline (develop); 0: never.",
    )

    # How to reach what runs here. `{service}` and `{environment}` are filled in.
    values_path_template = models.CharField(
        max_length=255,
        default="helm/{service}/values-{environment}.yaml",
        help_text="Helm values file in the GitOps repo.",
    )
    argocd_app_template = models.CharField(max_length=255, default="{service}-{environment}")
    delivery_mode = models.CharField(
        max_length=20,
        choices=DeliveryMode.choices,
        default=DeliveryMode.DIRECT,
        help_text="Direct commit pushes to the branch Argo CD follows; pull request opens one on GitHub "
        "(GITOPS_GITHUB_*) whose approving reviews count with the portal's approvals, merged at quorum.",
    )
    branch_name = models.CharField(
        max_length=50,
        blank=True,
        validators=[slug_validator],
        help_text='The environment\'s name in pull-request branches, e.g. "prod" for promote/nexo-be-prod-2026.02.1; '
        "blank: its name.",
    )
    pull_request_labels = models.JSONField(
        default=list, blank=True, help_text='Labels of its pull requests, e.g. ["production-deploy"].'
    )
    pull_request_reviewer_teams = models.JSONField(
        default=list,
        blank=True,
        help_text='GitHub team slugs asked to review its pull requests, e.g. ["sre-team", "platform-leads"].',
    )
    argocd_auto_sync = models.BooleanField(
        default=False, help_text="The Argo CD application syncs by itself: only refresh and wait, never trigger a sync."
    )
    prometheus_query_template = models.TextField(
        blank=True,
        help_text="Instant query returning the error rate as a ratio; blank means not configured. Write the "
        "range of rate() as [{range}]: the portal fills it with how long the deployment being verified has been "
        "healthy (at least VERIFICATION_MIN_RANGE_SECONDS, 30s by default; at most 5m, or the most you write as "
        "{range:10m}), so no sample measures the release before it. With a fixed range such as [5m], error-rate "
        "samples wait until the deployment has been healthy that long.",
    )
    health_url_templates = models.TextField(
        blank=True, help_text="Health and smoke URLs that must answer 2xx, one per line."
    )
    dashboard_url_template = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_url_template],
        help_text="A dashboard of a service here, linked from its promotions (http or https), e.g. "
        "https://grafana.example.com/d/svc?var-service={service}&var-env={environment}; blank: no link.",
    )

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=SLUG_PATTERN), name="environment_name_is_slug"),
            models.CheckConstraint(
                condition=Q(error_rate_threshold__gte=0) & Q(error_rate_threshold__lte=1),
                name="environment_error_rate_threshold_is_ratio",
            ),
            models.CheckConstraint(
                condition=Q(verification_window__gte=timedelta(0)), name="environment_window_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(rollback_verification_window__gte=timedelta(0)),
                name="environment_rollback_window_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(verification_window__lte=MAX_SOAK, rollback_verification_window__lte=MAX_SOAK),
                name="environment_windows_at_most_366_days",
            ),
            models.CheckConstraint(
                condition=Q(dashboard_url_template="") | Q(dashboard_url_template__iregex=HTTP_URL_REGEX),
                name="environment_dashboard_url_is_http",
            ),
        ]

    def __str__(self):
        return self.name

    def previous(self):
        """The environment before this one in the pipeline (asked once per instance)."""
        if not hasattr(self, "_previous"):
            self._previous = Environment.objects.filter(position__lt=self.position).order_by("-position").first()
        return self._previous

    def next(self):
        return Environment.objects.filter(position__gt=self.position).order_by("position").first()

    @property
    def delivers_by_pull_request(self):
        return self.delivery_mode == DeliveryMode.PULL_REQUEST

    def clean(self):
        for field in ("pull_request_labels", "pull_request_reviewer_teams"):
            names = getattr(self, field)
            if not isinstance(names, list) or not all(isinstance(name, str) and name.strip() for name in names):
                raise ValidationError({field: 'A list of names, e.g. ["production-deploy"].'})
        errors = {}
        template = self.prometheus_query_template
        query_errors = prometheus.range_placeholder_errors(template) or query_soak_errors(template, self.soak_windows())
        if query_errors:
            errors["prometheus_query_template"] = query_errors
        if interval_errors := self._sample_interval_errors():
            errors["sample_interval_seconds"] = interval_errors
        if target_errors := self._promotion_target_errors():
            errors["promotion_slo_minutes"] = target_errors
        for field, name, window in self._soak_fields():
            if needs := [sentence for need in _soak_needs for sentence in need([(name, window)])]:
                errors[field] = needs
        if errors:
            raise ValidationError(errors)

    def _sample_interval_errors(self):
        interval = self.sample_interval_seconds
        if not interval:
            return []  # the field's own validator says so
        return [
            f"A sample every {interval} seconds is longer than the {name} ({prometheus.describe_duration(window)}): "
            "a soak would be judged on the round taken as it starts, when the deployment has just become healthy, "
            f"and the one at its verdict. Sample at most every {int(window.total_seconds())} seconds, or lengthen "
            f"the {name}."
            for name, window in self.soak_windows()
            # A zero window is no soak: one round decides at once, whatever the interval.
            if window is not None and timedelta(0) < window < timedelta(seconds=interval)
        ]

    def _promotion_target_errors(self):
        target = self.promotion_slo_minutes
        if not target:
            return []  # the field's own validator says so
        return [
            f"A target of {target} min is no longer than the {name} ({prometheus.describe_duration(window)}): the "
            "target counts the soak, and the approval, commit and sync before it, so every promotion here would "
            "miss it. Make the target longer than the soak, with time for the rest (production's is 60 min beside "
            f"its 30-minute soak), or shorten the {name}."
            for name, window in self.soak_windows()
            if window is not None and timedelta(minutes=target) <= window
        ]

    def soak_windows(self):
        """The soaks a promotion into this environment may have, named for people."""
        return [(name, window) for _, name, window in self._soak_fields()]

    def _soak_fields(self):
        return [
            ("verification_window", "soak window", self.verification_window),
            ("rollback_verification_window", "rollback soak", self.rollback_verification_window),
        ]

    def active_freeze(self, at=None):
        """The freeze in force (the one ending last), or None; read from `with_active_freeze()` when loaded so."""
        if at is None and "frozen_until" in self.__dict__:
            if self.frozen_until is None:
                return None
            return ChangeFreeze(environment=self, ends_at=self.frozen_until, reason=self.freeze_reason)
        return self.freezes.active(at).order_by("-ends_at").first()


class ChangeFreezeQuerySet(models.QuerySet):
    def active(self, at=None):
        at = at or timezone.now()
        return self.filter(starts_at__lte=at, ends_at__gt=at)


class ChangeFreeze(models.Model):
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="freezes")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = ChangeFreezeQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="freeze_ends_after_it_starts"),
            models.CheckConstraint(condition=~Q(reason=""), name="freeze_has_reason"),
        ]

    def __str__(self):
        return (
            f"{self.environment} frozen {self.starts_at:%Y-%m-%d %H:%M} → {self.ends_at:%Y-%m-%d %H:%M}: {self.reason}"
        )

    def audit(self, action, actor, *, moved_from=None):
        """Record that someone created, changed or deleted this freeze: freezes decide who may deploy.

        `moved_from`: the environment it froze before a change moved it, which it no longer holds."""
        data = {"freeze": self.pk, "starts_at": self.starts_at, "ends_at": self.ends_at, "reason": self.reason}
        if moved_from:
            data["moved_from"] = moved_from
        audit_log.record(
            action,
            actor=actor,
            environment=self.environment.name,
            message=(
                f"{self.environment.name} frozen {self.starts_at:%Y-%m-%d %H:%M} → "
                f"{self.ends_at:%Y-%m-%d %H:%M}: {self.reason}" + (f" (moved from {moved_from})" if moved_from else "")
            ),
            data=data,
        )

    def clean(self):
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "A freeze must end after it starts."})
