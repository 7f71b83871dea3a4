"""The audit log exported in the shape of the platform team's "Structured Audit Log"
(versioning-and-promotion.md; docs/audit-record.schema.json is its JSON schema).

By default one record per completed promotion (`promotion_records`): one that deployed and whose
soak gave its verdict, with `event: "promotion"`, service, version, from and to environment, the
time of the verdict, the initiator and the approvers (e-mail addresses where the portal knows
them, else user names), the pull request or else the GitOps commit's web page, Argo CD's history id
of the sync that deployed it, whether it was a rollback, and `validation_results`: CI's checks (the
newest result of each by then, and `no_data` for one the environment required that CI had not
reported, as the verdict recorded it), the soak's verdict on each check it sampled (`soak:…`), and
the image's digest and signature checks where the environment requires them (`image:…`). A failed
promotion says where it failed and why (`failed_step`, `error`: the verdict's words).

`per=step` gives the log itself, one record per event (`step_records`), in the same shape plus
what the portal knows besides (actor, promotion id, GitOps commit, message, the event's data and
its chain hashes); fields an event did not record itself are filled from its promotion as it was
at the event's time, and a promotion's people are named as the records per promotion name them
(`actor` and `data` keep the names the log recorded). The pages and the API both export through
`export_json`; filters that select events rather than promotions (an actor, an action other than a
verdict) are refused per promotion (`AuditFilterForm.why_not_per_promotion`), not answered with `[]`.

Every record says what the last verification of the chain says of its event, or of its verdict per
promotion (`chain`: verified, broken, unverified; `audit.checkpoints.ChainStatus.of_event`), in the
record itself, so that a file saved from the export still says it.
"""

import json
from datetime import UTC
from itertools import pairwise

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from audit import checkpoints
from audit.models import VERDICT_ACTIONS, AuditAction
from environments.models import Environment

from .gitops.repo import commit_url, redact
from .models import (
    PIPELINE,
    ApprovalDecision,
    CheckResult,
    Promotion,
    PromotionKind,
    PromotionState,
    newest_per_check,
)

CHUNK_SIZE = 1000


class Per:
    """What one exported record stands for (the export's `per` parameter)."""

    PROMOTION = "promotion"
    STEP = "step"
    CHOICES = (PROMOTION, STEP)
    REFUSAL = "per is promotion (one record per completed promotion) or step (one record per audit event)."


