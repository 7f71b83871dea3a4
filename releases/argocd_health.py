"""The Argo CD health the board shows: the last one observed of a place's application, written on the
place's current deployment wherever it is observed (a reconciler round, a soak's sample, a sync that
ended on it)."""

import logging

from django.db.models import Q

from environments.argocd import Health

from .models import Deployment

logger = logging.getLogger(__name__)

LENGTH = Deployment._meta.get_field("health").max_length
# The healths of a place that serves badly or not at all: said as warnings, the rest as news.
BROKEN = {Health.DEGRADED, Health.MISSING}


def note(deployment, health, seen_at):
    """Write `health`, as Argo CD reported it at `seen_at`, on `deployment` (its service, environment and
    release loaded) when it is news. Whether it was written.

    Only a change is written: an unchanged board keeps its rendered rows and answers 304
    (releases/state.py), and `health_checked_at` says since when the health shown holds. The row read
    may be stale (a second reconciler in a rolling update, a soak's sample during a round, a deployment
    replaced meanwhile): the update decides, so a change is written and logged once, never on a
    deployment replaced since, nor over a health seen after this one.
    """
    health = health[:LENGTH]
    if deployment.health == health:
        return False
    written = (
        Deployment.objects.filter(pk=deployment.pk, replaced_at__isnull=True)
        .exclude(health=health)
        .filter(Q(health_checked_at__isnull=True) | Q(health_checked_at__lte=seen_at))
        .update(health=health, health_checked_at=seen_at)
    )
    if written:
        say = logger.warning if health in BROKEN else logger.info
        say(
            "Argo CD reports %s %s in %s %s (it was %s)",
            deployment.service.name,
            deployment.release.version,
            deployment.environment.name,
            health,
            deployment.health or "not reported",
        )
    return bool(written)


def note_in_place(service, environment, health, seen_at):
    """`note` on what runs in the place (Deployment.objects.running), if anything does."""
    deployment = Deployment.objects.running(service, environment)
    if deployment is None:
        return False
    deployment.service, deployment.environment = service, environment
    return note(deployment, health, seen_at)
