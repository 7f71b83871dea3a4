"""What CI tells the portal: the builds it registers and the check results it reports.

A build is one release per (service, commit, image digest), never two versions: a retried call
with the same commit and digest gets the release it created the first time, and one that says other
things of it (changelog, hotfix, commit time) is a conflict: a build's details are fixed once
registered. Without a version,
the next CalVer build of the current month is allocated. A version that exists with another
digest is a conflict: a version names exactly one image, forever.

Only the service's team (or its CI, with a token allowed on the service) may do either
(`policy.why_not_report`); these functions check it themselves.
"""

import json
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction, AuditEvent
from environments.models import Environment
from nexo_portal.lib.errors import Refused
from nexo_portal.lib.queries import one_or_none
from nexo_portal.lib.words import listed

from . import calver, image_gate, policy, transitions, verification
from .models import (
    BuildCounter,
    BuildNumbersExhausted,
    CheckResult,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    Release,
)


class RegistrationConflict(Refused):
    """The build contradicts what is registered already; the message says how."""


class UnknownCheck(Refused):
    """A check result no environment requires: it would count nowhere. The message names those they do."""

    def __init__(self, message):
        super().__init__(message, field="check")


@dataclass
class Registration:
    release: Release
    created: bool
    promotion: object = None
    # Why the first environment did not take it now (it goes there once free, if still the newest).
    waits: str | None = None
    # {environment: what it requires of the image}, read with the environments (None: not read).
    image_requirements: dict | None = None


# Another registration of this build (a retry racing its original) or of this version committed while
# this one ran, or a writer holding the chain's lock (the GitOps history import, a release added in the
# admin) wrote the version this one had written and waits for it, which PostgreSQL ends by aborting
# this one. Everything it wrote is rolled back, its build number included, and another look answers
# as for a retry, or with the conflict, or with the next build number. As get_or_create() does.
ATTEMPTS = 3
RACED_CONSTRAINTS = (
    "release_build_registered_once",
    "release_version_unique_per_service",
    "release_build_unique_per_month",
)
UNIQUE_VIOLATION, DEADLOCK_DETECTED = "23505", "40P01"
# How far ahead of the portal's clock a commit may be dated: clocks that disagree a little, not a
# commit made after its build.
COMMIT_CLOCK_SKEW = timedelta(minutes=5)


def register_build(
    service,
    *,
    commit_sha,
    image_digest,
    committed_at=None,
    changelog="",
    is_hotfix=False,
    fixes=None,
    version=None,
    actor=None,
):
    policy.ensure(policy.why_not_report(actor, service))
    _ensure_committed_before_now(committed_at)
    details = {"committed_at": committed_at, "changelog": changelog, "is_hotfix": is_hotfix, "fixes": fixes}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _register(service, commit_sha, image_digest, version, actor, details)
        except (IntegrityError, OperationalError) as error:
            if attempt == ATTEMPTS or not _lost_a_race(error):
                raise


