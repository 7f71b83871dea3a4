"""A stand-in Argo CD API server for tests, speaking the real wire format.

Paths and bodies follow argoproj/argo-cd server/application/application.proto (List, Get, Sync,
TerminateOperation), the
Application type of pkg/apis/application/v1alpha1 and grpc-gateway's error body
{"error", "code", "message"} with its gRPC-code → HTTP-status mapping. Behaviour follows
server/application/application.go: a missing application is "permission denied" unless the request
names a project, a sync while an operation runs is FailedPrecondition "another operation is already in
progress", and an auto-sync application refuses a sync to any revision but its target. Terminating
an operation needs the "sync" RBAC action, answers {} and InvalidArgument "Unable to terminate operation.
No operation is in progress" when none runs, and leaves the operation Terminating (still in progress:
a sync is refused) until the controller ends it Failed "Operation terminated", or Error "Operation
termination had errors" (gitops-engine's syncContext.Terminate): here at the second GET after it.
List answers an ApplicationList ({"metadata": {"resourceVersion"}, "items": [...]}, sorted by name,
`items` a list even when empty) of the applications the token may "get": the others are left out,
never refused. Its `fields` parameter (util/http/forwarders.go) keeps only the comma-separated paths
it names and what leads to them, a path through a list going into each element, as Argo CD's UI asks
for its application list (`metadata.resourceVersion,items.metadata.name,items.status.health,…`).

Each application is scripted by the test (`server.app(name, outcome=..., running_polls=...)`), and its
sync operation moves one step per GET, so a test decides how many polls a rollout takes, or runs for
`sync_seconds` of the server's clock; a list shows each application as it stands, without moving
its sync on. What the controller finds long after a rollout (pods crash-looping an hour later) is
`server.app(name, later_health="Degraded")`. `deployed(*revisions)` gives an application a history of
syncs done before the test; `rollback(id)` is `argocd app rollback <name> <id>`: the revision of that
history entry is synced, and once it runs the application reports OutOfSync at what its targetRevision
resolves to (status.sync.revision), the older revision only in status.operationState and
status.history, as the controller does. `reported_health` makes an application report a health of its
own (Unknown: Argo CD could not assess it; Suspended; Progressing) whatever its rollout.

The server itself can go away and come back on the same port (`stop`, `start`, `down_for`), answer
503 for a while (`unavailable_for`) or "another operation is already in progress" for a while
(`busy_for`), and deny a token's RBAC (`denied_actions`).

Time-based behaviour reads `server.clock` (time.monotonic unless a test sets its own fake clock).
"""

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import unquote

import pytest

from tests.servers.loopback import LoopbackServer, Response

# grpc-gateway's HTTPStatusFromCode for the codes this server answers with (FailedPrecondition is
# deliberately 400, not 412).
INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, UNAVAILABLE, UNAUTHENTICATED = 3, 5, 7, 9, 14, 16
HTTP_STATUS = {
    INVALID_ARGUMENT: 400,
    NOT_FOUND: 404,
    PERMISSION_DENIED: 403,
    FAILED_PRECONDITION: 400,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
}
# util/argo's ErrAnotherOperationInProgress; Argo CD's K8s error interceptor unwraps it from "error setting
# app operation: …", so the answer carries this message alone.
OPERATION_IN_PROGRESS = "another operation is already in progress"
NO_OPERATION = "Unable to terminate operation. No operation is in progress"
# What argocd-server's own grpc-gateway answers while its gRPC side is not serving yet.
SERVER_STARTING = (
    'connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:8083: connect: connection refused"'
)

_APPLICATIONS_PATH = "/api/v1/applications"
_APPLICATION_PATH = re.compile(r"/api/v1/applications/(?P<name>[^/]+)(?P<action>/sync|/operation)?")
# The method each path answers to, and the RBAC action it needs.
_ROUTES = {("GET", None): "get", ("POST", "/sync"): "sync", ("DELETE", "/operation"): "sync"}


class Outcome(StrEnum):
    HEALTHY = "healthy"  # the sync succeeds, health goes Progressing → Healthy
    DEGRADED = "degraded"  # the sync succeeds, the new pods never become ready
    SYNC_FAILS = "sync_fails"  # applying the manifests fails: phase Failed
    NEVER_FINISHES = "never_finishes"  # the operation stays Running


