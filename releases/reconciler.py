"""The periodic safety net: resume promotions whose job was lost, and notice GitOps drift.

A worker can be killed mid-job and Redis can be down when a transition wants to enqueue;
the state in the database is the truth, so every few minutes the reconciler re-enqueues the
job of any promotion that is mid-way with no job on its way. It also reads every values file
and flags a place whose image tag differs from what the portal deployed there.
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from audit import log as audit
from audit.models import AuditAction
from nexo_portal.lib import queues

from . import transitions
from .gitops import values
from .gitops.repo import GitOpsError, GitOpsRepository
from .models import PIPELINE, Deployment, Promotion, PromotionState

logger = logging.getLogger(__name__)

# A promotion untouched for this long with no job on its way is considered stalled.
STALL_AFTER = timedelta(minutes=2)
# A step whose job has crashed this many times is not resumed again: the promotion fails with the error.
MAX_CRASHES = 3
FAILED_STEP = {"commit": "commit", "sync": "sync", "verify": "verification"}


def reconcile():
    resumed = resume_stalled_promotions()
    drifted = detect_drift()
    return {"resumed": resumed, "drifted": drifted}


def _pending_job_ids(queue):
    ids = set(queue.get_job_ids())
    for registry in (StartedJobRegistry, ScheduledJobRegistry, DeferredJobRegistry):
        ids.update(registry(queue=queue).get_job_ids())
    return ids


def resume_stalled_promotions(now=None):
    """Re-enqueue the next job of promotions that are mid-way and have no job pending."""
    now = now or timezone.now()
    queue = queues.get_queue("default")
    pending = _pending_job_ids(queue)
    crashed = FailedJobRegistry(queue=queue).get_job_ids()
    resumed = []
    stalled = Promotion.objects.filter(state__in=list(transitions.JOB_FOR_STATE), updated_at__lt=now - STALL_AFTER)
    for promotion in stalled:
        if promotion.state == PromotionState.VERIFYING:
            last_sample = promotion.samples.order_by("-taken_at").values_list("taken_at", flat=True).first()
            interval = timedelta(seconds=promotion.environment.sample_interval_seconds)
            if last_sample and last_sample > now - interval - STALL_AFTER:
                continue
        prefix = transitions.job_id_prefix(promotion.pk)
        if any(job_id.startswith(prefix) for job_id in pending):
            continue
        step = transitions.JOB_FOR_STATE[promotion.state]
        # In the order they failed (the registry's order), so the last is the latest.
        crashes = [job_id for job_id in crashed if job_id.startswith(f"{prefix}{step}-")]
        if len(crashes) >= MAX_CRASHES:
            _give_up(promotion, step, crashes, queue)
            continue
        logger.warning(
            "Promotion %s is %s with no job on its way; enqueueing %s again", promotion.pk, promotion.state, step
        )
        transitions.enqueue(promotion.pk, step)
        resumed.append(promotion.pk)
    return resumed


def _give_up(promotion, step, crashes, queue):
    """A job that keeps crashing will not be cured by running it again: fail with what it said."""
    try:
        result = Job.fetch(crashes[-1], connection=queue.connection).latest_result()
    except NoSuchJobError:  # the registry outlived the job's record
        result = None
    error = (result.exc_string or "").strip().splitlines()[-1:] if result else []
    reason = f"the {step} job crashed {len(crashes)} times" + (f"; the last time with {error[0]}" if error else "")
    logger.error("Promotion %s: %s; failing it instead of trying again", promotion.pk, reason)
    try:
        transitions.fail(promotion, FAILED_STEP[step], f"{reason[0].upper()}{reason[1:]}. See the worker's log.")
    except transitions.PromotionError as moved_on:
        logger.info("Promotion %s moved on meanwhile: %s", promotion.pk, moved_on)


def detect_drift():
    """Compare every current deployment with the tag its values file holds; flag and audit differences."""
    in_flight = set(
        Promotion.objects.filter(state__in=PromotionState.in_flight()).values_list("service_id", "environment_id")
    )
    deployments = list(Deployment.objects.current().select_related("service", "environment", "release"))
    if not deployments:
        return []
    repository = GitOpsRepository()
    found = {}
    try:
        with repository.locked():
            repository.sync()
            for deployment in deployments:
                path = deployment.service.values_path(deployment.environment)
                try:
                    found[deployment.pk] = values.read_value(
                        repository.read(path), deployment.service.image_tag_key, path
                    )
                except FileNotFoundError:
                    found[deployment.pk] = f"(missing file {path})"
                except values.ValuesFileError as error:
                    found[deployment.pk] = f"(unreadable: {error})"[:150]
    except GitOpsError as error:
        logger.warning("Drift check skipped: %s", error)
        return []

    drifted = []
    now = timezone.now()
    for deployment in deployments:
        if (deployment.service_id, deployment.environment_id) in in_flight:
            continue
        tag = found.get(deployment.pk)
        if tag == deployment.release.version:
            if deployment.drifted_tag:
                Deployment.objects.filter(pk=deployment.pk).update(drifted_tag="", drift_detected_at=None)
            continue
        drifted.append(deployment.pk)
        if deployment.drifted_tag == tag:
            continue  # already flagged and audited
        with transaction.atomic():
            audit.lock_chain()  # the chain before rows, as every writer takes them
            Deployment.objects.filter(pk=deployment.pk).update(drifted_tag=tag or "", drift_detected_at=now)
            audit.record(
                AuditAction.DRIFT_DETECTED,
                actor=PIPELINE,
                service=deployment.service.name,
                environment=deployment.environment.name,
                version=deployment.release.version,
                message=(
                    f"{deployment.service.values_path(deployment.environment)} says {tag!r} but the portal deployed "
                    f"{deployment.release.version}"
                ),
                data={"expected": deployment.release.version, "found": tag},
            )
    return drifted
