"""The promotion board: every service × environment, what runs there, what waits, what you may do.

A read model built for the page people keep open all day. Its cost does not grow with the
number of releases, and its query count does not grow with the number of services:

1. the environments, with any active freeze;  2–3. their approver and requester groups;
4. every service (the filter choices), with — for the services shown — the newest release and
   the newest release verified in each environment (and any CI result that failed there since), as
   subqueries that walk the release index newest first and stop at the first match;
5. the current deployments, each with its release, the number of newer releases (an index-only
   range scan, which gives "builds behind") and how it was verified (and any CI result that failed
   since);
6–7. the promotions waiting or recently stopped, with their approvals (and, for a step under way,
   its open run and the last one that ended: why it is tried again);
8. the user's groups, read once by `policy`.

Per-row details come back as small JSON objects from correlated subqueries: an index probe per
row, never a long list of ids, and tuples rather than model instances for the bulk. Whether an
action is allowed is asked of `policy`; the reason for a refusal is given by the action's
confirmation, which the unavailable button opens.

A row's cells are worked out only when its rendering is not kept already: `_CellBuilder.row_key`
says everything a row shows depends on, and the page keeps rows by it (board_cells.board_rows).
Whatever a cell comes to read must enter that key too.
"""

import json
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, cached_property, lru_cache
from operator import attrgetter
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import (
    Aggregate,
    Case,
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    JSONField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Coalesce, JSONObject
from django.db.models.lookups import GreaterThan
from django.urls import reverse
from django.utils import timezone

from environments.models import Environment
from nexo_portal.lib.dates import exact_time

from . import drift, policy, slo, steps, verification
from .actions import decision_actions, lift_action, request_action, rollback_action
from .models import (
    Approval,
    ApprovalDecision,
    CheckResult,
    Deployment,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    Release,
    RunStatus,
    Service,
    StepRun,
    StepStatus,
)

# A rejected, cancelled or failed attempt that never ran, or one rolled back, stays visible this long.
RECENTLY_STOPPED = timedelta(days=1)
STOPPED_STATES = [PromotionState.REJECTED, PromotionState.CANCELLED, PromotionState.FAILED]

HEALTH_TONES = {"Healthy": "ok", "Progressing": "info", "Suspended": "warn", "Degraded": "bad", "Missing": "bad"}

WAITING_LABELS = {
    PromotionState.APPROVED: "approved, commit queued",
    PromotionState.COMMITTING: "committing",
    PromotionState.COMMITTED: "committed, sync next",
    PromotionState.SYNCING: "syncing",
}

# Where a freeze that began after the approval holds the GitOps commit (jobs.commit_promotion).
HELD_BY_FREEZE_STATES = (PromotionState.APPROVED, PromotionState.COMMITTING)

# A step run that went wrong, tried again (what the promotion page lists), for a cell saying why it waits.
Trouble = namedtuple("Trouble", "words error next_try")

DeployedRow = namedtuple(
    "DeployedRow",
    "service_id environment_id promotion_id deployed_at health health_checked_at drifted_tag "
    "release verification drifted_tag_committed_by",
)
VerificationRow = namedtuple("VerificationRow", "state status failed_step error soak_started soak_ends failing")
# The promotion whose commit the values file holds where it differs from what runs (drift.portal_commit).
CommittedRow = namedtuple("CommittedRow", "pk kind state failed_step applied_health")
# A CI result that counts and failed (_failing_checks): what a cell says when a verdict no longer holds.
FailedCheck = namedtuple("FailedCheck", "name summary url passed", defaults=(False,))


class ReleaseRow(namedtuple("ReleaseRow", "pk version year month build newer failing")):
    __slots__ = ()

    @property
    def calver_key(self):
        return (self.year, self.month, self.build)


@dataclass
class Badge:
    label: str
    tone: str = ""
    title: str = ""


@dataclass
class Cell:
    """Everything one cell shows, worked out in Python so the page only prints it."""

    environment: Environment
    place: str = ""  # "service-environment": what identifies the cell across refreshes
    version: str = ""
    release_url: str = ""
    deployed_iso: str = ""
    deployed_exact: str = ""
    age: str = ""
    health: Badge | None = None
    verification: Badge | None = None
    failure_reason: str = ""  # why what runs failed, where nothing else in the cell says it
    soak_percent: int | None = None
    builds_behind: int | None = None
    drift: Badge | None = None
    builds_behind_first: int | None = None
    far_behind: Badge | None = None
    far_behind_in_drift: bool = False  # the drift line says it: the environment before is the first
    overdue: Badge | None = None
    gitops_tag: str = ""
    gitops_tag_promotion: int | None = None  # whose commit wrote it, when the portal's own
    gitops_file: Badge | None = None  # what the values file says where it differs from what runs
    gitops_file_url: str = ""
    hold_reason: str = ""
    hold_url: str = ""
    waiting: Promotion | None = None
    waiting_url: str = ""
    waiting_label: str = ""
    waiting_title: str = ""
    stopped: Promotion | None = None
    stopped_url: str = ""
    stopped_label: str = ""
    candidate: ReleaseRow | None = None
    actions: list = field(default_factory=list)


@dataclass
class BoardRow:
    """A service's row. Its cells are worked out when first read: a page whose row is rendered
    already (`key`, board_cells.board_rows) does not need them."""

    service: Service
    builder: "_CellBuilder" = field(repr=False)

    @cached_property
    def cells(self):
        return self.builder.cells(self.service)

    @property
    def filter_url(self):
        """The board filtered to this service."""
        return f"{self.builder.board_url}?{urlencode({'service': self.service.name})}"

    @cached_property
    def key(self):
        """Everything the row shows depends on, for reusing it as rendered (see `_CellBuilder.row_key`)."""
        return self.builder.row_key(self.service)

    @property
    def has_something_to_do(self):
        """Whether the reader may take any action in this row."""
        return any(action.allowed for cell in self.cells for action in cell.actions)


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
    todo: bool = False
    hidden: int = 0
    # What waits for the reader (policy.may_decide), when the board shows every service; else None.
    waiting_for_reader: list | None = None

    @property
    def is_filtered(self):
        return bool(self.team or self.service or self.todo)


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


def stopped_label(promotion, now):
    """How a promotion that did not run its course ended, for a cell: "rejected by sam 5 min ago"."""
    when = short_age(promotion.finished_at, now)
    if promotion.state == PromotionState.REJECTED:
        rejections = [a for a in policy.approvals_of(promotion) if a.decision == ApprovalDecision.REJECT]
        who = f" by {rejections[0].user.get_username()}" if rejections else ""
        return f"rejected{who} {when}"
    if promotion.state == PromotionState.FAILED and promotion.applied_health:
        # Its manifests run there, unhealthy: not a failure that left the place as it was.
        return f"{'rollback ' if promotion.is_rollback else ''}applied, came up {promotion.applied_health} {when}"
    if promotion.state == PromotionState.FAILED:
        return f"failed at {promotion.failed_step} {when}"
    if promotion.state == PromotionState.ROLLED_BACK:
        return f"rolled back {short_age(promotion.updated_at, now)}"
    return f"cancelled {when}"


def short_duration(delta):
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# --- queries ----------------------------------------------------------------------------------


class RowValue(Func):
    """A row value such as (year, month, build): compared as one, the database walks an index by range."""

    template = "(%(expressions)s)"
    output_field = IntegerField()


def calver_key(reference=F):
    return RowValue(*(reference(part) for part in ("year", "month", "build")))


RELEASE_COLUMNS = {"pk": "pk", "version": "version", "year": "year", "month": "month", "build": "build"}


class JSONArrayAgg(Aggregate):
    """The rows of a subquery as one JSON array, read as text like the board's other JSON (jsonb, which
    the PostgreSQL backend loads as text; SQLite's own function for the demo)."""

    function = "JSONB_AGG"
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="JSON_GROUP_ARRAY", **extra_context)


