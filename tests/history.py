"""Release histories for the page tests: promotions and deployments as the pipeline leaves them."""

import re
from datetime import timedelta

from django.utils import timezone

from releases.models import Deployment, Promotion, PromotionKind, PromotionState, StepStatus
from tests.factories import make_release, make_service

FINISHED = {PromotionState.VERIFIED, PromotionState.FAILED, PromotionState.ROLLED_BACK}


def ran(release, environment, *, state=PromotionState.VERIFIED, at=None, **fields):
    """`release` went into `environment`, runs there from `at`, and its promotion ended in `state`."""
    at = at or timezone.now()
    fields.setdefault("kind", PromotionKind.AUTO if environment.auto_promote else PromotionKind.MANUAL)
    fields.setdefault(
        "verification_status", StepStatus.PASSED if state == PromotionState.VERIFIED else StepStatus.PENDING
    )
    promotion = Promotion.objects.create(
        release=release,
        environment=environment,
        state=state,
        requested_at=at - timedelta(minutes=10),
        approved_at=at - timedelta(minutes=9),
        commit_started_at=at - timedelta(minutes=8),
        committed_at=at - timedelta(minutes=7),
        gitops_commit_sha=fields.pop("gitops_commit_sha", "c" * 40),
        sync_started_at=at - timedelta(minutes=6),
        deployed_at=at,
        finished_at=at if state in FINISHED else None,
        **fields,
    )
    Deployment.objects.record(
        release=release,
        environment=environment,
        deployed_at=at,
        promotion=promotion,
        is_rollback=promotion.kind == PromotionKind.ROLLBACK,
        gitops_commit_sha=promotion.gitops_commit_sha,
    )
    return promotion


def cell_html(response, service, environment):
    """The markup of one board cell, found by its row's service and its column's environment."""
    page = response.content.decode()
    row = re.search(rf'<tr data-service="{re.escape(service)}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {service}"
    cell = re.search(rf'<td class="cell" data-environment="{re.escape(environment)}">(.*?)</td>', row.group(1), re.S)
    assert cell, f"no {environment} cell for {service}"
    return cell.group(1)


def action_link(markup, kind):
    """The <a> of one action in a cell or page, or None."""
    match = re.search(rf'<a [^>]*data-action="{kind}"[^>]*>.*?</a>', markup, re.S)
    return match.group(0) if match else None


def verified_up_to_staging(environments, *, service_fields=None, release_fields=None):
    """nexo-be 2026.02.1 verified in develop, qa and staging, ready to be promoted to production."""
    service = make_service("nexo-be", team="backend-team", **(service_fields or {}))
    release = make_release(service, "2026.02.1", **(release_fields or {}))
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    return {
        "env": environments,
        "service": service,
        "release": release,
    }
