"""Client for the Argo CD REST API: read an application, sync it to a revision, wait until that revision runs.

Argo CD serves gRPC through grpc-gateway (server/application/application.proto): a failure comes back
as {"error": ..., "code": <gRPC code>, "message": ...} with the HTTP status grpc-gateway maps the code to.
"""

import time
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import quote

import requests
from django.conf import settings

from nexo_portal.lib.http import describe_failure, excerpt

SYNC_ATTEMPTS = 5
SYNC_RETRY_SECONDS = 5.0
OPERATION_IN_PROGRESS = "another operation is already in progress"


class GrpcCode(IntEnum):
    """The gRPC status codes Argo CD answers with that the portal treats differently."""

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
    DEGRADED = "Degraded"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class ArgoCDError(Exception):
    """Argo CD refused, failed, or could not be reached. str() is a sentence for the release manager;
    `message` is Argo CD's own words, `code` its gRPC code and `http_status` the HTTP status (None when
    no answer came)."""

    def __init__(self, sentence, *, http_status=None, code=None, message=""):
        super().__init__(sentence)
        self.http_status = http_status
        self.code = code
        self.message = message

    @property
    def is_transient(self):
        """Worth asking again later: Argo CD was unreachable or failed on its side (a restarting server)."""
        return self.http_status is None or self.http_status >= 500