def _failing_checks(release, environment):
    """The failed CI results that count (CheckResult.counting) of a release in an environment, as a JSON
    array, or NULL: almost always NULL, an index probe. Those of checks the environment requires say its
    verdict there no longer holds (verification.failed_required)."""
    failing = (
        CheckResult.objects.filter(release=release, environment=environment, passed=False)
        .counting()
        .order_by()
        .values("release")
        .annotate(json=JSONArrayAgg(JSONObject(name="name", summary="summary", url="url")))
        .values("json")
    )
    return Subquery(failing[:1], output_field=TextField())


def _newest_release(environment_id=None):
    """The newest release of the outer service, or the newest verified in that environment (with the CI
    results that failed there since: it may not go on while one is of a required check), as JSON.

    Walks the (service, year, month, build) index newest first and stops at the first match,
    so it costs a few index probes however long the history is.
    """
    releases = Release.objects.filter(service=OuterRef("pk")).order_by("-year", "-month", "-build")
    columns = RELEASE_COLUMNS
    if environment_id is not None:
        verified_there = Promotion.objects.filter(
            release=OuterRef("pk"), environment_id=environment_id, state=PromotionState.VERIFIED
        )
        releases = releases.filter(Exists(verified_there))
        columns = {**columns, "failing": _failing_checks(OuterRef("pk"), environment_id)}
    return Subquery(releases.values(json=JSONObject(**columns))[:1], output_field=TextField())


def newer_release_count():
    """How many releases of the outer release's service are newer than it: an index-only range scan."""
    newer = (
        Release.objects.filter(GreaterThan(calver_key(), calver_key(OuterRef)), service=OuterRef("service"))
        .order_by()
        .values("service")
        .annotate(count=Count("*"))
        .values("count")
    )
    return Coalesce(Subquery(newer[:1]), Value(0))


def _deployed_release():
    """The deployment's release, with how many releases are newer (for "builds behind"), as JSON."""
    release = Release.objects.filter(pk=OuterRef("release_id")).order_by()  # no default ordering: no join
    return Subquery(
        release.values(json=JSONObject(**RELEASE_COLUMNS, newer=newer_release_count())), output_field=TextField()
    )