def fake_sha(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _timestamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operation:
    revision: str
    automated: bool
    started_at: datetime
    started_on_clock: float  # the server clock's reading, for sync_seconds
    polls: int = 0  # GETs since the sync started; 0 = the controller has not picked it up yet
    finished_at: datetime | None = None
    stuck: bool = False  # stays Running until terminated (a hook job that never completes)
    terminated_at_poll: int | None = None  # `polls` when TerminateOperation was asked
    by: str = "nexo-release-portal"  # the account that asked for it (initiatedBy.username), unless automated


@dataclass
class FakeApplication:
    name: str
    auto_sync: bool = False
    outcome: Outcome = Outcome.HEALTHY
    running_polls: int = 2  # GETs that show the operation Running
    progressing_polls: int = 1  # GETs after success that show health Progressing
    busy_syncs: int = 0  # sync requests to refuse with "another operation is already in progress"
    busy_until: float = 0.0  # …and every sync request until the server clock reads this
    stuck_syncs: int = 0  # operations to start stuck: Running until someone terminates them
    termination_fails: bool = False  # a terminated operation ends Error, not Failed
    head: Callable[[], str] | None = None  # auto-sync: the revision a ?refresh= finds in Git
    # As Argo CD reports it: status.sync.revision is what targetRevision resolved to (head()) at the last
    # comparison, not the revision last synced; Synced when this application's manifests are the same.
    reports_branch_head: bool = False
    instant: bool = False  # Synced + Healthy on the first GET after a sync
    sync_seconds: float | None = None  # when set: the operation runs this long on the clock, then is done
    denied_actions: frozenset[str] = frozenset()  # RBAC actions ("get", "sync") the token may not do here
    # Off as with controller.resource.health.persist=false: status.resources carry no health.
    persist_resource_health: bool = True
    # What the controller finds once no operation runs, whatever the rollout ended as ("" = as it ended).
    later_health: str = ""
    clock: Callable[[], float] = time.monotonic
    deployed_revision: str = field(default_factory=lambda: fake_sha("initial"))
    target_revision: str = "main"
    repo_url: str = "https://github.com/nexo-org/gitops.git"
    degraded_message: str = ""
    failure_message: str = ""
    reported_health: str = ""  # when set: status.health.status, whatever the rollout
    # Set by a rollback: what targetRevision resolves to, which the revision rolled back to no longer matches.
    out_of_sync_with: str = ""
    operation: Operation | None = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        self.degraded_message = self.degraded_message or f'Deployment "{self.name}" exceeded its progress deadline'
        self.failure_message = self.failure_message or (
            f'one or more objects failed to apply, reason: Deployment.apps "{self.name}" is invalid: '
            "spec.template.spec.containers[0].image: Required value"
        )

    def start_operation(self, revision, *, automated, by="nexo-release-portal"):
        stuck = self.stuck_syncs > 0
        self.stuck_syncs -= stuck
        self.out_of_sync_with = ""
        self.operation = Operation(
            revision=revision,
            automated=automated,
            started_at=datetime.now(UTC),
            started_on_clock=self.clock(),
            stuck=stuck,
            by=by,
        )

    def deployed(self, *revisions):
        """As if each revision had been synced in turn before the test, the last one running Synced and
        Healthy by now (for an outcome that finishes: HEALTHY, DEGRADED, SYNC_FAILS)."""
        for revision in revisions:
            self.start_operation(revision, automated=False)
            for _ in range(1000):
                if not self.in_progress() and self.health()[0] != "Progressing":
                    break
                self.advance()
            else:
                raise AssertionError(f"the sync of {self.name} to {revision} does not finish")
        return self

    def rollback(self, history_id, by="admin"):
        """`argocd app rollback <name> <id>` (server/application's Rollback): sync the revision of history
        entry `id`; refused while auto-sync is on, as Argo CD refuses it. Git is not changed: once the
        rollback runs, the application is OutOfSync with what its targetRevision resolves to."""
        if self.auto_sync:
            raise ValueError(f"rollback cannot be initiated when auto-sync is enabled for {self.name}")
        [entry] = [entry for entry in self.history if entry["id"] == history_id]
        target = self.head() if self.head else self.deployed_revision
        self.start_operation(entry["revision"], automated=False, by=by)
        self.out_of_sync_with = target

    def is_busy(self):
        return self.clock() < self.busy_until

    def advance(self):
        """One poll's worth of progress for the running operation."""
        operation = self.operation
        if operation is None:
            return
        operation.polls += 1
        phase = self.phase()
        if phase not in ("Running", "Terminating") and operation.finished_at is None:
            operation.finished_at = datetime.now(UTC)
            if phase == "Succeeded":
                self.deployed_revision = operation.revision
                self.history.append(
                    {
                        "id": len(self.history),
                        "revision": operation.revision,
                        "deployStartedAt": _timestamp(operation.started_at),
                        "deployedAt": _timestamp(operation.finished_at),
                        "source": self._source(),
                        "initiatedBy": self._initiated_by(operation),
                    }
                )

    def refresh(self):
        """What ?refresh= does for an auto-sync application: see Git's head and sync to it."""
        if not (self.auto_sync and self.head):
            return
        revision = self.head()
        current = self.operation.revision if self.operation else self.deployed_revision
        if revision and revision != current and not self.in_progress():
            self.start_operation(revision, automated=True)

    def phase(self):
        operation = self.operation
        if operation is None:
            return ""
        if operation.terminated_at_poll is not None:
            if operation.polls <= operation.terminated_at_poll + 1:
                return "Terminating"
            return "Error" if self.termination_fails else "Failed"
        if self.outcome == Outcome.NEVER_FINISHES or operation.stuck:
            return "Running"
        if self.sync_seconds is not None:
            running = self.clock() - operation.started_on_clock < self.sync_seconds
        else:
            running = operation.polls <= (0 if self.instant else self.running_polls)
        if running:
            return "Running"
        return "Failed" if self.outcome == Outcome.SYNC_FAILS else "Succeeded"

    def in_progress(self):
        return self.phase() in ("Running", "Terminating")

    def health(self):
        """The Deployment's health status and message; the application's health is the worst resource's."""
        if self.reported_health:
            return self.reported_health, ""
        phase = self.phase()
        if phase in ("Running", "Terminating"):
            return "Progressing", ""
        if self.later_health:
            return self.later_health, self.degraded_message if self.later_health == "Degraded" else ""
        if phase == "Succeeded":
            by_polls = self.sync_seconds is None and not self.instant
            if by_polls and self.operation.polls - self.running_polls <= self.progressing_polls:
                return "Progressing", ""
            if self.outcome == Outcome.DEGRADED:
                return "Degraded", self.degraded_message
        # No operation yet, or a failed one: the pods that ran before keep serving.
        return "Healthy", ""

    def as_json(self):
        phase = self.phase()
        health, health_message = self.health()
        if phase in ("Running", "Terminating", "Failed", "Error"):
            sync = {"status": "OutOfSync", "revision": self.operation.revision}
        elif self.out_of_sync_with:
            # A rollback ran: the controller compares with targetRevision, which still resolves to this.
            sync = {"status": "OutOfSync", "revision": self.out_of_sync_with}
        elif self.reports_branch_head and self.head and phase == "Succeeded":
            sync = {"status": "Synced", "revision": self.head()}
        else:
            sync = {"status": "Synced", "revision": self.deployed_revision}
        sync["comparedTo"] = {"source": self._source(), "destination": self._destination()}
        application = {
            "metadata": {
                "name": self.name,
                "namespace": "argocd",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                "resourceVersion": str(1000 + len(self.history)),
                "creationTimestamp": "2026-01-05T09:00:00Z",
            },
            "spec": {
                "source": self._source(),
                "destination": self._destination(),
                "project": "default",
                **({"syncPolicy": {"automated": {"prune": True, "selfHeal": True}}} if self.auto_sync else {}),
            },
            "status": {
                "resources": [
                    {
                        "version": "v1",
                        "kind": "Service",
                        "namespace": self.name,
                        "name": self.name,
                        "status": sync["status"],
                        **({"health": {"status": "Healthy"}} if self.persist_resource_health else {}),
                    },
                    {
                        "group": "apps",
                        "version": "v1",
                        "kind": "Deployment",
                        "namespace": self.name,
                        "name": self.name,
                        "status": sync["status"],
                        **(
                            {"health": {"status": health, **({"message": health_message} if health_message else {})}}
                            if self.persist_resource_health
                            else {}
                        ),
                    },
                ],
                "sync": sync,
                # The controller aggregates the worst resource's status only; the message stays on the resource.
                "health": {"status": health},
                "history": self.history,
                "reconciledAt": _timestamp(datetime.now(UTC)),
                "sourceType": "Helm",
                "summary": {"images": [f"ghcr.io/nexo-org/{self.name}"]},
            },
        }
        operation = self.operation
        if operation is not None and (operation.polls == 0 or self.in_progress()):
            # Argo CD keeps the requested operation on the Application until the controller finishes it.
            application["operation"] = self._operation_request(operation)
        if operation is not None and operation.polls > 0:
            application["status"]["operationState"] = self._operation_state(operation, phase)
        return application

    def _operation_state(self, operation, phase):
        message = {
            "Running": f"waiting for healthy state of apps/Deployment/{self.name}",
            "Terminating": f"waiting for healthy state of apps/Deployment/{self.name}",
            "Error": "Operation termination had errors",
            "Failed": "Operation terminated" if operation.terminated_at_poll is not None else self.failure_message,
            "Succeeded": "successfully synced (all tasks run)",
        }[phase]
        state = {
            "operation": self._operation_request(operation),
            "phase": phase,
            "message": message,
            "startedAt": _timestamp(operation.started_at),
            "syncResult": {
                "revision": operation.revision,
                "source": self._source(),
                "resources": [
                    {
                        "group": "apps",
                        "version": "v1",
                        "kind": "Deployment",
                        "namespace": self.name,
                        "name": self.name,
                        "status": "SyncFailed" if phase == "Failed" else "Synced",
                        "message": message if phase == "Failed" else f"deployment.apps/{self.name} configured",
                        "syncPhase": "Sync",
                    },
                ],
            },
        }
        if operation.finished_at:
            state["finishedAt"] = _timestamp(operation.finished_at)
        return state

    def _operation_request(self, operation):
        return {
            "sync": {"revision": operation.revision, "syncStrategy": {"hook": {}}},
            "initiatedBy": self._initiated_by(operation),
            "retry": {},
        }

    @staticmethod
    def _initiated_by(operation):
        return {"automated": True} if operation.automated else {"username": operation.by}

    def _source(self):
        return {
            "repoURL": self.repo_url,
            "path": f"charts/{self.name}",
            "targetRevision": self.target_revision,
            "helm": {"valueFiles": ["values.yaml"]},
        }

    def _destination(self):
        return {"server": "https://kubernetes.default.svc", "namespace": self.name}


class ArgoCDServer:
    """Argo CD's application API on a loopback port. `requests` logs every request received."""

    def __init__(self, token="argocd-test-token-0f3c9a", *, hide_missing_applications=True, clock=time.monotonic):
        self.token = token
        # Argo CD since 2.5 answers "permission denied" for an application that does not exist, unless the
        # request names its project (CVE-2022-41354); False answers 404 as older versions did.
        self.hide_missing_applications = hide_missing_applications
        self.clock = clock
        self.applications = {}
        self.requests = []
        self.unavailable_until = 0.0
        self._lock = threading.Lock()
        self._restart = None
        self._server = LoopbackServer(self._respond)
        self.port = self._server.port
        self.url = self._server.url

    def app(self, name, **behaviour):
        """The application `name`, created on first use; keyword arguments set FakeApplication fields."""
        known = {f.name for f in fields(FakeApplication)}
        unknown = set(behaviour) - known
        if unknown:
            raise TypeError(f"FakeApplication has no field(s) {sorted(unknown)}; use {sorted(known)}")
        with self._lock:
            application = self.applications.setdefault(name, FakeApplication(name, clock=lambda: self.clock()))
            for key, value in behaviour.items():
                setattr(application, key, value)
            return application

    def busy_for(self, name, seconds):
        """Refuse syncs of `name` with "another operation is already in progress" for `seconds` of the clock."""
        self.app(name, busy_until=self.clock() + seconds)

    def unavailable_for(self, seconds):
        """Answer every request with 503 Unavailable, as argocd-server does while starting, for `seconds`."""
        self.unavailable_until = self.clock() + seconds

    @property
    def sync_requests(self):
        return [request for request in self.requests if request.method == "POST" and request.path.endswith("/sync")]

    @property
    def terminate_requests(self):
        return [request for request in self.requests if request.method == "DELETE"]

    @property
    def is_up(self):
        return self._server is not None

    def stop(self):
        """Go away: connections are refused (and open ones dropped) until `start`."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def start(self):
        """Come back on the same port."""
        if self._server is None:
            self._server = LoopbackServer(self._respond, port=self.port)

    def down_for(self, seconds):
        """Stop now and start again after `seconds` of real time (a timer thread, whatever `clock` is)."""
        self.stop()
        self._restart = threading.Timer(seconds, self.start)
        self._restart.daemon = True
        self._restart.start()

    def close(self):
        if self._restart is not None:
            self._restart.cancel()
            self._restart.join()
        self.stop()

    def _respond(self, request):
        with self._lock:
            self.requests.append(request)
            return self._answer(request)

    def _answer(self, request):
        listing = request.method == "GET" and request.path == _APPLICATIONS_PATH
        match = _APPLICATION_PATH.fullmatch(request.path)
        rbac_action = "get" if listing else _ROUTES.get((request.method, match and match["action"]))
        if rbac_action is None:
            return Response.text(404, "Not Found\n")
        if self.clock() < self.unavailable_until:
            return _error(UNAVAILABLE, SERVER_STARTING)
        token = request.headers.get("Authorization", "").removeprefix("Bearer").strip()
        if not token:
            return _error(UNAUTHENTICATED, "no session information")
        if token != self.token:
            return _error(UNAUTHENTICATED, "invalid session: failed to verify the token")
        if listing:
            return self._list(request.query)
        name = unquote(match["name"])
        application = self.applications.get(name)
        if application is None:
            if self.hide_missing_applications and "project" not in request.query:
                return _error(PERMISSION_DENIED, "permission denied")
            return _error(NOT_FOUND, f'applications.argoproj.io "{name}" not found')
        # server/application's getAppEnforceRBAC: a denied action answers exactly as a missing application.
        if rbac_action in application.denied_actions:
            return _error(PERMISSION_DENIED, "permission denied")
        if request.method == "GET":
            if "refresh" in request.query:
                application.refresh()
            application.advance()
            return Response.json(200, application.as_json())
        if request.method == "DELETE":
            return self._terminate(application)
        return self._sync(application, request.json or {})

    def _list(self, query):
        """List: every application the token may get, by name, with only the `fields` asked for."""
        items = [
            application.as_json()
            for _, application in sorted(self.applications.items())
            if "get" not in application.denied_actions
        ]
        listed = {"metadata": {"resourceVersion": str(1000 + len(self.requests))}, "items": items}
        fields = [path.split(".") for value in query.get("fields", []) for path in value.split(",") if path]
        return Response.json(200, _pick(listed, fields) if fields else listed)

    def _terminate(self, application):
        """TerminateOperation: refused unless an operation is on the Application and the controller has
        started it (a.Operation and a.Status.OperationState both set)."""
        operation = application.operation
        if operation is None or operation.polls == 0 or not application.in_progress():
            return _error(INVALID_ARGUMENT, NO_OPERATION)
        operation.terminated_at_poll = operation.polls
        return Response.json(200, {})

    def _sync(self, application, body):
        revision = body.get("revision") or ""
        if application.auto_sync and revision and revision != (application.target_revision or "HEAD"):
            return _error(
                FAILED_PRECONDITION,
                f"Cannot sync to {revision}: auto-sync currently set to {application.target_revision}",
            )
        if application.busy_syncs > 0:
            application.busy_syncs -= 1
            return _error(FAILED_PRECONDITION, OPERATION_IN_PROGRESS)
        if application.is_busy():
            return _error(FAILED_PRECONDITION, OPERATION_IN_PROGRESS)
        operation = application.operation
        if operation is not None and (operation.polls == 0 or application.in_progress()):
            return _error(FAILED_PRECONDITION, OPERATION_IN_PROGRESS)
        if not revision or revision == application.target_revision:
            revision = application.head() if application.head else application.deployed_revision
        application.start_operation(revision, automated=False)
        return Response.json(200, application.as_json())


def _pick(value, paths):
    """`value` with only what `paths` (each a list of keys) lead to; a path through a list goes into each element."""
    if [] in paths:
        return value
    if isinstance(value, list):
        return [_pick(element, paths) for element in value]
    if not isinstance(value, dict):
        return value
    return {
        key: _pick(value[key], [path[1:] for path in paths if path[0] == key])
        for key in dict.fromkeys(path[0] for path in paths)
        if key in value
    }


def _error(code, message):
    """grpc-gateway v1's DefaultHTTPError body (runtime/errors.go), which argocd-server answers errors with."""
    return Response.json(HTTP_STATUS[code], {"error": message, "code": code, "message": message})


@pytest.fixture
def argocd_server(settings):
    """A fresh Argo CD stand-in, configured as the portal's ARGOCD_URL and ARGOCD_TOKEN."""
    server = ArgoCDServer()
    settings.ARGOCD_URL = server.url
    settings.ARGOCD_TOKEN = server.token
    yield server
    server.close()
