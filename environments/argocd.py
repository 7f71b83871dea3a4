"""Client for the Argo CD REST API: read an application, sync it to a revision, wait until that revision runs,
list every application with its status.

Argo CD serves gRPC through grpc-gateway (server/application/application.proto): a failure comes back
as {"error": ..., "code": <gRPC code>, "message": ...} with the HTTP status grpc-gateway maps the code to.

What goes wrong comes in three kinds (every error is an ArgoCDError), and `wait_until_deployed`
treats each its own way:

- Transient (ArgoCDUnavailable, `is_transient`): no answer (connection refused or reset, a timeout),
  HTTP 5xx, 408 or 429, and "another operation is already in progress" (FailedPrecondition, HTTP 400)
  on a sync. A restarting argocd-server, or someone else's sync: asked again with backoff until the
  deadline; then ArgoCDTimeout says what was still happening and for how long (`last_error`).
- Refusals (ArgoCDRefused): 401 (the token), 403 (the token's RBAC, a sync window, or an application
  Argo CD will not say is missing), 404 (no such application), any other 4xx, or an answer that is not
  Argo CD's API (not JSON, or JSON that is not an Application). Asking again gives the same answer
  until a person fixes the portal's setup: never retried, and no automatic rollback should go through
  the Argo CD that has just refused.
- Failures of the release (ArgoCDDeployFailed): Argo CD synced our revision and the sync ended Failed
  or Error, or the revision runs Degraded. What an automatic rollback is for.

ArgoCDTimeout with `last_error` None means Argo CD answered throughout but the rollout did not finish.
"""

import random
import time
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import quote

import requests
from django.conf import settings

from nexo_portal.lib import metrics
from nexo_portal.lib.http import describe_failure, excerpt

OPERATION_IN_PROGRESS = "another operation is already in progress"
# Backoff after transient failures: from the poll interval, doubling up to the cap, each delay shortened by
# a random part of up to BACKOFF_JITTER, so that workers that failed together do not all ask again together.
BACKOFF_CAP_SECONDS = 30.0
BACKOFF_JITTER = 0.25
# Besides every 5xx: request timeout, and too many requests.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429})