def _verification():
    """How the deployment was verified, as JSON; the soak times only while it soaks, and once verified the CI
    results that failed since."""
    soaking = Q(state=PromotionState.VERIFYING)
    promotion = Promotion.objects.filter(pk=OuterRef("promotion_id")).order_by()
    return Subquery(
        promotion.values(
            json=JSONObject(
                state="state",
                status="verification_status",
                failed_step="failed_step",
                error=Case(
                    When(state=PromotionState.FAILED, then="error"), default=Value(""), output_field=TextField()
                ),
                soak_started=Case(When(soaking, then="verification_started_at")),
                soak_ends=Case(When(soaking, then="verdict_at")),
                failing=Case(
                    When(
                        state=PromotionState.VERIFIED,
                        then=_failing_checks(OuterRef("release_id"), OuterRef("environment_id")),
                    )
                ),
            )
        ),
        output_field=TextField(),
    )


def _committed_by():
    """The promotion whose commit the deployment's values file holds, where the portal's own (a sync that
    failed) differs from what runs, as JSON, or NULL."""
    promotion = Promotion.objects.filter(pk=OuterRef("drifted_tag_committed_by"))
    return Subquery(
        promotion.values(json=JSONObject(**{name: name for name in CommittedRow._fields}))[:1],
        output_field=TextField(),
    )


def _hold_in(environment_id):
    """The outer service's active hold in that environment, as JSON ({"pk", "reason"}), or NULL.

    Read with the services, not with the deployments: a place where nothing was ever deployed (a
    new service whose first sync failed) may be held too, and its cell must say so and offer the lift.
    """
    hold = Hold.objects.active().filter(service=OuterRef("pk"), environment_id=environment_id).order_by("pk")
    return Subquery(hold.values(json=JSONObject(pk="pk", reason="reason"))[:1], output_field=TextField())


def _only_when(shown, expression):
    # CASE evaluates its subquery only for the rows it is true for: services filtered out cost nothing.
    return Case(When(shown, then=expression)) if shown else expression


def _environments(now):
    return list(
        Environment.objects.in_pipeline_order()
        .prefetch_related("approver_groups", "requester_groups")
        .with_active_freeze(now)
    )


def _shown(team, service, prefix="", only=None):
    """The services shown, as a condition (empty: all of them) rather than a long list of ids.

    `only`: the ids of the services the reader may see at all (None: every service).
    """
    shown = Q()
    if only is not None:
        shown &= Q(**{f"{prefix}pk__in": sorted(only)})
    if team:
        shown &= Q(**{f"{prefix}team__name": team})
    if service:
        shown &= Q(**{f"{prefix}name": service})
    return shown


# Building the board's two big querysets (correlated subqueries, JSON objects) costs the portal more
# CPU than reading their rows: ~5 ms a board. They depend only on the environments and the filter,
# so a process builds each shape once and runs a fresh copy of it (.all()) for every board.


def _services(environments, shown):
    return list(_services_query(tuple(environment.pk for environment in environments), shown).all())


@lru_cache(maxsize=64)
def _services_query(environment_ids, shown):
    annotations = {"newest_release": _only_when(shown, _newest_release())}
    for environment_id in environment_ids[:-1]:
        annotations[f"verified_in_{environment_id}"] = _only_when(shown, _newest_release(environment_id))
    for environment_id in environment_ids:
        annotations[f"hold_in_{environment_id}"] = _only_when(shown, _hold_in(environment_id))
    if shown:
        annotations["shown"] = Case(When(shown, then=Value(True)), default=Value(False))
    return Service.objects.select_related("team").order_by("name").annotate(**annotations)


