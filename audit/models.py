"""The append-only, hash-chained audit log.

Each event stores the SHA-256 of the event before it, and its own hash covers that link,
so editing or removing any row breaks the chain from there on; its seal, an HMAC of its hash
with a key the database never sees, says the portal wrote it (see `audit.log`).
"""

from datetime import UTC

from django.db import models

GENESIS_HASH = "0" * 64

# Whoever acted, as `audit.log.actor_name()` writes it, and where a model keeps that name: a user
# name (Django allows 150 characters), api-token:NAME, or a GitHub Actions run's
# github-actions:OWNER/NAME (GitHub allows 39 + 1 + 100 characters: 155 in all), with room to spare.
ACTOR_MAX_LENGTH = 200


class AuditAction(models.TextChoices):
    RELEASE_REGISTERED = "release.registered", "Release registered"
    PROMOTION_REQUESTED = "promotion.requested", "Promotion requested"
    PROMOTION_APPROVED = "promotion.approved", "Promotion approved"
    PROMOTION_REJECTED = "promotion.rejected", "Promotion rejected"
    PROMOTION_CANCELLED = "promotion.cancelled", "Promotion cancelled"
    PROMOTION_SUPERSEDED = "promotion.superseded", "Promotion superseded"
    PROMOTION_COMMIT_HELD = "promotion.commit_held", "GitOps commit held by a freeze"
    PROMOTION_COMMIT_STARTED = "promotion.commit_started", "GitOps commit started"
    PROMOTION_COMMITTED = "promotion.committed", "GitOps commit pushed"
    PROMOTION_SYNCING = "promotion.syncing", "Argo CD sync started"
    PROMOTION_DEPLOYED = "promotion.deployed", "Deployed and healthy"
    PROMOTION_VERIFYING = "promotion.verifying", "Verification started"
    PROMOTION_SOAK_EXTENDED = "promotion.soak_extended", "Soak extended"
    PROMOTION_STOPPED = "promotion.stopped", "Soak stopped by a person"
    PROMOTION_VERIFIED = "promotion.verified", "Verified"
    PROMOTION_FAILED = "promotion.failed", "Promotion failed"
    PROMOTION_ROLLED_BACK = "promotion.rolled_back", "Rolled back"
    PROMOTION_SLO_BREACHED = "promotion.slo_breached", "Past its promotion target time"
    HOLD_PLACED = "hold.placed", "Auto-promotion hold placed"
    HOLD_LIFTED = "hold.lifted", "Auto-promotion hold lifted"
    HOLD_UPDATED = "hold.updated", "Auto-promotion hold given a newer reason"
    PROMOTION_DEFERRED = "promotion.deferred", "Automatic promotion waits"
    PULL_REQUEST_OPENED = "pull_request.opened", "Pull request opened"
    PULL_REQUEST_PUSHED = "pull_request.pushed", "Pull request branch pushed by someone else"
    PULL_REQUEST_REVIEW_IGNORED = "pull_request.review_ignored", "Pull request review not counted"
    PULL_REQUEST_MERGED = "pull_request.merged", "Pull request merged"
    DRIFT_DETECTED = "gitops.drift_detected", "GitOps drift detected"
    DRIFT_RESOLVED = "gitops.drift_resolved", "GitOps drift put right"
    DRIFT_FAR_BEHIND = "drift.far_behind", "Far behind the first environment"
    DRIFT_BACK_WITHIN_LIMIT = "drift.back_within_limit", "Back within the drift limit of the first environment"
    FREEZE_CREATED = "freeze.created", "Change freeze created"
    FREEZE_CHANGED = "freeze.changed", "Change freeze changed"
    FREEZE_DELETED = "freeze.deleted", "Change freeze deleted"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    DEPLOYMENT_IMPORTED = "deployment.imported", "Deployment imported from GitOps history"
    INCIDENT_RECORDED = "incident.recorded", "Incident recorded"
    CHECK_REPORTED = "check.reported", "CI result reported"
    IMAGE_CHECKED = "release.image_checked", "Image checked in the registry"
    ADMIN_ADDED = "admin.added", "Added in the admin"
    ADMIN_CHANGED = "admin.changed", "Changed in the admin"
    ADMIN_DELETED = "admin.deleted", "Deleted in the admin"
    GROUPS_SYNCED = "user.groups_synced", "Groups changed by GitHub teams at sign-in"
    CHAIN_BREAK_ACKNOWLEDGED = "audit.break_acknowledged", "Audit chain break acknowledged after an investigation"