class GrpcCode(IntEnum):
    """The gRPC status codes Argo CD answers with that the portal treats differently."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    UNAUTHENTICATED = 16


class SyncStatus:
    SYNCED = "Synced"
    UNKNOWN = "Unknown"


class OperationPhase:
    RUNNING = "Running"
    TERMINATING = "Terminating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"


class Health:
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    DEGRADED = "Degraded"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class ArgoCDError(Exception):
    """Argo CD refused, failed, or could not be reached. str() is a sentence for the release manager;
    `message` is Argo CD's own words (or the reason no answer came), `code` its gRPC code and
    `http_status` the HTTP status (None when no answer came). Only its subclasses are raised."""

    def __init__(self, sentence, *, http_status=None, code=None, message=""):
        super().__init__(sentence)
        self.http_status = http_status
        self.code = code
        self.message = message

    @property
    def is_transient(self):
        """Worth asking again later (ArgoCDUnavailable)."""
        return isinstance(self, ArgoCDUnavailable)


class ArgoCDUnavailable(ArgoCDError):
    """Transient: no answer, an HTTP 5xx, 408 or 429, or a sync refused because another operation is in
    progress. A single call raises it; `wait_until_deployed` asks again until its deadline."""

    @property
    def is_operation_in_progress(self):
        return self.code == GrpcCode.FAILED_PRECONDITION and OPERATION_IN_PROGRESS in self.message

    @property
    def trouble(self):
        """(what is wrong, why) in a few words: ("Argo CD unreachable", "connection refused"), ("Argo CD
        failing", "HTTP 503: …"), ("Argo CD busy with another operation", Argo CD's words)."""
        if self.http_status is None:
            return "Argo CD unreachable", self.message
        if self.is_operation_in_progress:
            return "Argo CD busy with another operation", self.message
        return "Argo CD failing", f"HTTP {self.http_status}" + (f": {self.message}" if self.message else "")


class ArgoCDRefused(ArgoCDError):
    """Argo CD refused the portal (401, 403, 404, another 4xx) or is not what ARGOCD_URL points at; the
    sentence says what to fix. Asking again gives the same answer: not retried, and an automatic rollback
    through the same Argo CD would be refused alike."""


class ArgoCDDeployFailed(ArgoCDError):
    """Argo CD synced our revision and it failed: the sync ended Failed or Error, or the revision runs
    Degraded. The release's fault, not the portal's setup: what an automatic rollback is for.

    `status`: the application as Argo CD reported it then. `applied_health`: the health our revision
    came up with when Argo CD had applied it (it runs Synced) and that health is the failure
    (Degraded); "" when applying it failed."""

    def __init__(self, sentence, *, status=None, applied_health="", **details):
        super().__init__(sentence, **details)
        self.status = status
        self.applied_health = applied_health


class ArgoCDTimeout(ArgoCDError):
    """The deadline passed before the application ran the revision Synced and Healthy. `last_error` is
    the transient error that was still happening then (Argo CD unreachable, failing or busy), or None
    when Argo CD answered but the rollout was not done."""

    def __init__(self, sentence, *, last_error=None, **details):
        super().__init__(sentence, **details)
        self.last_error = last_error


def same_revision(reported, wanted):
    """Argo CD reports full commit SHAs; the caller may hold an abbreviated one (at least 7 characters)."""
    if not reported or not wanted:
        return False
    reported, wanted = reported.lower(), wanted.lower()
    if reported == wanted:
        return True
    shorter, longer = sorted((reported, wanted), key=len)
    return len(shorter) >= 7 and longer.startswith(shorter)


@dataclass(frozen=True)
class ApplicationStatus:
    sync_status: str
    revision: str
    phase: str
    health: str
    # The revision of the last operation (sync): tells our failed sync from an older one.
    operation_revision: str = ""
    # Argo CD's words, each from its own place: status.operationState.message (how the sync went),
    # the Degraded resources' health messages (status.resources[].health) and status.conditions.
    operation_message: str = ""
    health_message: str = ""
    conditions: str = ""
    # The id of Argo CD's history entry that deployed what runs (`argocd app rollback <app> <id>` names it).
    sync_id: str = ""
    # The revision of the newest entry of status.history: the last sync that succeeded, a rollback's too.
    last_deployed_revision: str = ""

    @classmethod
    def from_application(cls, application):
        status = application.get("status") or {}
        sync = status.get("sync") or {}
        history = [entry for entry in status.get("history") or [] if isinstance(entry, dict)]
        deployed = [
            entry for entry in history if entry.get("id") is not None and entry.get("revision") == sync.get("revision")
        ]
        operation_state = status.get("operationState") or {}
        requested = ((operation_state.get("operation") or {}).get("sync") or {}).get("revision")
        return cls(
            sync_status=sync.get("status") or SyncStatus.UNKNOWN,
            revision=sync.get("revision") or "",
            phase=operation_state.get("phase") or "",
            health=(status.get("health") or {}).get("status") or Health.UNKNOWN,
            operation_revision=(operation_state.get("syncResult") or {}).get("revision") or requested or "",
            operation_message=operation_state.get("message") or "",
            health_message=_health_message(status),
            conditions="; ".join(
                f"{condition.get('type')}: {condition.get('message')}" for condition in status.get("conditions") or []
            ),
            sync_id=str(deployed[-1]["id"])[:64] if deployed else "",
            last_deployed_revision=(history[-1].get("revision") or "") if history else "",
        )

    @property
    def message(self):
        """The most useful of Argo CD's messages: a failed sync's, else why it is unhealthy, else the rest."""
        if self.phase in (OperationPhase.FAILED, OperationPhase.ERROR) and self.operation_message:
            return self.operation_message
        return self.health_message or self.conditions or self.operation_message

    def is_deployed(self, revision, includes=None):
        """Whether `revision` runs Synced, Succeeded and Healthy.

        `includes(seen)`, when given, says whether a revision Argo CD reports contains ours: Argo CD
        reports the revision its targetRevision (the branch) resolved to at its last comparison, for
        an auto-sync application and after a manual sync alike, so another service's commit pushed
        after ours can be what it reports, with our change in it.
        """
        return (
            self._runs(self.revision, revision, includes)
            and self.sync_status == SyncStatus.SYNCED
            and self.phase == OperationPhase.SUCCEEDED
            and self.health == Health.HEALTHY
        )

    @property
    def running_revision(self):
        """The revision whose manifests run: the one Argo CD reports Synced, else the one it deployed last.

        Argo CD compares with what targetRevision resolves to: after `argocd app rollback`, or a sync
        to another revision, it reports the branch head OutOfSync (status.sync.revision), and the
        revision that runs only in status.history. "" when it says neither.
        """
        if self.sync_status == SyncStatus.SYNCED and self.revision:
            return self.revision
        return self.last_deployed_revision or self.revision

    def runs(self, revision, includes=None):
        """Whether what runs is `revision`, or, by `includes` as for `is_deployed`, a later one containing it."""
        return self._runs(self.running_revision, revision, includes)

    def failure(self, name, revision, includes=None):
        """Why deploying `revision` to application `name` has failed for good, as a sentence, or "" while
        it may still succeed."""
        our_sync_ended_badly = self.phase in (OperationPhase.FAILED, OperationPhase.ERROR)
        if our_sync_ended_badly and self._runs(self.operation_revision, revision, includes):
            reason = self.message or "Argo CD gave no reason"
            return f"Argo CD application {name}: the sync to {revision[:12]} ended in phase {self.phase}: {reason}."
        if self.came_up_degraded(revision, includes):
            # The health verdict stands alone: the sync's own message ("successfully synced") is about
            # applying the manifests, which went well.
            why = self.health_message or "Argo CD gave no health message for its resources"
            if self.phase == OperationPhase.SUCCEEDED:
                return f"Argo CD application {name} is Degraded ({why}); the sync to {revision[:12]} itself succeeded."
            return f"Argo CD application {name} is Degraded ({why}) running revision {revision[:12]}."
        return ""

    def came_up_degraded(self, revision, includes=None):
        """Whether Argo CD applied `revision` (it runs Synced, no operation on it any more) and it came up
        Degraded. Degraded counts only once our revision is what runs: an application that was Degraded
        before the sync may be exactly what this release fixes."""
        return (
            self.health == Health.DEGRADED
            and self.sync_status == SyncStatus.SYNCED
            and self._runs(self.revision, revision, includes)
            and self.phase not in (OperationPhase.RUNNING, OperationPhase.TERMINATING)
        )

    @staticmethod
    def _runs(seen, revision, includes):
        return same_revision(seen, revision) or bool(seen and includes and includes(seen))

    def describe(self):
        parts = [f"sync {self.sync_status}" + (f" at {self.revision[:12]}" if self.revision else "")]
        if self.phase:
            parts.append(f"operation {self.phase}" + (f" ({self.operation_message})" if self.operation_message else ""))
        else:
            parts.append("no operation")
        parts.append(f"health {self.health}" + (f" ({self.health_message})" if self.health_message else ""))
        return ", ".join(parts) + (f"; {self.conditions}" if self.conditions else "")


def _health_message(status):
    """What the Degraded resources say, e.g. 'Deployment nexo-be: Deployment "nexo-be" exceeded its
    progress deadline'. Argo CD aggregates only the status into status.health; a message there is kept."""
    reasons = [message] if (message := (status.get("health") or {}).get("message")) else []
    for resource in status.get("resources") or []:
        health = resource.get("health") or {}
        if health.get("status") != Health.DEGRADED:
            continue
        resource_name = f"{resource.get('kind')} {resource.get('name')}"
        message = health.get("message") or ""
        if message in reasons:
            continue
        # Argo CD's own messages often name the resource already ('Deployment "nexo-be" exceeded …').
        if message and f'"{resource.get("name")}"' in message:
            reasons.append(message)
        else:
            reasons.append(f"{resource_name}: {message}" if message else f"{resource_name} is Degraded")
    return "; ".join(reasons)


class ArgoCD:
    def __init__(self, base_url, token, *, timeout=None, verify=None, session=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = settings.HTTP_TIMEOUT_SECONDS if timeout is None else timeout
        self.verify = settings.ARGOCD_VERIFY_TLS if verify is None else verify
        self.session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def __repr__(self):
        return f"<ArgoCD {self.base_url}>"

    @classmethod
    def from_settings(cls):
        """The configured Argo CD, or None when ARGOCD_URL is unset ("not configured")."""
        if not settings.ARGOCD_URL:
            return None
        return cls(settings.ARGOCD_URL, settings.ARGOCD_TOKEN)

    def list_applications(self, fields=None):
        """Every application the token may read, sorted by name: the `items` of Argo CD's ApplicationList.

        Argo CD leaves out the applications the token's RBAC may not "get" rather than refusing, so an
        application missing here may not exist or may be hidden. `fields` ("metadata.name",
        "status.health.status") asks Argo CD to answer only those paths of each application, as its UI
        does: the status of hundreds of applications in one small answer, without their resources.
        """
        params = None
        if fields:
            # Argo CD keeps what leads to a named path: the list's own metadata stays, which tells its
            # answer from any other JSON, and so does `items`, as [] when it lists nothing.
            params = {"fields": ",".join(["metadata.resourceVersion", *(f"items.{path}" for path in fields)])}
        body = self._call("GET", "/api/v1/applications", None, "list", "listing applications", params=params)
        return body.get("items") or []

    def get_application(self, name, refresh=None):
        """The Application as Argo CD serves it; refresh="normal" makes Argo CD compare with Git first."""
        params = {"refresh": refresh} if refresh else None
        path = f"/api/v1/applications/{quote(name, safe='')}"
        return self._call("GET", path, name, "get", f"reading application {name}", params=params)

    def sync(self, name, revision):
        """Ask Argo CD once to sync `name` to `revision`; returns the Application.

        Argo CD refuses while another operation runs (ArgoCDUnavailable, is_operation_in_progress); when
        that operation is a sync to this same revision (a job run twice, a request whose answer was
        lost) it is simply joined. Asking again is the caller's choice: `wait_until_deployed` does.
        """
        # The portal changes an image tag; deleting resources is a decision for people, so no prune.
        body = {"name": name, "revision": revision, "prune": False}
        path = f"/api/v1/applications/{quote(name, safe='')}/sync"
        try:
            return self._call("POST", path, name, "sync", f"syncing application {name} to {revision[:12]}", json=body)
        except ArgoCDUnavailable as error:
            if not error.is_operation_in_progress:
                raise
            application = self.get_application(name)
            if same_revision(_running_operation_revision(application), revision):
                return application
            raise

    def terminate_sync(self, name, revision, includes=None):
        """Ask Argo CD to terminate the sync of `revision` still running on `name`, as its Terminate
        button does; whether it was asked. With `includes(seen)`, an automated sync (auto-sync follows
        the branch) of a later revision containing ours is ours too. Anything else (a person's sync of
        another revision, a rollback's) is left alone.

        Argo CD marks the operation Terminating and its controller then ends it Failed ("Operation
        terminated"), or Error when it could not; until then a sync is refused as "another operation
        is already in progress".
        """
        application = self.get_application(name)
        running = _running_operation_revision(application)
        automated = _running_operation_automated(application)
        if not (
            same_revision(running, revision) or (running and automated and includes is not None and includes(running))
        ):
            return False
        path = f"/api/v1/applications/{quote(name, safe='')}/operation"
        doing = f"terminating the sync of application {name} to {revision[:12]}"
        try:
            # TerminateOperation is allowed by the "sync" RBAC action.
            self._call("DELETE", path, name, "sync", doing, application=False)
        except ArgoCDRefused as error:
            if error.code == GrpcCode.INVALID_ARGUMENT:
                return False  # it finished meanwhile: "No operation is in progress"
            raise
        return True

    def wait_until_deployed(
        self,
        name,
        revision,
        *,
        timeout,
        poll_seconds,
        auto_sync=False,
        includes=None,
        sleep=time.sleep,
        clock=time.monotonic,
        jitter=random.random,
        on_status=None,
        on_retry=None,
    ):
        """Bring `name` to `revision` and wait until it is Synced, its sync Succeeded and it is Healthy.

        auto_sync=False asks Argo CD to sync the revision first. auto_sync=True never asks: Argo CD syncs
        by itself, so each poll only asks it to refresh from Git, and `includes(seen)` may accept a later
        revision of the branch that contains ours.

        Transient failures (ArgoCDUnavailable: Argo CD unreachable or failing, another operation in
        progress) are asked again after a backoff that starts at `poll_seconds`, doubles up to
        BACKOFF_CAP_SECONDS and is shortened by up to BACKOFF_JITTER × `jitter()`; `on_retry(error, delay)`
        hears of each first. Raises ArgoCDRefused at once when Argo CD refuses the portal,
        ArgoCDDeployFailed when our sync fails or our revision runs Degraded, and ArgoCDTimeout when
        `timeout` seconds pass first, naming what was seen last. `on_status` sees every status polled.
        """
        deadline = clock() + timeout
        sync_requested = auto_sync
        failures, failing_since, last_error, last_status = 0, 0.0, None, None
        while True:
            attempt_started = clock()
            try:
                if not sync_requested:
                    self.sync(name, revision)
                    sync_requested = True
                application = self.get_application(name, refresh="normal" if auto_sync else None)
            except ArgoCDUnavailable as error:
                if last_error is None:
                    failing_since = attempt_started
                last_error = error
                delay = _backoff(poll_seconds, failures, jitter)
                failures += 1
            else:
                failures, last_error = 0, None
                status = ApplicationStatus.from_application(application)
                if on_status:
                    on_status(status)
                if status.is_deployed(revision, includes):
                    return status
                failure = status.failure(name, revision, includes)
                if failure:
                    applied = status.health if status.came_up_degraded(revision, includes) else ""
                    raise ArgoCDDeployFailed(failure, message=status.message, status=status, applied_health=applied)
                last_status = status
                delay = poll_seconds
            remaining = deadline - clock()
            if remaining <= 0:
                raise _timeout(name, revision, timeout, last_status, last_error, clock() - failing_since)
            delay = min(delay, remaining)
            if last_error is not None and on_retry:
                on_retry(last_error, delay)
            sleep(delay)

    def _call(self, method, path, name, action, doing, *, params=None, json=None, application=True):
        """Argo CD's JSON answer: an ApplicationList when no application is named (`name` None), else an
        Application, or any object when not `application`. Raises the ArgoCDError that says what went wrong."""
        attributes = {"nexo.argocd_application": name} if name else {}
        try:
            with metrics.outgoing_call("argocd", f"{method} {action}", **attributes) as call:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json,
                    headers=self._headers,
                    timeout=self.timeout,
                    verify=self.verify,
                )
                call.status = response.status_code
        except requests.RequestException as error:
            reason = describe_failure(error, self.timeout)
            raise ArgoCDUnavailable(
                f"Could not reach Argo CD at {self.base_url} while {doing}: {reason}.", message=reason
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.ok and _is_answer(body, listing=name is None, application=application):
            return body
        raise _error_from_response(response, body, self.base_url, name, action, doing)


def _is_answer(body, *, listing, application):
    """Whether `body` is what Argo CD answers. Get and Sync answer with an Application, List with an
    ApplicationList of them, and each has its metadata: JSON without (a gateway's or a health
    endpoint's) is not Argo CD's answer, and would not read as one. TerminateOperation answers {}."""
    if not isinstance(body, dict):
        return False
    if listing:
        items = body.get("items")
        return (
            isinstance(body.get("metadata"), dict)
            and (items is None or isinstance(items, list))
            and all(isinstance(_metadata(item).get("name"), str) for item in items or [])
        )
    return not application or isinstance(body.get("metadata"), dict)


def _metadata(item):
    metadata = item.get("metadata") if isinstance(item, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _running_operation_revision(application):
    """The revision of the sync Argo CD is busy with: the requested `operation` stays on the Application
    until the controller finishes it."""
    requested = ((application.get("operation") or {}).get("sync") or {}).get("revision")
    if requested:
        return requested
    status = ApplicationStatus.from_application(application)
    return status.operation_revision if status.phase == OperationPhase.RUNNING else ""


def _running_operation_automated(application):
    """Whether the operation on the Application was started by auto-sync (`initiatedBy.automated`)."""
    operation = application.get("operation") or ((application.get("status") or {}).get("operationState") or {}).get(
        "operation"
    )
    return bool(((operation or {}).get("initiatedBy") or {}).get("automated"))


def _backoff(first, failures, jitter):
    """The delay after the (failures + 1)-th transient failure in a row."""
    delay = min(max(BACKOFF_CAP_SECONDS, first), first * 2 ** min(failures, 32))
    return delay * (1 - BACKOFF_JITTER * jitter())


def _seconds(duration):
    return f"{round(duration, 1):g} s"


def _timeout(name, revision, timeout, last_status, last_error, failing_for):
    wanted = f"run revision {revision[:12]} Synced and Healthy"
    if last_error is None:
        seen = last_status.describe()
        return ArgoCDTimeout(
            f"Argo CD application {name} did not {wanted} within {_seconds(timeout)}. Last seen: {seen}.",
            message=seen,
        )
    if last_error.http_status is None:
        trouble = f"Argo CD did not answer for {_seconds(failing_for)}: {last_error.message}"
    elif last_error.is_operation_in_progress:
        trouble = f"Argo CD refused to sync application {name} for {_seconds(failing_for)}: {last_error.message}"
    else:
        trouble = f"Argo CD answered with errors for {_seconds(failing_for)}, last HTTP {last_error.http_status}" + (
            f": {last_error.message}" if last_error.message else ""
        )
    sentence = f"{trouble}. Gave up waiting for application {name} to {wanted} after {_seconds(timeout)}"
    if last_status is not None:
        sentence += f"; it last showed {last_status.describe()}"
    return ArgoCDTimeout(
        sentence + ".",
        last_error=last_error,
        http_status=last_error.http_status,
        code=last_error.code,
        message=last_error.message,
    )


def _error_from_response(response, body, base_url, name, action, doing):
    status = response.status_code
    from_api = isinstance(body, dict) and "code" in body
    if from_api:
        code, message = body.get("code"), body.get("message") or body.get("error") or ""
    else:
        code, message = None, excerpt(response.text)
    details = {"http_status": status, "code": code, "message": message}
    answer = f"HTTP {status}" + (f": {message}" if message else "")
    if code == GrpcCode.FAILED_PRECONDITION and OPERATION_IN_PROGRESS in message:
        return ArgoCDUnavailable(f"Argo CD cannot start {doing} yet ({answer}).", **details)
    if status >= 500 or status in TRANSIENT_HTTP_STATUSES:
        return ArgoCDUnavailable(f"Argo CD at {base_url} failed while {doing} ({answer}).", **details)
    if not from_api:
        what = "an answer that is not Argo CD's API" if response.ok else f"HTTP {status}, not from Argo CD's API"
        return ArgoCDRefused(
            f"Argo CD at {base_url} gave {what} while {doing}"
            + (f": {message}" if message else "")
            + ". Is ARGOCD_URL the address of the Argo CD server?",
            **details,
        )
    if code == GrpcCode.UNAUTHENTICATED or status == 401:
        sentence = (
            f"Argo CD at {base_url} did not accept the portal's token while {doing} ({answer}). ARGOCD_TOKEN "
            "is missing, expired or revoked: set it to a valid token of the portal's Argo CD account."
        )
    elif name is None:
        sentence = f"Argo CD refused {doing} ({answer})."
    elif (code == GrpcCode.PERMISSION_DENIED or status == 403) and "sync window" in message.lower():
        sentence = (
            f"Argo CD refused {doing} ({answer}): a sync window of the application's project forbids it now. "
            "Sync when the window allows, or change the window in Argo CD."
        )
    elif code == GrpcCode.PERMISSION_DENIED or status == 403:
        # Argo CD answers "permission denied" for applications that do not exist too, so as not to
        # reveal which ones do.
        sentence = (
            f"Argo CD denied {doing} ({answer}). Either the token's account (ARGOCD_TOKEN) lacks the RBAC "
            f"permission to {action} application {name}, or application {name} does not exist (Argo CD answers "
            "both alike): check the account's Argo CD RBAC policy, and the argocd_app_template that gave "
            f"the name {name}."
        )
    elif code == GrpcCode.NOT_FOUND or status == 404:
        sentence = (
            f"Argo CD has no application named {name} ({answer}), found while {doing}. The name comes from "
            "the argocd_app_template of the environment (or of the service, when it has its own): make it "
            "give the name of the application in Argo CD."
        )
    else:
        sentence = f"Argo CD refused {doing} ({answer})."
    return ArgoCDRefused(sentence, **details)
