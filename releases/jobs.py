"""RQ jobs that carry a promotion through the pipeline.

Each job takes a promotion id, loads fresh state, returns quietly if the promotion has moved
on (so running a job twice does no harm), does one step and calls the transition for it.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from environments.argocd import ArgoCD, ArgoCDError

from . import transitions, verification
from .gitops import message as gitops_message
from .gitops import values
from .gitops.repo import GitOpsError, GitOpsRepository
from .models import Promotion, PromotionState
from .policy import PromotionError

logger = logging.getLogger(__name__)


def _load(promotion_id, *states):
    try:
        promotion = Promotion.objects.select_related(*transitions.FIXED_RELATIONS).get(pk=promotion_id)
    except Promotion.DoesNotExist:
        promotion = None
    if promotion is None or promotion.state not in states:
        logger.info("Promotion %s is not %s any more; nothing to do", promotion_id, "/".join(states))
        return None
    return promotion


def commit_promotion(promotion_id):
    """Write the new image tag into the values file, commit with the trailers, push."""
    promotion = _load(promotion_id, PromotionState.APPROVED, PromotionState.COMMITTING)
    if promotion is None:
        return
    # An approved promotion is marked committing while git writes the commit, and nothing is
    # pushed before that is saved. A job that finds it committing already is a retry: an earlier
    # attempt may have pushed, so it looks for its own commit first.
    resumed = promotion.state == PromotionState.COMMITTING
    service, environment, release = promotion.service, promotion.environment, promotion.release
    path, key = service.values_path(environment), service.image_tag_key
    message = gitops_message.promotion_message(promotion, promotion.approver_names())
    owned = PromotionState.COMMITTING if resumed else PromotionState.APPROVED

    def start_commit():
        nonlocal owned
        transitions.start_commit(promotion)
        owned = PromotionState.COMMITTING

    repository = GitOpsRepository()
    try:
        with repository.locked():
            sha = repository.commit_and_push(
                path,
                lambda text: values.set_value(text, key, release.version, path),
                message,
                trailer=(gitops_message.PROMOTION_TRAILER, promotion.pk),
                since=promotion.requested_at - timedelta(days=1),
                look_for_trailer=resumed,
                before_push=None if resumed else start_commit,
            )
            pushed_at = timezone.now()
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on before its commit was pushed: %s", promotion_id, moved_on)
        return
    except (GitOpsError, values.ValuesFileError) as error:
        # Only from the state this job holds it in: a duplicate job that loaded it before another
        # one committed it must not fail what that one carried on.
        _unless_moved_on(transitions.fail, promotion, "commit", str(error), from_states=[owned])
        return
    _unless_moved_on(transitions.mark_committed, promotion, sha, message, committed_at=pushed_at)


def sync_promotion(promotion_id):
    """Have Argo CD apply the commit and wait until it is Synced and Healthy."""
    promotion = _load(promotion_id, PromotionState.COMMITTED, PromotionState.SYNCING)
    if promotion is None:
        return
    argocd = ArgoCD.from_settings()
    promotion = transitions.mark_syncing(promotion, configured=argocd is not None)
    if argocd is None:
        transitions.mark_deployed(promotion)
        return
    application = promotion.service.argocd_app(promotion.environment)
    auto_sync = promotion.environment.argocd_auto_sync
    try:
        status = argocd.wait_until_deployed(
            application,
            promotion.gitops_commit_sha,
            timeout=settings.ARGOCD_SYNC_TIMEOUT_SECONDS,
            poll_seconds=settings.ARGOCD_POLL_SECONDS,
            auto_sync=auto_sync,
            # Auto-sync follows the branch: a later commit that contains ours deploys ours too.
            includes=_contains_commit(promotion.gitops_commit_sha) if auto_sync else None,
        )
    except ArgoCDError as error:
        _unless_moved_on(transitions.fail, promotion, "sync", str(error))
        return
    _unless_moved_on(transitions.mark_deployed, promotion, health=status.health)


def _contains_commit(sha):
    """`includes(revision)` for the sync's wait: git answers once per revision Argo CD reports."""
    answers = {}

    def includes(revision):
        if revision not in answers:
            repository = GitOpsRepository()
            try:
                with repository.locked():
                    answer = repository.includes(revision, sha)
            except GitOpsError as error:
                logger.warning(
                    "Could not tell whether %s contains %s (asking again at the next poll): %s", revision, sha, error
                )
                return False
            # Final either way: includes() fetched if either commit was new here, and commits do not change.
            answers[revision] = answer
        return answers[revision]

    return includes


def _unless_moved_on(transition, promotion, *args, **kwargs):
    """Apply a step's outcome, unless the promotion moved on meanwhile (an Argo CD Notifications
    event during a sync; a cancellation, or another job for the same promotion, during a commit)."""
    try:
        transition(promotion, *args, **kwargs)
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on during the sync: %s", promotion.pk, moved_on)


def verify_promotion(promotion_id):
    """Take one round of samples; at the end of the window, give the verdict. Reschedules itself."""
    promotion = _load(promotion_id, PromotionState.DEPLOYED, PromotionState.VERIFYING)
    if promotion is None:
        return
    if promotion.state == PromotionState.DEPLOYED:
        promotion = transitions.mark_verifying(promotion, configured=verification.is_configured(promotion))
    verification.take_samples(promotion)
    now = timezone.now()
    if now < promotion.verdict_at:
        delay = min(timedelta(seconds=promotion.environment.sample_interval_seconds), promotion.verdict_at - now)
        transitions.enqueue(promotion.pk, "verify", delay=delay)
        return
    result = verification.verdict(promotion)
    if result.passed:
        transitions.mark_verified(promotion, result.summary)
    else:
        transitions.fail(promotion, "verification", result.summary)