def timestamp(moment):
    """UTC in whole seconds, as the reference example writes it (`2026-02-01T10:30:00Z`): one shape
    for every record, which jq's `fromdateiso8601` reads. Events within one second stay apart and
    in order by their `id` (`audit_event_id` per promotion) and their chain hashes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _chunks(events):
    chunk = []
    for event in events.iterator(chunk_size=CHUNK_SIZE):
        chunk.append(event)
        if len(chunk) == CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _previous_environments():
    ordered = list(Environment.objects.in_pipeline_order().values_list("name", flat=True))
    return {after: before for before, after in pairwise(ordered)}


def _sources(chunk, promotions, previous_environment):
    """{promotion id: the environment its release came from}, for a chunk's events.

    The environment before in the pipeline, where the policy had the release verified. Break-glass
    and rollbacks skip that rule: theirs only where the release was verified there, else None (a
    fix built minutes ago and sent straight to production came from no staging). One query a chunk.
    """
    sources, unsure = {}, {}
    for event in chunk:
        promotion = promotions.get(event.promotion_id)
        if promotion is None:
            continue
        before = previous_environment.get(event.environment)
        sources[promotion.pk] = before
        if before and (promotion.is_emergency or promotion.kind == PromotionKind.ROLLBACK):
            unsure[promotion.pk] = (promotion.release_id, before)
    if unsure:
        verified = set(
            Promotion.objects.filter(
                release_id__in={release for release, _ in unsure.values()},
                environment__name__in={name for _, name in unsure.values()},
                state=PromotionState.VERIFIED,  # as the policy reads "verified there"
            ).values_list("release_id", "environment__name")
        )
        for pk, place in unsure.items():
            if place not in verified:
                sources[pk] = None
    return sources


def step_records(events):
    """One dict per event of the queryset `events`, in its order; a few queries per thousand events."""
    previous_environment = _previous_environments()
    chain = checkpoints.chain_status()

    for chunk in _chunks(events):
        promotion_ids = {event.promotion_id for event in chunk if event.promotion_id}
        promotions = {
            promotion.pk: promotion
            for promotion in Promotion.objects.filter(pk__in=promotion_ids)
            .select_related("requested_by", "accountable_requester")
            .prefetch_related("approvals__user")
        }
        checks = _check_results(chunk, promotions)
        sources = _sources(chunk, promotions, previous_environment)
        for event in chunk:
            yield _record(event, promotions.get(event.promotion_id), sources, checks, chain)


def promotion_records(events):
    """One dict per completed promotion whose verdict is among the queryset `events`, in its order.

    A few queries per thousand promotions.
    """
    previous_environment = _previous_environments()
    chain = checkpoints.chain_status()
    verdicts = events.filter(action__in=VERDICT_ACTIONS, promotion_id__isnull=False)
    for chunk in _chunks(verdicts):
        promotions = {
            promotion.pk: promotion
            for promotion in Promotion.objects.filter(
                pk__in={event.promotion_id for event in chunk}, deployed_at__isnull=False
            )
            .select_related("requested_by", "accountable_requester", "release", "environment")
            .prefetch_related("approvals__user")
        }
        checks = _check_results(chunk, promotions)
        sources = _sources(chunk, promotions, previous_environment)
        for event in chunk:
            promotion = promotions.get(event.promotion_id)
            if promotion is not None:
                yield _promotion_record(event, promotion, sources, checks, chain)


def _email(user):
    return (user.email or user.get_username()) if user is not None else None


def _initiator(promotion):
    """Who asked: the person's e-mail address; for an API token, its creator's (the person it counts as)."""
    if promotion.requested_by is not None:
        return _email(promotion.requested_by)
    if promotion.accountable_requester is not None:
        return _email(promotion.accountable_requester)
    return promotion.requested_via or PIPELINE


def _people(promotion):
    """{the user name the log records: the name a record per promotion gives} for a promotion's people."""
    people = {promotion.requester_name(): _initiator(promotion)}
    people.update({approval.user.get_username(): _email(approval.user) for approval in promotion.approvals.all()})
    return people


def _image_checks(promotion):
    """The registry's checks the environment required before the commit (releases/image_gate.py):
    `image:digest`, `image:signature` (a Cosign key) and `image:attestation` (a keyless Sigstore
    attestation by the service's workflow identity). A promotion that deployed passed them, or the gate would
    have failed it; `no_data` when the release keeps no record of the check (it was required later)."""
    environment, release = promotion.environment, promotion.release
    results = {}
    if environment.requires_image_check:
        results["image:digest"] = "passed" if release.image_checked_at else "no_data"
    if environment.requires_signature:
        results["image:signature"] = "passed" if release.signature_verified_at else "no_data"
    if environment.requires_attestation:
        results["image:attestation"] = "passed" if release.attestation_verified_at else "no_data"
    return results


def _promotion_record(event, promotion, sources, checks, chain):
    data = event.data or {}
    # Delivered by pull request, the promotion knows its PR; otherwise the commit is the record.
    pr_url = promotion.pr_url or None
    if pr_url is None and promotion.gitops_commit_sha:
        pr_url = commit_url(redact(settings.GITOPS_REPO_URL), promotion.gitops_commit_sha)
    validation_results = _validation_results(event, promotion, checks)
    validation_results.update(_image_checks(promotion))
    failed = event.action == AuditAction.PROMOTION_FAILED
    return {
        "event": "promotion",
        "service": event.service,
        "version": event.version,
        "from_environment": sources[promotion.pk],
        "to_environment": event.environment,
        "timestamp": timestamp(event.created_at),
        "initiator": _initiator(promotion),
        "approvers": [
            _email(approval.user)
            for approval in promotion.approvals.all()
            if approval.decision == ApprovalDecision.APPROVE
        ],
        "pr_url": pr_url,
        "argocd_sync_id": promotion.argocd_sync_id or None,
        "rollback": promotion.kind == PromotionKind.ROLLBACK,
        "validation_results": validation_results,
        "outcome": "failed" if failed else "verified",
        "failed_step": data.get("step") if failed else None,
        "error": data.get("error") if failed else None,
        "emergency": promotion.is_emergency,
        "promotion_id": promotion.pk,
        "commit": promotion.gitops_commit_sha or None,
        "deployed_at": timestamp(promotion.deployed_at),
        "audit_event_id": event.pk,
        "hash": event.hash,
        # The events a record stands for come before its verdict: a break at any of them is one before it.
        "chain": chain.of_event(event.pk),
    }