def _ensure_committed_before_now(committed_at):
    """A commit dated after its build is a time zone gone wrong (a local time sent as UTC) or a clock
    running fast; kept, it would be left out of lead time without a word (DORA's commit after
    deployment). Clocks differ a little between the machine that made the commit, CI and the portal."""
    now = timezone.now()
    if committed_at is None or committed_at <= now + COMMIT_CLOCK_SKEW:
        return
    minutes = int(COMMIT_CLOCK_SKEW.total_seconds() // 60)
    raise RegistrationConflict(
        f"committed_at {_utc(committed_at)} is after the portal's clock ({_utc(now)}) by more than the {minutes} "
        "minutes clocks may differ: a build comes from a commit made before it. Send the commit's time as Git "
        "records it, with its offset (git show -s --format=%cI HEAD); a local time sent as UTC, or a clock running "
        "fast where the commit was made, gives such a date.",
        field="committed_at",
    )


def _utc(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lost_a_race(error):
    cause = error.__cause__
    sqlstate = getattr(cause, "sqlstate", None)  # PostgreSQL's: SQLite's errors carry none
    if sqlstate == UNIQUE_VIOLATION:
        return cause.diag.constraint_name in RACED_CONSTRAINTS
    return sqlstate == DEADLOCK_DETECTED


def _register(service, commit_sha, image_digest, version, actor, details):
    # Registrations take no lock until they record their events (_announce): two of one service
    # meet at the month's build counter, or at the release's unique constraints (register_build).
    with transaction.atomic():
        # At most one (release_build_registered_once).
        existing = one_or_none(
            Release.objects.filter(service=service, commit_sha=commit_sha, image_digest=image_digest)
        )
        if existing:
            if version and version != existing.version:
                raise RegistrationConflict(
                    f"This build (commit {commit_sha[:7]}, digest {image_digest[:19]}…) is already registered as "
                    f"{service.name} {existing.version}; it cannot also be {version}."
                )
            existing.service = service  # the answer names it: spares reading it again
            _ensure_same_details(existing, details)
            return _registered_before(existing)

        if version:
            parsed = calver.parse(version)
            taken = Release.objects.filter(
                service=service, year=parsed.year, month=parsed.month, build=parsed.build
            ).first()
            if taken:
                raise RegistrationConflict(
                    f"{service.name} {taken.version} is already registered with digest {taken.image_digest} "
                    f"(commit {taken.commit_sha[:7]}); a version names one image forever: register a new build instead."
                )
        else:
            today = timezone.localdate()
            try:
                build = BuildCounter.allocate(service, today.year, today.month)
            except BuildNumbersExhausted as error:
                raise RegistrationConflict(str(error)) from None
            version = str(calver.CalVer(today.year, today.month, build))

        release = Release.objects.create(
            service=service,
            version=version,
            commit_sha=commit_sha,
            image_digest=image_digest,
            registered_by=audit.actor_name(actor),
            **details,
        )
        return _announce(release, actor)


# How much of a registered changelog a conflict quotes.
QUOTED_CHANGELOG = 60


def _ensure_same_details(release, details):
    """A retry is the same call again. One that says other things of the build (another changelog, hotfix,
    commit time) would be answered with what was registered while its caller believed the new values kept;
    it is refused, naming what is registered, rather than quietly ignored or applied to a build that may
    be deployed already."""
    fixes = details["fixes"]
    given = {
        "committed_at": details["committed_at"],
        "changelog": details["changelog"],
        "hotfix": details["is_hotfix"],
        "fixes": fixes.pk if fixes else None,
    }
    registered = {
        "committed_at": release.committed_at,
        "changelog": release.changelog,
        "hotfix": release.is_hotfix,
        "fixes": release.fixes_id,
    }
    differing = [name for name in given if given[name] != registered[name]]
    if not differing:
        return
    values = [f"{name} {_registered_value(release, name)}" for name in differing]
    said = listed(values)
    raise RegistrationConflict(
        f"This build (commit {release.commit_sha[:7]}, digest {release.image_digest[:19]}…) is "
        f"{release.service.name} {release.version}, registered with {said}; a build's details are fixed once "
        "registered: register a new build to change them.",
        field=differing[0] if len(differing) == 1 else None,
    )


def _registered_value(release, name):
    """As the API would send it: JSON's words and quotes."""
    if name == "committed_at":
        return _utc(release.committed_at) if release.committed_at else "null"
    if name == "changelog":
        text = release.changelog
        return json.dumps(text if len(text) <= QUOTED_CHANGELOG else text[:QUOTED_CHANGELOG] + "…", ensure_ascii=False)
    if name == "hotfix":
        return json.dumps(release.is_hotfix)
    return release.fixes.version if release.fixes_id else "null"


def _registered_before(release):
    """A retry (CI's, after a timeout) answers as the original did: the automatic promotion into the first
    environment, made then or since it waited, or else why the build waits to enter it, as the audit
    log said when it was deferred. The pipeline follows `.promotion.url` from either answer."""
    environments = list(Environment.objects.in_pipeline_order())
    promotion = waits = None
    if environments:
        first = environments[0]
        promotion = (
            Promotion.objects.filter(release=release, environment=first, kind=PromotionKind.AUTO)
            .order_by("requested_at")
            .first()
        )
        if promotion is not None:
            promotion.release, promotion.environment, promotion.service = release, first, release.service
        else:
            waits = (
                AuditEvent.objects.filter(
                    action=AuditAction.PROMOTION_DEFERRED,
                    service=release.service.name,
                    environment=first.name,
                    version=release.version,
                )
                .order_by("-id")
                .values_list("data__reason", flat=True)
                .first()
            )
    return Registration(
        release,
        created=False,
        promotion=promotion,
        waits=waits,
        image_requirements=image_gate.requirements_by_environment(environments),
    )


def _announce(release, actor):
    """Record the registration and start the build's way through the pipeline, under the chain's lock.

    The lock is taken only now, after the release and its build number are written: registrations
    spend most of their time before it, in parallel. They lock the month's build counter before
    the chain, against the rule of the chain first (`audit.log.lock_chain`). Only registrations
    write the counter; a writer holding the chain that creates the very version a registration
    has written (the GitOps history import, the admin) waits for it, a deadlock PostgreSQL ends
    by aborting the registration, which register_build tries again. What decides the first
    environment (its freezes, holds, what runs and waits there) is read under the chain's lock,
    as for every request.
    """
    service, commit_sha, image_digest = release.service, release.commit_sha, release.image_digest
    with audit.chain_transaction(savepoint=False):
        audit.record(
            AuditAction.RELEASE_REGISTERED,
            actor=actor,
            service=service.name,
            version=release.version,
            message=f"{service.name} {release.version} registered from commit {commit_sha[:7]}",
            data={
                "commit_sha": commit_sha,
                "image_digest": image_digest,
                "hotfix": release.is_hotfix,
                "tags": release.tags(),
            },
        )
        # Every environment with what closes it to this build, in one query: the first decides the
        # automatic promotion, all of them what the registration's answer says they require.
        environments = list(
            Hold.objects.reason_in_each(Environment.objects.with_active_freeze(), service).in_pipeline_order()
        )
        promotion, waits = _deploy_to_first_environment(release, environments)
        if waits:
            # It goes once the place frees up if it was registered after the last request there
            # (transitions.promote_waiting): a request that took the lock while this one waited for
            # it is later than the release's first timestamp. Registered now, in the chain's order.
            release.registered_at = timezone.now()
            Release.objects.filter(pk=release.pk).update(registered_at=release.registered_at)
        return Registration(
            release,
            created=True,
            promotion=promotion,
            waits=waits,
            image_requirements=image_gate.requirements_by_environment(environments),
        )


def _deploy_to_first_environment(release, environments):
    """(the automatic promotion, None), or (None, why it waits), or (None, None) where none is due."""
    if not environments:
        return None, None
    first = environments[0]
    first._previous = None  # nothing comes before it: spares previous() its query
    if not first.auto_promote or not release.service.auto_deploy_on_registration:
        return None, None
    # Refused by a rule (a freeze, a hold, something running there): the release stays registered and
    # goes once the place frees up, if it is still the newest then (transitions.promote_waiting).
    return transitions.request_automatic_promotion(release, first)


def report_check_result(release, environment, *, name, passed, url="", summary="", actor=None):
    """CI reports an E2E, performance or security result of `release` in `environment`.

    Every run is kept; the newest result of a check is the one that counts for the verdict. A check
    no environment requires is refused (UnknownCheck): a misspelt name (`e2e-test`) kept quietly would
    count nowhere while qa's soak failed for want of `e2e`. One required elsewhere is kept wherever it
    is reported: CI that runs qa's suite in staging too may say so.
    """
    policy.ensure(policy.why_not_report(actor, release.service))
    _ensure_required_somewhere(name)
    with audit.chain_transaction():
        verified = _verified_requiring(release, environment, name)
        was_overturned = bool(verified and passed and verification.failing_checks(release, environment))
        result = CheckResult.objects.create(
            release=release,
            environment=environment,
            name=name,
            passed=passed,
            url=url,
            summary=summary,
            reported_by=audit.actor_name(actor),
        )
        # A result decides a verdict, so who reported it (and, for a GitHub Actions run, the claims
        # it was trusted for) is kept where it cannot be edited; and so does what it did to a verdict given.
        outcome = "passed" if passed else "failed"
        message = f"{name} {outcome} for {release.service.name} {release.version} in {environment.name}"
        data = {"check": name, "passed": passed, "url": url, "result": result.pk}
        if verified and not passed:
            _, details = verification.describe_failed([result])
            message += (f" ({details})" if details else "") + (
                f"; the verification of promotion #{verified.pk} no longer holds: {release.version} may not go on "
                f"from {environment.name} until {name} passes again"
            )
            data["overturns_verification"] = verified.pk
        elif was_overturned and not verification.failing_checks(release, environment):
            message += f"; the verification of promotion #{verified.pk} holds again"
            data["restores_verification"] = verified.pk
        audit.record(
            AuditAction.CHECK_REPORTED,
            actor=actor,
            service=release.service.name,
            environment=environment.name,
            version=release.version,
            message=message,
            data=data,
        )
    return result


def _verified_requiring(release, environment, name):
    """The promotion that verified `release` in `environment`, when `environment` requires the check `name`:
    a result of it reported since decides whether that verdict still holds (verification.failing_checks)."""
    if name not in environment.required_checks:
        return None
    return (
        Promotion.objects.filter(release=release, environment=environment, state=PromotionState.VERIFIED)
        .order_by("-finished_at")
        .first()
    )


def _ensure_required_somewhere(name):
    required = Environment.objects.required_check_names()
    if any(name in checks for checks in required.values()):
        return
    if not required:
        raise UnknownCheck(
            "No environment requires any check, so its result would count nowhere. Add the check to an "
            "environment's required checks (admin → Environments) before CI reports it."
        )
    names = ", ".join(sorted({check for checks in required.values() for check in checks}))
    where = "; ".join(f"{environment}: {', '.join(checks)}" for environment, checks in required.items())
    raise UnknownCheck(
        f"No environment requires a check called “{name}”, so its result would count nowhere. The checks required "
        f"are {names} ({where}). Report one of them, or add the check to an environment's required checks "
        "(admin → Environments) before CI reports it."
    )
