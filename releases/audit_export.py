"""The audit log exported in the shape of the platform team's "Structured Audit Log"
(versioning-and-promotion.md): `event, service, version, from_environment, to_environment,
timestamp, initiator, approvers, rollback, validation_results`, plus what the portal knows
besides (actor, promotion id, GitOps commit, message, the event's data and its chain hashes).

Fields an event did not record itself are filled from the promotion it belongs to, as it was at
the event's time: the approvers are those who had approved by then, the CI results those reported
by then. The pages and the API both export through `export_records` / `export_json`.
"""

import json
from datetime import UTC
from itertools import pairwise

from django.core.serializers.json import DjangoJSONEncoder

from audit.models import AuditAction
from environments.models import Environment

from .models import ApprovalDecision, CheckResult, Promotion, PromotionKind, newest_per_check

CHUNK_SIZE = 1000
VERDICT_ACTIONS = {AuditAction.PROMOTION_VERIFIED, AuditAction.PROMOTION_FAILED}


def timestamp(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _chunks(events):
    chunk = []
    for event in events.iterator(chunk_size=CHUNK_SIZE):
        chunk.append(event)
        if len(chunk) == CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export_records(events):
    """One dict per event of the queryset `events`, in its order; a few queries per thousand events."""
    previous_environment = {}
    ordered = list(Environment.objects.in_pipeline_order().values_list("name", flat=True))
    for before, after in pairwise(ordered):
        previous_environment[after] = before

    for chunk in _chunks(events):
        promotion_ids = {event.promotion_id for event in chunk if event.promotion_id}
        promotions = {
            promotion.pk: promotion
            for promotion in Promotion.objects.filter(pk__in=promotion_ids)
            .select_related("requested_by")
            .prefetch_related("approvals__user")
        }
        checks = _check_results(chunk, promotions)
        for event in chunk:
            yield _record(event, promotions.get(event.promotion_id), previous_environment, checks)


def _check_results(chunk, promotions):
    wanted = {promotions[e.promotion_id] for e in chunk if e.action in VERDICT_ACTIONS and e.promotion_id in promotions}
    if not wanted:
        return []
    return list(
        CheckResult.objects.filter(
            release_id__in={p.release_id for p in wanted}, environment_id__in={p.environment_id for p in wanted}
        ).order_by("-reported_at", "-id")
    )


def _record(event, promotion, previous_environment, checks):
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
    }
    if promotion is None:
        return record
    if "from_environment" not in data:
        record["from_environment"] = previous_environment.get(event.environment)
    if "initiator" not in data:
        record["initiator"] = promotion.requester_name()
    if "approvers" not in data:
        record["approvers"] = [
            approval.user.get_username()
            for approval in promotion.approvals.all()
            if approval.decision == ApprovalDecision.APPROVE and approval.created_at <= event.created_at
        ]
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
        reported_by_then = [
            check
            for check in checks
            if (check.release_id, check.environment_id) == (promotion.release_id, promotion.environment_id)
            and check.reported_at <= event.created_at
        ]
        record["validation_results"] = {
            check.name: "passed" if check.passed else "failed" for check in newest_per_check(reported_by_then)
        }
    return record


def export_json(events):
    """The export as a JSON array, produced piece by piece so a long log streams."""
    yield "["
    for index, record in enumerate(export_records(events)):
        yield ("," if index else "") + "\n" + json.dumps(record, cls=DjangoJSONEncoder, ensure_ascii=False)
    yield "\n]\n"