def _validation_results(event, promotion, checks):
    """What a verdict was taken on: CI's checks, with those it lacked as the verdict recorded them
    (`ci_results`: a required check not reported is `no_data`), and the soak's verdict on each check."""
    data = event.data or {}
    results = _ci_results(event, promotion, checks)
    results.update(data.get("ci_results") or {})
    results.update(data.get("soak_results") or {})
    return results


def _ci_results(event, promotion, checks):
    """CI's checks of the promotion's release there, the newest result of each reported by the event."""
    reported_by_then = [
        check
        for check in checks
        if (check.release_id, check.environment_id) == (promotion.release_id, promotion.environment_id)
        and check.reported_at <= event.created_at
    ]
    return {check.name: "passed" if check.passed else "failed" for check in newest_per_check(reported_by_then)}


def _check_results(chunk, promotions):
    wanted = {promotions[e.promotion_id] for e in chunk if e.action in VERDICT_ACTIONS and e.promotion_id in promotions}
    if not wanted:
        return []
    return list(
        CheckResult.objects.filter(
            release_id__in={p.release_id for p in wanted}, environment_id__in={p.environment_id for p in wanted}
        ).order_by("-reported_at", "-id")
    )


def _record(event, promotion, sources, checks, chain):
    data = event.data or {}
    record = {
        "id": event.pk,
        "event": event.action,
        "service": event.service or None,
        "version": event.version or None,
        "from_environment": data.get("from_environment"),
        "to_environment": data.get("to_environment") or event.environment or None,
        "timestamp": timestamp(event.created_at),
        "initiator": data.get("initiator") or event.actor,
        "approvers": data.get("approvers", []),
        "rollback": bool(data.get("rollback", False)),
        "actor": event.actor,
        "promotion_id": event.promotion_id,
        "commit": data.get("commit") or None,
        "pr_url": data.get("pr_url") or None,
        "message": event.message,
        "data": data,
        "hash": event.hash,
        "previous_hash": event.previous_hash,
        "chain": chain.of_event(event.pk),
    }
    if promotion is None:
        return record
    if "from_environment" not in data:
        record["from_environment"] = sources[promotion.pk]
    if "initiator" not in data:
        record["initiator"] = promotion.requester_name()
    if "approvers" not in data:
        record["approvers"] = [
            approval.user.get_username()
            for approval in promotion.approvals.all()
            if approval.decision == ApprovalDecision.APPROVE and approval.created_at <= event.created_at
        ]
    # The log records user names; the promotion knows its people, so they are named as the records per
    # promotion name them, and one consumer can join the two shapes. A name it does not know stays.
    people = _people(promotion)
    record["initiator"] = people.get(record["initiator"], record["initiator"])
    record["approvers"] = [people.get(name, name) for name in record["approvers"]]
    if "rollback" not in data:
        record["rollback"] = promotion.kind == PromotionKind.ROLLBACK
    if record["pr_url"] is None and promotion.pr_url:
        record["pr_url"] = promotion.pr_url
    if (
        record["commit"] is None
        and promotion.gitops_commit_sha
        and promotion.committed_at
        and promotion.committed_at <= event.created_at
    ):
        record["commit"] = promotion.gitops_commit_sha
    if event.action in VERDICT_ACTIONS:
        record["validation_results"] = _validation_results(event, promotion, checks)
    return record


def export_json(events, per=Per.PROMOTION):
    """The export as a JSON array, produced piece by piece so a long log streams."""
    records = step_records(events) if per == Per.STEP else promotion_records(events)
    yield "["
    for index, record in enumerate(records):
        yield ("," if index else "") + "\n" + json.dumps(record, cls=DjangoJSONEncoder, ensure_ascii=False)
    yield "\n]\n"