# The events that complete a promotion, recorded by the system: the per-promotion audit export
# (releases/audit_export.py) has one record for each.
VERDICT_ACTIONS = frozenset({AuditAction.PROMOTION_VERIFIED, AuditAction.PROMOTION_FAILED})


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise PermissionError("Audit events are append-only: they cannot be deleted.")

    def for_promotion(self, promotion):
        return self.filter(promotion_id=promotion.pk)


class AuditEvent(models.Model):
    created_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    actor = models.CharField(
        max_length=ACTOR_MAX_LENGTH, help_text="User name, api-token:NAME, github-actions:OWNER/NAME, or system."
    )
    service = models.CharField(max_length=50, blank=True, db_index=True)
    environment = models.CharField(max_length=50, blank=True)
    version = models.CharField(max_length=100, blank=True)
    promotion_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    message = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64, unique=True, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)
    # HMAC-SHA256 of `hash` with AUDIT_CHECKPOINT_KEY; empty on events recorded before seals existed.
    seal = models.CharField(max_length=64, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"#{self.pk} {self.action} by {self.actor}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only: they cannot be deleted.")

    def hashed_fields(self):
        """The fields the hash covers, in a canonical, JSON-serialisable form."""
        return {
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "action": self.action,
            "actor": self.actor,
            "service": self.service,
            "environment": self.environment,
            "version": self.version,
            "promotion_id": self.promotion_id,
            "message": self.message,
            "data": self.data,
        }


class ChainVerdict(models.TextChoices):
    """What the last verification of the chain the portal signed says of one event (`ChainStatus.of_event`)."""

    VERIFIED = "verified", "Read by the last verification, which found no problem at or before it"
    BROKEN = "broken", "At or after the lowest event the last verification found a problem at: nothing vouches for it"
    UNVERIFIED = "unverified", "Recorded since the last verification, or there is none the portal signed"


class ChainVerification(models.Model):
    """The latest verification of the chain against its witness: one row, replaced by each run.

    What the audit page shows ("chain verified at …"), and what decides whether a break is news
    (alerted once, `alerted` holding what was alerted: the first problem's place and a digest of
    the later ones) or already known, and whether the next run is due. A row whose `mac` does not
    check was changed by someone without the key: the watch treats it as missing, and the audit
    page does not show what it says.
    """

    checked_at = models.DateTimeField()
    ok = models.BooleanField()
    problem = models.CharField(max_length=20, blank=True)
    broken_at = models.BigIntegerField(null=True, blank=True)
    # The lowest event a problem was found at, which is not always the first problem reported (a rewrite
    # is reported at the anchor it contradicts, after the events rewritten): from it on, nothing is vouched for.
    broken_from = models.BigIntegerField(null=True, blank=True)
    summary = models.TextField()
    events_checked = models.PositiveIntegerField(default=0)
    # The newest event the verification read: those after it were recorded since, and are not verified yet.
    checked_through = models.BigIntegerField(null=True, blank=True)
    vouched_through = models.BigIntegerField(null=True, blank=True)
    unvouched = models.PositiveIntegerField(default=0)
    witness_error = models.TextField(blank=True)
    broken_since = models.DateTimeField(null=True, blank=True)
    alerted = models.CharField(max_length=100, blank=True)
    # HMAC of signed_fields() with AUDIT_CHECKPOINT_KEY: the watch runs as the runtime role, which may
    # therefore write this row, so the watch believes only what it signed (audit.checkpoints).
    mac = models.CharField(max_length=64, blank=True, default="", db_default="", editable=False)

    def __str__(self):
        return f"chain {'intact' if self.ok else 'broken'} at {self.checked_at:%Y-%m-%d %H:%M}"

    def signed_fields(self):
        """Every field but the MAC, in a canonical, JSON-serialisable form."""
        return {
            "checked_at": self.checked_at.astimezone(UTC).isoformat(),
            "ok": self.ok,
            "problem": self.problem,
            "broken_at": self.broken_at,
            "broken_from": self.broken_from,
            "summary": self.summary,
            "events_checked": self.events_checked,
            "checked_through": self.checked_through,
            "vouched_through": self.vouched_through,
            "unvouched": self.unvouched,
            "witness_error": self.witness_error,
            "broken_since": self.broken_since and self.broken_since.astimezone(UTC).isoformat(),
            "alerted": self.alerted,
        }

    @classmethod
    def latest(cls):
        return cls.objects.filter(pk=1).first()
