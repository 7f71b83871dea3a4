"""The promotion board: every service × environment, what runs there, what waits, what you may do.

Built in a fixed number of queries whatever the number of services and releases: the
environments (with their groups and any freeze), the filter choices, the services shown (each
with its newest release and the newest release verified in every environment, as subqueries that
walk the release index newest first), the current deployments (each with the number of newer
releases, which gives "builds behind"), the promotions waiting or recently stopped with their
approvals, and the candidate releases. Whether an action is allowed is asked of `policy`.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from environments.models import ChangeFreeze, Environment

from . import policy
from .models import (
    Approval,
    ApprovalDecision,
    Deployment,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    Release,
    Service,
    StepStatus,
)

# A rejected, cancelled or failed attempt that never ran stays visible this long.
RECENTLY_STOPPED = timedelta(days=1)
STOPPED_STATES = [PromotionState.REJECTED, PromotionState.CANCELLED, PromotionState.FAILED]

HEALTH_TONES = {"Healthy": "ok", "Progressing": "info", "Suspended": "warn", "Degraded": "bad", "Missing": "bad"}

WAITING_LABELS = {
    PromotionState.APPROVED: "approved, commit queued",
    PromotionState.COMMITTING: "committing",
    PromotionState.COMMITTED: "committed, sync next",
    PromotionState.SYNCING: "syncing",
}


@dataclass
class Badge:
    label: str
    tone: str = ""
    title: str = ""


@dataclass
class Action:
    kind: str
    label: str
    url: str
    why_not: str = ""
    tone: str = ""

    @property
    def allowed(self):
        return not self.why_not


@dataclass
class Cell:
    service: Service
    environment: Environment
    previous: Environment | None
    deployment: Deployment | None = None
    newer_releases: int | None = None
    builds_behind: int | None = None
    drift: Badge | None = None
    health: Badge | None = None
    verification: Badge | None = None
    soak_percent: int | None = None
    waiting: Promotion | None = None
    waiting_label: str = ""
    stopped: Promotion | None = None
    stopped_label: str = ""
    candidate: Release | None = None
    hold_reason: str = ""
    age: str = ""
    actions: list = field(default_factory=list)

    @property
    def release(self):
        return self.deployment.release if self.deployment else None


@dataclass
class Row:
    service: Service
    cells: list


@dataclass
class Board:
    environments: list
    rows: list
    teams: list
    service_names: list
    team: str
    service: str
    argocd_configured: bool
    now: object
    filter_query: str

    @property
    def is_filtered(self):
        return bool(self.team or self.service)


def short_age(moment, now):
    """'just now', '12 min ago', '5 h ago', '3 d ago': compact enough for a cell."""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def short_duration(delta):
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# --- queries ----------------------------------------------------------------------------------


def _newest_release(environment=None):
    """The newest release of the outer service, or the newest verified in `environment`.

    Walks the (service, -year, -month, -build) index newest first and stops at the first match,
    so it costs a few index probes however long the history is.
    """
    releases = Release.objects.filter(service=OuterRef("pk")).order_by("-year", "-month", "-build")
    if environment is not None:
        verified_there = Promotion.objects.filter(
            release=OuterRef("pk"), environment=environment, state=PromotionState.VERIFIED
        )
        releases = releases.filter(Exists(verified_there))
    return Subquery(releases.values("pk")[:1])


def _newer_release_count():
    """How many releases of the deployment's service are newer than the one deployed."""
    year, month, build = OuterRef("release__year"), OuterRef("release__month"), OuterRef("release__build")
    newer = (
        # year >= the deployed year is implied by the condition; said separately, it bounds the index scan.
        Release.objects.filter(service=OuterRef("service"), year__gte=year)
        .filter(Q(year__gt=year) | Q(year=year, month__gt=month) | Q(year=year, month=month, build__gt=build))
        .order_by()
        .values("service")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Coalesce(Subquery(newer[:1]), Value(0))


def _environments(now):
    active_freeze = ChangeFreeze.objects.active(now).filter(environment=OuterRef("pk")).order_by("-ends_at")
    return list(
        Environment.objects.in_pipeline_order()
        .prefetch_related("approver_groups", "requester_groups")
        .annotate(
            frozen_until=Subquery(active_freeze.values("ends_at")[:1]),
            freeze_reason=Subquery(active_freeze.values("reason")[:1]),
        )
    )


def freeze_message(environment, ends_at, reason):
    """Why a request into a frozen environment is refused, as `transitions` says it."""
    return f"{environment.name} is frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: {reason}."


def busy_refusal(promotion):
    """Why nothing else may be requested while `promotion` is past approval, as `transitions` says it."""
    return (
        f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name} is already "
        f"{promotion.get_state_display().lower()} (promotion #{promotion.pk}); wait for it to finish."
    )