def _moment(text):
    """A timestamp read back from JSON (PostgreSQL writes an offset, SQLite naive UTC)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@lru_cache(maxsize=8192)
def _release_row(text):
    # Read as text and decoded here: json.loads is several times cheaper than a JSONField per row,
    # and a board reads the same ~1,600 texts each time (releases are immutable; "newer" is in the text).
    data = json.loads(text)
    return ReleaseRow(
        data["pk"],
        data["version"],
        data["year"],
        data["month"],
        data["build"],
        data.get("newer"),
        _failed_checks(data.get("failing")),
    )


def _failed_checks(failing):
    """The failed results of `_failing_checks`, as a tuple (rows are hashed: row_key)."""
    if isinstance(failing, str):  # SQLite nests a subquery's JSON as text
        failing = json.loads(failing)
    return tuple(FailedCheck(check["name"], check["summary"], check["url"]) for check in failing or ())


def _deployments(shown):
    """The current deployments, each with its release and how it was verified: one query, no id list.

    Correlated subqueries rather than joins: each is an index probe per deployment, where a join
    lets the planner hash whole tables of history.
    """
    rows = _deployments_query(shown).all()
    deployments = {}
    # Most deployments were verified alike ("verified", checks passed): each distinct text is read once.
    verifications = {None: None}
    for *fields, release, verified, committed_by in rows:
        if verified not in verifications:
            verifications[verified] = _verification_row(verified)
        committed_by = CommittedRow(**json.loads(committed_by)) if committed_by else None
        deployment = DeployedRow(*fields, _release_row(release), verifications[verified], committed_by)
        deployments[(deployment.service_id, deployment.environment_id)] = deployment
    return deployments


@lru_cache(maxsize=64)
def _deployments_query(shown):
    return (
        Deployment.objects.current()
        .filter(shown)
        .annotate(
            release_json=_deployed_release(),
            verification_json=_verification(),
            committed_by_json=_committed_by(),
        )
        .order_by()
        .values_list(*DeployedRow._fields[:-3], "release_json", "verification_json", "committed_by_json")
    )


def _verification_row(text):
    data = json.loads(text)
    return VerificationRow(
        data["state"],
        data["status"],
        data["failed_step"],
        data["error"],
        _moment(data["soak_started"]),
        _moment(data["soak_ends"]),
        _failed_checks(data.get("failing")),
    )


def _step_runs():
    """For a promotion whose step a cell says is under way (WAITING_LABELS), as JSON: its open run
    (queued or running: when it runs) and the last run that ended having started (how it ended)."""
    runs = StepRun.objects.filter(promotion=OuterRef("pk")).order_by("-created_at", "-id")
    open_run = runs.filter(status__in=RunStatus.open()).values(json=JSONObject(status="status", run_after="run_after"))
    # A run replaced before it started (a freeze edit woke a commit) is no outcome (steps.consecutive).
    ended = runs.exclude(status__in=RunStatus.open()).exclude(status=RunStatus.DONE, started_at__isnull=True)
    last = ended.values(json=JSONObject(status="status", error="error"))
    under_way = Q(state__in=list(WAITING_LABELS))
    return {
        "open_run": Case(When(under_way, then=Subquery(open_run[:1], output_field=TextField()))),
        "last_run": Case(When(under_way, then=Subquery(last[:1], output_field=TextField()))),
    }


def _open_promotions(shown, now):
    """Per place: the promotion waiting there, and the last one stopped before it ran (rejected…) or
    rolled back."""
    waiting, stopped = {}, {}
    promotions = (
        Promotion.objects.filter(shown)
        .filter(
            Q(state__in=PromotionState.active())
            | Q(state__in=STOPPED_STATES, deployed_at__isnull=True, finished_at__gte=now - RECENTLY_STOPPED)
            | Q(state=PromotionState.ROLLED_BACK, updated_at__gte=now - RECENTLY_STOPPED)
        )
        .annotate(**_step_runs())
        .select_related("release")
        .prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("user"), to_attr=policy.PREFETCHED_APPROVALS)
        )
        .order_by("finished_at")
    )
    for promotion in promotions:
        place = (promotion.service_id, promotion.environment_id)
        if promotion.is_active:
            waiting[place] = promotion
        else:
            stopped[place] = promotion  # ordered by finished_at: the latest one wins
    return waiting, stopped


def build_board(user, *, team="", service="", todo=False, only=None, now=None):
    """The board as `user` sees it; `todo`: only the services where they may do something."""
    now = now or timezone.now()
    environments = _environments(now)
    everything = _services(environments, _shown(team, service, only=only))
    if only is not None:
        everything = [s for s in everything if s.pk in only]
    services = [s for s in everything if getattr(s, "shown", True)]

    deployments = _deployments(_shown(team, service, "service__", only))
    waiting, stopped = _open_promotions(_shown(team, service, "service__", only), now)
    _attach([*waiting.values(), *stopped.values()], everything, environments)

    filters = urlencode(
        {key: value for key, value in (("team", team), ("service", service), ("todo", "1" if todo else "")) if value}
    )
    board_url = reverse("releases:board")
    builder = _CellBuilder(
        user,
        now,
        environments,
        deployments,
        waiting,
        stopped,
        board_url,
        back_to=board_url + (f"?{filters}" if filters else ""),
    )
    rows = [BoardRow(s, builder) for s in services]
    shown_rows = [row for row in rows if row.has_something_to_do] if todo else rows
    waiting_for_reader = None
    if only is None and not team and not service:
        # Every promotion awaiting approval is on this board, with what the rule reads already loaded.
        waiting_for_reader = [
            promotion
            for promotion in waiting.values()
            if promotion.state == PromotionState.AWAITING_APPROVAL and policy.may_decide(promotion, user)
        ]
    return Board(
        environments=environments,
        rows=shown_rows,
        teams=sorted({s.team.name for s in everything if s.team_id}),
        service_names=[s.name for s in everything],
        team=team,
        service=service,
        argocd_configured=bool(settings.ARGOCD_URL),
        now=now,
        filter_query=filters,
        todo=todo,
        hidden=len(rows) - len(shown_rows),
        waiting_for_reader=waiting_for_reader,
    )


def _attach(promotions, services, environments):
    """Give the promotions the board's own services and environments, which carry the prefetched
    groups the policy reads: asking who may decide costs no query."""
    services = {service.pk: service for service in services}
    environments = {environment.pk: environment for environment in environments}
    for promotion in promotions:
        promotion.service = promotion.release.service = services[promotion.service_id]
        promotion.environment = environments[promotion.environment_id]


# --- cells --------------------------------------------------------------------------------------


class _Key:
    """A row's key, hashed once: a kept row is found with two lookups, and a tuple's hash is worked
    out again at each (~3 µs for a row's)."""

    __slots__ = ("hash", "parts")

    def __init__(self, parts):
        self.parts = parts
        self.hash = hash(parts)

    def __hash__(self):
        return self.hash

    def __eq__(self, other):
        return self is other or (isinstance(other, _Key) and self.hash == other.hash and self.parts == other.parts)


def _fingerprint(instance):
    """Every column of a model instance as read, hashable (JSON values as their text)."""
    if instance is None:
        return None
    columns, json_columns = _columns(type(instance))
    values = columns(instance)
    if json_columns:
        values += tuple(json.dumps(value, sort_keys=True, default=str) for value in json_columns(instance))
    return values


@cache
def _columns(model):
    """Getters of a model's columns: the plain ones, and the JSON ones (lists and dicts, not hashable)."""
    fields = model._meta.concrete_fields
    plain = [field.attname for field in fields if not isinstance(field, JSONField)]
    json_fields = [field.attname for field in fields if isinstance(field, JSONField)]
    return _tuple_getter(*plain), _tuple_getter(*json_fields) if json_fields else None


def _tuple_getter(*names):
    """attrgetter that gives a tuple for one name, and for none (a portal with no environment yet), too."""
    if not names:
        return lambda instance: ()
    getter = attrgetter(*names)
    return getter if len(names) > 1 else lambda instance: (getter(instance),)


def _promotion_fingerprint(promotion):
    """A promotion as a cell shows it: its columns, its release's version, its decisions, by whom, and
    its step's runs (`_step_runs`)."""
    if promotion is None:
        return None
    decisions = tuple(
        (_fingerprint(approval), approval.user.get_username()) for approval in policy.approvals_of(promotion)
    )
    runs = (getattr(promotion, "open_run", None), getattr(promotion, "last_run", None))
    return (_fingerprint(promotion), promotion.release.version, decisions, runs)


def trouble(promotion):
    """Why the promotion's step is being tried again, as its page lists it, or None: its last run
    ended as `retry` or `crashed` and another is owed (read with the board, `_step_runs`)."""
    open_run, last_run = getattr(promotion, "open_run", None), getattr(promotion, "last_run", None)
    if not open_run or not last_run:
        return None
    open_run, last_run = json.loads(open_run), json.loads(last_run)
    if last_run["status"] not in (RunStatus.RETRY, RunStatus.CRASHED):
        return None
    next_try = _moment(open_run["run_after"]) if open_run["status"] == RunStatus.QUEUED else None
    return Trouble(steps.trouble_in_words(last_run["status"], last_run["error"]), last_run["error"], next_try)


class _Url:
    """reverse() once; cells fill in their own arguments.

    Service and environment names are slugs and versions are CalVer (digits, lowercase letters,
    dots and hyphens), so the arguments need no quoting.
    """

    def __init__(self, name, *placeholders, query=""):
        # A format string, made once: filling it in is one call per URL instead of a replace() per argument.
        template = (reverse(name, args=placeholders) + query).replace("{", "{{").replace("}", "}}")
        for placeholder in placeholders:
            template = template.replace(str(placeholder), "{}", 1)
        self.template = template

    def __call__(self, *args):
        return self.template.format(*args)


class _CellBuilder:
    def __init__(self, user, now, environments, deployments, waiting, stopped, board_url, back_to):
        self.user = user
        self.now = now
        self.environments = environments
        self.deployments = deployments
        self.waiting = waiting
        self.stopped = stopped
        self.argocd_configured = bool(settings.ARGOCD_URL)
        self.zone = timezone.get_current_timezone()
        self.board_url = board_url
        self.back_to = back_to
        self.services_with_promotions = {service_id for service_id, _ in (*waiting, *stopped)}
        # Each environment's candidate, as the services query annotates it (see cells()).
        self._candidates = _tuple_getter(
            "newest_release", *(f"verified_in_{environment.pk}" for environment in environments[:-1])
        )
        # Each place's active hold, as the services query annotates it (JSON text, or None).
        self._holds = _tuple_getter(*(f"hold_in_{environment.pk}" for environment in environments))
        self.request_refusals = {}
        self.verification_badges = {}
        # Every confirmation returns to the board as it was filtered.
        back = "?" + urlencode({"next": back_to})
        # A placeholder in a version's URL shape (calver.PathConverter), found in no real version.
        version = "0000.00.0-calver-version"
        self.release_url = _Url("releases:release-detail", "service-name", version)
        self.promotion_url = _Url("releases:promotion-detail", 2**31 - 1)
        self.decision_urls = {
            kind: _Url(f"releases:{kind}", 2**31 - 1, query=back) for kind in ("approve", "reject", "cancel", "stop")
        }
        self.request_url = _Url("releases:request", "service-name", "environment-name", version, query=back)
        self.rollback_url = _Url("releases:rollback", "service-name", "environment-name", query=back)
        self.lift_url = _Url("releases:lift-hold", 2**31 - 1, query=back)

    # --- what a row depends on

    @cached_property
    def board_key(self):
        """What every row of this board depends on besides its own data: what the reader may do (their
        groups; who they are only matters where a promotion is, see row_key), the environments as read
        (their settings, freezes and groups, by name too, since refusals name them), the time zone, the
        filter the confirmations return to and whether Argo CD is set, and why a rollback could never
        be approved in an environment (it names the other approvers, who change with no row)."""
        user = self.user
        reader = (user.is_superuser, frozenset(policy.group_ids(user)))
        environments = tuple(
            (
                _fingerprint(environment),
                environment.frozen_until,
                environment.freeze_reason,
                *(
                    tuple(sorted((group.pk, group.name) for group in policy.groups_of(environment, relation)))
                    for relation in ("approver_groups", "requester_groups")
                ),
            )
            for environment in self.environments
        )
        refusals = tuple(sorted(self.unapprovable_rollbacks.items()))
        return (reader, environments, self.zone, self.back_to, self.argocd_configured, refusals)

    def row_key(self, service):
        """Everything `service`'s row shows depends on: with `board_key`, the service and its candidates,
        each place's deployment, the promotions waiting or stopped there with their approvals and, in a
        row with such a promotion, who the reader is (their own request, their earlier approval), and
        what the time does to them (ages, a promotion past its target, a soak's progress).

        Two rows with equal keys render alike, so a rendered row can be reused while its key holds:
        a board refreshed after one change renders only the rows that change touched.
        """
        now = self.now
        places = [(service.id, environment.id) for environment in self.environments]
        deployments = tuple(map(self.deployments.get, places))
        times = []
        for deployment in deployments:
            if deployment is not None:
                times.append(short_age(deployment.deployed_at, now))
                if deployment.verification and deployment.verification.state == PromotionState.VERIFYING:
                    # A soak's progress, as shown: its bar and time left move, its rows with them.
                    badge, percent = self._verification_badge(deployment.verification)
                    times += [badge.label, badge.title, percent]
        promotions = ()
        if service.id in self.services_with_promotions:
            # Who the reader is decides here (their own request, their earlier approval): elsewhere a
            # row is what their groups make it, and readers in the same groups share it.
            promotions = [self.user.pk]
            for environment, place in zip(self.environments, places, strict=True):
                waiting, stopped = self.waiting.get(place), self.stopped.get(place)
                promotions.append((_promotion_fingerprint(waiting), _promotion_fingerprint(stopped)))
                if waiting is not None:
                    retrying = trouble(waiting)
                    times += [
                        short_age(waiting.requested_at, now),
                        now - waiting.requested_at > slo.target(environment),
                        # Its next try, said until it is due.
                        bool(retrying and retrying.next_try and retrying.next_try > now),
                    ]
                if stopped is not None:
                    times += [short_age(stopped.finished_at or now, now), short_age(stopped.updated_at, now)]
            promotions = tuple(promotions)
        team = service.team.name if service.team_id else None
        return _Key(
            (
                self.board_key,
                _fingerprint(service),
                team,
                self._candidates(service),
                self._holds(service),
                deployments,
                promotions,
                tuple(times),
            )
        )

    # --- cells

    def cells(self, service):
        # The candidate for each environment: the newest release verified in the one before it,
        # or for the first environment the newest release of all.
        if not self.environments:
            return []  # a portal with services and no environment yet: rows without cells
        return [
            self.cell(service, environment, previous, candidate)
            for environment, previous, candidate in zip(
                self.environments, [None, *self.environments[:-1]], self._candidates(service), strict=True
            )
        ]

    def cell(self, service, environment, previous, candidate):
        place = (service.id, environment.id)
        cell = Cell(environment, place=f"{service.name}-{environment.name}")
        hold = getattr(service, f"hold_in_{environment.pk}")
        if hold:
            hold = json.loads(hold)
            cell.hold_reason, cell.hold_url = hold["reason"], self.lift_url(hold["pk"])

        deployment = self.deployments.get(place)
        release = deployment.release if deployment else None
        if deployment:
            cell.version = release.version
            cell.release_url = self.release_url(service.name, release.version)
            cell.deployed_iso = deployment.deployed_at.isoformat()
            cell.deployed_exact = exact_time(deployment.deployed_at, self.zone)
            cell.age = short_age(deployment.deployed_at, self.now)
            cell.health = self._health(deployment)
            cell.verification, cell.soak_percent = self._verification_badge(deployment.verification)
            if deployment.verification and deployment.verification.failing:
                cell.verification = self._overturned(deployment.verification.failing, environment) or cell.verification
            if deployment.drifted_tag:
                self._gitops_file(cell, service, environment, deployment)
            previous_deployment = self.deployments.get((service.id, previous.id)) if previous else None
            if previous_deployment:
                self._drift(cell, release, previous, previous_deployment.release)
            first = self.environments[0]
            leader = self.deployments.get((service.id, first.id)) if previous else None
            if leader:
                self._far_behind(cell, release, first, leader.release, previous)
            if cell.verification.tone == "bad" and f": {cell.verification.title}" not in cell.hold_reason:
                # A hold placed by this failure ends with its error (transitions._after_failure): said there.
                cell.failure_reason = cell.verification.title

        waiting, soaking = self.waiting.get(place), None
        if waiting and self.now - waiting.requested_at > slo.target(environment):
            minutes = environment.promotion_slo_minutes
            cell.overdue = Badge(
                f"past its {minutes} min target",
                "warn",
                f"Requested {short_age(waiting.requested_at, self.now)}; the promotion target in "
                f"{environment.name} is {minutes} min",
            )
        if waiting and waiting.state in (PromotionState.DEPLOYED, PromotionState.VERIFYING):
            soaking, waiting = waiting, None  # it runs here already: the deployment shows its soak
        if waiting:
            cell.waiting, cell.waiting_url = waiting, self.promotion_url(waiting.pk)
            cell.waiting_label = self._waiting_label(waiting)
            cell.waiting_title = self._waiting_title(waiting)
        stopped = self.stopped.get(place)
        if stopped and not waiting:
            cell.stopped, cell.stopped_url = stopped, self.promotion_url(stopped.pk)
            cell.stopped_label = self._stopped_label(stopped)

        candidate = _release_row(candidate) if candidate else None
        if candidate and (release is None or candidate.calver_key > release.calver_key):
            cell.candidate = candidate
        cell.actions = self._actions(cell, service, environment, previous, deployment, waiting, soaking)
        return cell

    # --- what the cell says

    def _health(self, deployment):
        if not self.argocd_configured:
            return None  # the board says so once, above the table
        if not deployment.health:
            return Badge("health unknown", "warn", "Argo CD has not reported health for this deployment yet")
        # When Argo CD was first seen reporting it (the reconciler and the webhook write it with a
        # change), else when the deployment found it: the health shown has held since, as far as seen.
        since = exact_time(deployment.health_checked_at or deployment.deployed_at, self.zone)
        return Badge(deployment.health, HEALTH_TONES.get(deployment.health, "warn"), f"Argo CD health since {since}")

    def _verification_badge(self, verification):
        # Deployments verified alike share one row (_deployments), and so one badge.
        if verification not in self.verification_badges:
            self.verification_badges[verification] = self._verification(verification)
        return self.verification_badges[verification]

    def _verification(self, verification):
        if verification is None:
            return Badge("not verified here", "", "Imported from GitOps history: the portal did not verify it"), None
        state = verification.state
        if state == PromotionState.VERIFYING and verification.soak_ends:
            window = verification.soak_ends - verification.soak_started
            elapsed = self.now - verification.soak_started
            left = verification.soak_ends - self.now
            percent = 100 if window.total_seconds() <= 0 else max(0, min(100, int(100 * elapsed / window)))
            due = f"{timezone.localtime(verification.soak_ends):%H:%M:%S}"
            overdue = steps.verdict_overdue(verification.soak_ends, self.now)
            if overdue:  # no worker gave it (all of them killed): its page says what holds it up
                return Badge(overdue, "warn", f"Verdict due at {due}"), percent
            label = f"soaking, {short_duration(left)} left" if left.total_seconds() > 0 else "soak over, verdict next"
            return Badge(label, "info", f"Verdict at {due}"), percent
        if state == PromotionState.DEPLOYED:
            return Badge("verification starting", "info"), None
        if state == PromotionState.VERIFIED:
            if verification.status == StepStatus.NOT_CONFIGURED:
                return Badge(
                    "verified, nothing checked", "warn", "No check was configured: the soak was only a timer"
                ), None
            return Badge("verified", "ok"), None
        if state == PromotionState.FAILED:
            return Badge(
                f"failed at {verification.failed_step or 'an unknown step'}", "bad", verification.error[:300]
            ), None
        if state == PromotionState.ROLLED_BACK:
            return Badge("rolled back", "bad"), None
        return Badge(PromotionState(state).label.lower()), None

    def _gitops_file(self, cell, service, environment, deployment):
        tag, committed_by = deployment.drifted_tag, deployment.drifted_tag_committed_by
        cell.gitops_tag = tag
        if committed_by is None:
            cell.gitops_file = Badge(f"GitOps file says {tag}", "bad", drift.OUTSIDE)
            return
        said = drift.portal_commit(service.values_path(environment), tag, deployment.release.version, committed_by)
        cell.gitops_file = Badge(f"GitOps file says {tag}", "warn", said)
        cell.gitops_tag_promotion, cell.gitops_file_url = committed_by.pk, self.promotion_url(committed_by.pk)

    def _overturned(self, failing, environment):
        """A verified deployment whose required CI check failed since (verification.failing_checks), or None."""
        failed = verification.failed_required(failing, environment)
        if not failed:
            return None
        names, details = verification.describe_failed(failed)
        return Badge(f"verified, then {names} failed", "bad", details or "CI reported it failing after the verdict")

    def _drift(self, cell, release, previous, previous_release):
        behind = release.newer - previous_release.newer
        cell.builds_behind = behind
        if behind < 0:
            cell.drift = Badge(f"ahead of {previous.name}", "", f"{drift.builds(-behind)} newer than {previous.name}")
        elif behind > 0:
            threshold = cell.environment.drift_warning_builds
            tone = "warn" if behind > threshold else ""
            title = f"{previous.name} runs {previous_release.version}"
            label = drift.builds_behind(behind, previous.name)
            if tone:
                title += f"; more than {drift.builds(threshold)} behind is worth a promotion"
                label += ": worth a promotion"
            cell.drift = Badge(label, tone, title)

    def _far_behind(self, cell, release, first, leader_release, previous):
        """More builds behind the first environment (develop) than the environment's drift_alert_builds."""
        behind = release.newer - leader_release.newer
        cell.builds_behind_first = behind
        threshold = cell.environment.drift_alert_builds
        if threshold and behind > threshold:
            alert = f"the alert is set at more than {drift.builds(threshold)}"
            cell.far_behind = Badge(
                drift.builds_behind(behind, first.name), "warn", f"{first.name} runs {leader_release.version}; {alert}"
            )
            if previous == first and cell.drift:
                # Both count the builds behind the same deployment: the drift line says it once, as a warning.
                cell.drift = Badge(cell.drift.label, "warn", f"{cell.drift.title}; {alert}")
                cell.far_behind_in_drift = True

    def _waiting_label(self, promotion):
        prefix = "rollback, " if promotion.kind == PromotionKind.ROLLBACK else ""
        if promotion.state == PromotionState.AWAITING_APPROVAL:
            given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
            return f"{prefix}awaiting approval {given}/{required}"
        if promotion.state in HELD_BY_FREEZE_STATES and policy.freeze_holding(promotion):
            return f"{prefix}{promotion.get_state_display().lower()}, waits for the freeze"
        label = prefix + WAITING_LABELS.get(promotion.state, promotion.get_state_display().lower())
        retrying = trouble(promotion)
        if retrying:
            if retrying.next_try and retrying.next_try > self.now:
                label += f" — {retrying.words}, next try {timezone.localtime(retrying.next_try):%H:%M}"
            else:
                label += f" — {retrying.words}, trying again"
        return label

    def _waiting_title(self, promotion):
        """What the label leaves out: when the freeze holding the promotion's GitOps commit ends, or the
        error its step is tried again after."""
        freeze = policy.freeze_holding(promotion) if promotion.state in HELD_BY_FREEZE_STATES else None
        if freeze is None:
            retrying = trouble(promotion)
            return f"Tried again after: {retrying.error[:300]}" if retrying else ""
        return (
            f"Approved before the freeze began: the GitOps commit waits until "
            f"{timezone.localtime(freeze.ends_at):%Y-%m-%d %H:%M %Z} ({freeze.reason})"
        )

    def _stopped_label(self, promotion):
        return stopped_label(promotion, self.now)

    # --- what the user may do here

    @cached_property
    def unapprovable_rollbacks(self):
        """{environment id: why a rollback the reader asked for there could never be approved}, for the
        environments where that is so, with one query for all of them."""
        asked = [environment for environment in self.environments if environment.rollback_required_approvals]
        approvers = policy.rollback_approvers(self.user, asked) if asked and policy.is_person(self.user) else {}
        refusals = {}
        for environment in asked:
            refusal = policy.why_not_unapprovable_rollback(
                self.user, environment, approvers=approvers.get(environment.pk, [])
            )
            if refusal:
                refusals[environment.pk] = refusal
        return refusals

    def _why_not_request(self, service, environment):
        # The request rule depends on the service only through its owning team (see policy), so
        # one answer per team and environment serves every row. It depends on the reader only through
        # their groups: rows without a promotion are shared by readers in the same groups (row_key).
        key = (service.team_id, environment.pk)
        if key not in self.request_refusals:
            self.request_refusals[key] = policy.why_not_request(self.user, service, environment)
        return self.request_refusals[key]

    def _held_back(self, service, environment, previous, candidate):
        """policy.why_not_go_on for the candidate, from the failed results read with it."""
        failed = verification.failed_required(candidate.failing, previous) if candidate.failing else None
        if not failed:
            return None
        release = Release(pk=candidate.pk, service=service, version=candidate.version)
        return policy.why_not_go_on(release, environment, previous=previous, failing=failed)

    def _actions(self, cell, service, environment, previous, deployment, waiting, soaking):
        actions = []
        if waiting:
            # Approve shows why not; a reject or cancel the person may not take is left out of the cell.
            actions += [
                action
                for action in decision_actions(waiting, self.user, self._decision_url)
                if action.allowed or action.kind == "approve"
            ]
        busy = waiting if waiting is not None and waiting.state != PromotionState.AWAITING_APPROVAL else soaking
        refusal = self._why_not_request(service, environment)
        may_request = refusal is None
        candidate = cell.candidate
        if candidate and not (waiting and waiting.release_id == candidate.pk):
            stopped = cell.stopped
            again = stopped and stopped.release_id == candidate.pk and stopped.state != PromotionState.CANCELLED
            actions.append(
                request_action(
                    environment,
                    candidate.version,
                    self.request_url(service.name, environment.name, candidate.version),
                    refusal=refusal,
                    user=self.user,
                    waiting=waiting,
                    busy=busy,
                    stopped=cell.stopped_label if again else "",
                    held_back=self._held_back(service, environment, previous, candidate) if previous else None,
                )
            )
        if cell.hold_url:
            why_not = None if may_request else "Only people who may promote here may lift its hold."
            actions.append(lift_action(cell.hold_url, why_not))
        stops = []
        if soaking:
            # A soak is stopped to roll back: offered instead of a rollback, which would wait for the soak.
            stops = [action for action in decision_actions(soaking, self.user, self._decision_url) if action.allowed]
            actions += stops
        # Rolling back is offered only to those who may request here.
        if may_request and not stops:
            offered = rollback_action(
                deployment,
                self.rollback_url(service.name, environment.name),
                self.unapprovable_rollbacks.get(environment.pk),
                busy=busy,
            )
            if offered:
                offered.tone = "quiet"
                actions.append(offered)
        return actions

    def _decision_url(self, kind, pk):
        return self.decision_urls[kind](pk)