class ArgoCDTimeout(ArgoCDError):
    """The application did not reach the revision, Synced and Healthy in time."""


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

    @classmethod
    def from_application(cls, application):
        status = application.get("status") or {}
        sync = status.get("sync") or {}
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
        )

    @property
    def message(self):
        """The most useful of Argo CD's messages: a failed sync's, else why it is unhealthy, else the rest."""
        if self.phase in (OperationPhase.FAILED, OperationPhase.ERROR) and self.operation_message:
            return self.operation_message
        return self.health_message or self.conditions or self.operation_message

    def is_deployed(self, revision, includes=None):
        """Whether `revision` runs Synced, Succeeded and Healthy.

        `includes(seen)`, when given, says whether a revision Argo CD reports contains ours: an
        auto-sync application follows the branch, so another service's commit pushed after ours
        can be what it reports, with our change in it.
        """
        return (
            self._runs(self.revision, revision, includes)
            and self.sync_status == SyncStatus.SYNCED
            and self.phase == OperationPhase.SUCCEEDED
            and self.health == Health.HEALTHY
        )

    def failure(self, name, revision, includes=None):
        """Why deploying `revision` to application `name` has failed for good, as a sentence, or "" while
        it may still succeed."""
        our_sync_ended_badly = self.phase in (OperationPhase.FAILED, OperationPhase.ERROR)
        if our_sync_ended_badly and self._runs(self.operation_revision, revision, includes):
            reason = self.message or "Argo CD gave no reason"
            return f"Argo CD application {name}: the sync to {revision[:12]} ended in phase {self.phase}: {reason}."
        # Degraded counts only once our revision is what runs: an application that was Degraded before
        # the sync may be exactly what this release fixes.
        if (
            self.health == Health.DEGRADED
            and self.sync_status == SyncStatus.SYNCED
            and self._runs(self.revision, revision, includes)
            and self.phase not in (OperationPhase.RUNNING, OperationPhase.TERMINATING)
        ):
            # The health verdict stands alone: the sync's own message ("successfully synced") is about
            # applying the manifests, which went well.
            why = self.health_message or "Argo CD gave no health message for its resources"
            if self.phase == OperationPhase.SUCCEEDED:
                return f"Argo CD application {name} is Degraded ({why}); the sync to {revision[:12]} itself succeeded."
            return f"Argo CD application {name} is Degraded ({why}) running revision {revision[:12]}."
        return ""

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

    def get_application(self, name, refresh=None):
        """The Application as Argo CD serves it; refresh="normal" makes Argo CD compare with Git first."""
        params = {"refresh": refresh} if refresh else None
        path = f"/api/v1/applications/{quote(name, safe='')}"
        return self._call("GET", path, f"reading application {name}", params=params)

    def sync(self, name, revision, *, attempts=SYNC_ATTEMPTS, retry_seconds=SYNC_RETRY_SECONDS, sleep=time.sleep):
        """Start a sync of `name` to `revision`; returns the Application.

        While another operation runs Argo CD refuses with FailedPrecondition; that is retried a few
        times, and when the running operation is already ours (a job run twice) it is simply joined.
        """
        # The portal changes an image tag; deleting resources is a decision for people, so no prune.
        body = {"name": name, "revision": revision, "prune": False}
        path = f"/api/v1/applications/{quote(name, safe='')}/sync"
        for attempt in range(1, attempts + 1):
            try:
                return self._call("POST", path, f"syncing application {name} to {revision[:12]}", json=body)
            except ArgoCDError as error:
                if error.code != GrpcCode.FAILED_PRECONDITION or OPERATION_IN_PROGRESS not in error.message:
                    raise
                application = self.get_application(name)
                current = ApplicationStatus.from_application(application)
                if current.phase == OperationPhase.RUNNING and same_revision(current.operation_revision, revision):
                    return application
                if attempt == attempts:
                    raise ArgoCDError(
                        f"Argo CD kept refusing to sync application {name} to {revision[:12]}: {error.message} "
                        f"(asked {attempts} times, {retry_seconds:g} s apart).",
                        http_status=error.http_status,
                        code=error.code,
                        message=error.message,
                    ) from error
                sleep(retry_seconds)

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
        on_status=None,
    ):
        """Bring `name` to `revision` and wait until it is Synced, its sync Succeeded and it is Healthy.

        auto_sync=False asks Argo CD to sync the revision first. auto_sync=True never asks: Argo CD syncs
        by itself, so each poll only asks it to refresh from Git, and `includes(seen)` may accept a later
        revision of the branch that contains ours. Raises ArgoCDError with Argo CD's
        message when our sync fails or our revision runs Degraded, ArgoCDTimeout when `timeout` seconds
        pass first. Unreachable or failing Argo CD servers are polled again until the deadline, so a
        restart of argocd-server does not fail a promotion. `on_status` sees every status polled.
        """
        deadline = clock() + timeout
        if not auto_sync:
            self.sync(name, revision, retry_seconds=poll_seconds, sleep=sleep)
        while True:
            try:
                application = self.get_application(name, refresh="normal" if auto_sync else None)
            except ArgoCDError as error:
                if not error.is_transient:
                    raise
                last_seen = str(error).rstrip(".")
            else:
                status = ApplicationStatus.from_application(application)
                if on_status:
                    on_status(status)
                if status.is_deployed(revision, includes):
                    return status
                failure = status.failure(name, revision, includes)
                if failure:
                    raise ArgoCDError(failure, message=status.message)
                last_seen = status.describe()
            remaining = deadline - clock()
            if remaining <= 0:
                raise ArgoCDTimeout(
                    f"Argo CD application {name} did not run revision {revision[:12]} Synced and Healthy within "
                    f"{timeout:g} s. Last seen: {last_seen}.",
                    message=last_seen,
                )
            sleep(min(poll_seconds, remaining))

    def _call(self, method, path, doing, *, params=None, json=None):
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                headers=self._headers,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as error:
            reason = describe_failure(error, self.timeout)
            raise ArgoCDError(
                f"Could not reach Argo CD at {self.base_url} while {doing}: {reason}.", message=reason
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.ok and isinstance(body, dict):
            return body
        raise _error_from_response(response, body, doing, self.base_url)


def _error_from_response(response, body, doing, base_url):
    status = response.status_code
    if not isinstance(body, dict) or "code" not in body:
        text = excerpt(response.text)
        answer = "an answer that is not Argo CD's API" if response.ok else f"HTTP {status}"
        hint = "" if status >= 500 else " Is ARGOCD_URL the address of the Argo CD server?"
        return ArgoCDError(
            f"Argo CD at {base_url} gave {answer} while {doing}" + (f": {text}" if text else "") + "." + hint,
            http_status=status,
            message=text,
        )
    message = body.get("message") or body.get("error") or ""
    code = body.get("code")
    if code == GrpcCode.UNAUTHENTICATED:
        sentence = f"Argo CD rejected the portal's token while {doing} (HTTP {status}): {message}. Check ARGOCD_TOKEN."
    elif code == GrpcCode.PERMISSION_DENIED:
        # Argo CD answers "permission denied" for applications that do not exist too, so as not to
        # reveal which ones do.
        sentence = (
            f"Argo CD denied {doing} (HTTP {status}): {message}. Either the application does not exist or the "
            "token's account lacks the permission; check the environment's Argo CD application name and the "
            "RBAC policy."
        )
    elif code == GrpcCode.NOT_FOUND:
        sentence = (
            f"Argo CD found nothing while {doing} (HTTP {status}): {message}. "
            "Check the environment's Argo CD application name template."
        )
    elif status >= 500:
        sentence = f"Argo CD failed while {doing} (HTTP {status}): {message}."
    else:
        sentence = f"Argo CD refused {doing} (HTTP {status}): {message}."
    return ArgoCDError(sentence, http_status=status, code=code, message=message)