def build_board(user, *, team="", service="", now=None):
    now = now or timezone.now()
    environments = _environments(now)
    choices = list(Service.objects.order_by("name").values_list("name", "team__name"))
    teams = sorted({team_name for _, team_name in choices if team_name})
    service_names = [name for name, _ in choices]

    services = Service.objects.select_related("team").annotate(
        newest_release_id=_newest_release(),
        **{f"verified_in_{environment.pk}": _newest_release(environment) for environment in environments[:-1]},
    )
    if team:
        services = services.filter(team__name=team)
    if service:
        services = services.filter(name=service)
    services = list(services)
    service_ids = [s.pk for s in services]

    deployments = {
        (d.service_id, d.environment_id): d
        for d in Deployment.objects.current()
        .filter(service_id__in=service_ids)
        .select_related("release", "promotion")
        .annotate(
            newer_releases=_newer_release_count(),
            hold_reason=Subquery(
                Hold.objects.active()
                .filter(service=OuterRef("service"), environment=OuterRef("environment"))
                .values("reason")[:1]
            ),
        )
    }

    waiting, stopped = {}, {}
    promotions = (
        Promotion.objects.filter(service_id__in=service_ids)
        .filter(
            Q(state__in=PromotionState.active())
            | Q(state__in=STOPPED_STATES, deployed_at__isnull=True, finished_at__gte=now - RECENTLY_STOPPED)
        )
        .select_related("release", "requested_by")
        .prefetch_related(Prefetch("approvals", queryset=Approval.objects.select_related("user")))
        .order_by("finished_at")
    )
    for promotion in promotions:
        place = (promotion.service_id, promotion.environment_id)
        if promotion.is_active:
            waiting[place] = promotion
        else:
            stopped[place] = promotion  # ordered by finished_at: the latest one wins

    candidate_ids = {
        getattr(s, attribute)
        for s in services
        for attribute in ["newest_release_id"] + [f"verified_in_{e.pk}" for e in environments[:-1]]
    }
    candidates = {r.pk: r for r in Release.objects.filter(pk__in=candidate_ids - {None}).defer("changelog")}

    filters = urlencode({key: value for key, value in (("team", team), ("service", service)) if value})
    back_to = reverse("releases:board") + (f"?{filters}" if filters else "")
    builder = _CellBuilder(user, now, environments, deployments, waiting, stopped, candidates, back_to)
    rows = [Row(s, [builder.cell(s, index) for index in range(len(environments))]) for s in services]
    return Board(
        environments=environments,
        rows=rows,
        teams=teams,
        service_names=service_names,
        team=team,
        service=service,
        argocd_configured=bool(settings.ARGOCD_URL),
        now=now,
        filter_query=filters,
    )


# --- cells --------------------------------------------------------------------------------------


class _CellBuilder:
    def __init__(self, user, now, environments, deployments, waiting, stopped, candidates, back_to):
        self.user = user
        # Every confirmation returns to the board as it was filtered.
        self.next_query = urlencode({"next": back_to})
        self.now = now
        self.environments = environments
        self.environments_by_id = {e.pk: e for e in environments}
        self.deployments = deployments
        self.waiting = waiting
        self.stopped = stopped
        self.candidates = candidates
        self.argocd_configured = bool(settings.ARGOCD_URL)

    def cell(self, service, index):
        environment = self.environments[index]
        previous = self.environments[index - 1] if index else None
        place = (service.pk, environment.pk)
        cell = Cell(service=service, environment=environment, previous=previous)

        deployment = self.deployments.get(place)
        if deployment:
            deployment.service = deployment.release.service = service
            cell.deployment = deployment
            cell.newer_releases = deployment.newer_releases
            cell.hold_reason = deployment.hold_reason or ""
            cell.age = short_age(deployment.deployed_at, self.now)
            cell.health = self._health(deployment)
            cell.verification, cell.soak_percent = self._verification(deployment)
            if previous:
                cell.drift = self._drift(cell, self.deployments.get((service.pk, previous.pk)))

        waiting = self.waiting.get(place)
        if waiting and waiting.state in (PromotionState.DEPLOYED, PromotionState.VERIFYING):
            waiting = None  # it runs here already: the deployment shows its soak
        if waiting:
            self._attach(waiting, service, environment)
            cell.waiting, cell.waiting_label = waiting, self._waiting_label(waiting)
        stopped = self.stopped.get(place)
        if stopped and not waiting:
            self._attach(stopped, service, environment)
            cell.stopped, cell.stopped_label = stopped, self._stopped_label(stopped)

        candidate_id = getattr(service, f"verified_in_{previous.pk}") if previous else service.newest_release_id
        candidate = self.candidates.get(candidate_id)
        if candidate and (deployment is None or candidate.calver > deployment.release.calver):
            candidate.service = service
            cell.candidate = candidate
        cell.actions = self._actions(cell, waiting)
        return cell

    def _attach(self, promotion, service, environment):
        # The board's own objects carry the prefetched groups the policy reads.
        promotion.service = promotion.release.service = service
        promotion.environment = environment

    # --- what the cell says

    def _health(self, deployment):
        if not self.argocd_configured:
            return None  # the board says so once, above the table
        if not deployment.health:
            return Badge("health unknown", "warn", "Argo CD has not reported health for this deployment yet")
        checked = timezone.localtime(deployment.health_checked_at) if deployment.health_checked_at else None
        title = f"Argo CD health, checked {checked:%Y-%m-%d %H:%M}" if checked else "Argo CD health"
        return Badge(deployment.health, HEALTH_TONES.get(deployment.health, "warn"), title)

    def _verification(self, deployment):
        promotion = deployment.promotion
        if promotion is None:
            return Badge("not verified here", "", "Imported from GitOps history: the portal did not verify it"), None
        state = promotion.state
        if state == PromotionState.VERIFYING and promotion.verdict_at:
            window = promotion.verdict_at - promotion.verification_started_at
            elapsed = self.now - promotion.verification_started_at
            left = promotion.verdict_at - self.now
            percent = 100 if window.total_seconds() <= 0 else min(100, int(100 * elapsed / window))
            label = f"soaking, {short_duration(left)} left" if left.total_seconds() > 0 else "soak over, verdict next"
            return Badge(label, "info", f"Verdict at {timezone.localtime(promotion.verdict_at):%H:%M:%S}"), percent
        if state == PromotionState.DEPLOYED:
            return Badge("verification starting", "info"), None
        if state == PromotionState.VERIFIED:
            if promotion.verification_status == StepStatus.NOT_CONFIGURED:
                return Badge("verified (nothing checked)", "warn", "No check was configured: the soak was only a timer"), None
            return Badge("verified", "ok"), None
        if state == PromotionState.FAILED:
            return Badge(f"failed at {promotion.failed_step or 'an unknown step'}", "bad", promotion.error[:300]), None
        if state == PromotionState.ROLLED_BACK:
            return Badge("rolled back", "bad"), None
        return Badge(promotion.get_state_display().lower()), None

    def _drift(self, cell, previous_deployment):
        if previous_deployment is None:
            return None
        behind = cell.newer_releases - previous_deployment.newer_releases
        cell.builds_behind = behind
        if behind == 0:
            return None
        if behind < 0:
            return Badge(f"ahead of {cell.previous.name}", "", f"{-behind} builds newer than {cell.previous.name}")
        builds = "build" if behind == 1 else "builds"
        threshold = cell.environment.drift_warning_builds
        tone = "warn" if behind > threshold else ""
        title = f"{cell.previous.name} runs {previous_deployment.release.version}" + (
            f"; more than {threshold} builds behind is worth a promotion" if tone else ""
        )
        return Badge(f"{behind} {builds} behind {cell.previous.name}", tone, title)

    def _waiting_label(self, promotion):
        if promotion.state == PromotionState.AWAITING_APPROVAL:
            return f"awaiting approval {policy.approvals_given(promotion)}/{policy.approvals_required(promotion)}"
        return WAITING_LABELS.get(promotion.state, promotion.get_state_display().lower())

    def _stopped_label(self, promotion):
        when = short_age(promotion.finished_at, self.now)
        if promotion.state == PromotionState.REJECTED:
            rejections = [a for a in promotion.approvals.all() if a.decision == ApprovalDecision.REJECT]
            who = f" by {rejections[0].user.get_username()}" if rejections else ""
            return f"rejected{who} {when}"
        if promotion.state == PromotionState.FAILED:
            return f"failed at {promotion.failed_step} {when}"
        return f"cancelled {when}"

    # --- what the user may do here

    def _actions(self, cell, waiting):
        user, service, environment = self.user, cell.service, cell.environment
        actions = []
        if waiting and waiting.state == PromotionState.AWAITING_APPROVAL:
            actions.append(
                self._action("approve", "Approve", "releases:approve", [waiting.pk], policy.why_not_approve(waiting, user), "primary")
            )
            if not policy.why_not_reject(waiting, user):
                actions.append(self._action("reject", "Reject", "releases:reject", [waiting.pk], tone="danger"))
        if waiting and not policy.why_not_cancel(waiting, user):
            actions.append(self._action("cancel", "Cancel request", "releases:cancel", [waiting.pk]))

        busy = busy_refusal(waiting) if waiting and waiting.state != PromotionState.AWAITING_APPROVAL else ""
        # A frozen environment that allows break-glass still offers the request: its confirmation says so.
        frozen = ""
        if environment.frozen_until and not environment.allows_break_glass:
            frozen = freeze_message(environment, environment.frozen_until, environment.freeze_reason)
        candidate = cell.candidate
        if candidate and not (waiting and waiting.release_id == candidate.pk):
            why_not = busy or policy.why_not_request(user, service, environment) or frozen
            args = [service.name, environment.name, candidate.version]
            actions.append(self._action("request", f"Promote {candidate.version}", "releases:request", args, why_not, "primary"))

        # Rolling back is offered only to those who may request here, and only over what the portal deployed.
        deployment = cell.deployment
        if deployment and deployment.promotion_id and not policy.why_not_request(user, service, environment):
            actions.append(
                self._action("rollback", "Roll back…", "releases:rollback", [service.name, environment.name], busy, "quiet")
            )
        return actions

    def _action(self, kind, label, url_name, args, why_not=None, tone=""):
        return Action(kind, label, f"{reverse(url_name, args=args)}?{self.next_query}", why_not or "", tone)
