"""The commit messages the portal writes into the GitOps repository, as the reference docs show them:

    promote(nexo-be): production → 2026.02.1
    auto-promote(nexo-be): qa → 2026.02.1
    rollback(nexo-be): production → 2026.01.45

followed by who asked and who approved, what it replaces (the reference docs' rollback plan: the
previous version), its changelog, and the trailers `Promotion-Id:` and `Release-Digest:` that let a
retried job find its own commit, and `Audit-Head: <event id>:<hash> mac=<hmac>`, the audit chain's
head as the commit was written, which vouches for the log from outside the database; the HMAC, with
AUDIT_CHECKPOINT_KEY, tells it from one written by anyone else who may push.

The changelog says what the commit changes: the release's own, and for a rollback, which ships
nothing new, those of the releases it takes out (after the one it goes back to, up to the one it
replaces), newest first.

A values file that holds the tag already (a rollback whose sync failed, asked for again) still gets
a commit, empty, saying so: the sync step waits for Argo CD to run a revision of the promotion's own
(without one, the failed sync at that revision would be read as this promotion's, and an
auto-syncing application does not sync a revision again), and every promotion is found in Git by
its trailer.

Checkpoints of the audit chain are commits of their own on another branch (releases/gitops/witness.py),
their line in an `Audit-Checkpoint:` trailer.
"""

import re

from audit.log import head_mac
from releases.models import Promotion, PromotionKind, Release

# A rollback's changelog lists at most this many of the releases it takes out.
MAX_TAKEN_OUT = 30

VERBS = {PromotionKind.MANUAL: "promote", PromotionKind.AUTO: "auto-promote", PromotionKind.ROLLBACK: "rollback"}
SUBJECT = re.compile(
    r"^(?P<verb>promote|auto-promote|rollback)\((?P<service>[a-z0-9-]+)\): "
    r"(?P<environment>[a-z0-9-]+) → (?P<version>\S+)$"
)
PROMOTION_TRAILER = "Promotion-Id"
DIGEST_TRAILER = "Release-Digest"
AUDIT_HEAD_TRAILER = "Audit-Head"
CHECKPOINT_TRAILER = "Audit-Checkpoint"
AUDIT_HEAD = re.compile(r"^(?P<event>[0-9]+):(?P<hash>[0-9a-f]{64})(?: mac=(?P<mac>[0-9a-f]{64}))?$")


def subject(promotion):
    return (
        f"{VERBS[promotion.kind]}({promotion.service.name}): {promotion.environment.name} → {promotion.release.version}"
    )


def promotion_message(promotion, approvers, values_held=None, audit_head=None):
    """`values_held`: the tag the values file held before this commit, when the step read it.
    `audit_head`: the audit chain's (event id, hash) as of this commit, None while the log is empty."""
    lines = [subject(promotion), ""]
    lines.append(f"Requested by {promotion.requester_name()}.")
    if approvers:
        lines.append(f"Approved by {', '.join(approvers)}.")
    replaced = replaced_version(promotion, values_held)
    if replaced:
        lines.append(f"Previous version: {replaced}.")
    if values_held is not None and values_held == promotion.release.version:
        lines.append(_unchanged(promotion))
    if promotion.is_emergency:
        lines.append(f"Break-glass: {promotion.emergency_reason}")
    lines += changelog(promotion)
    lines += ["", f"{PROMOTION_TRAILER}: {promotion.pk}", f"{DIGEST_TRAILER}: {promotion.release.image_digest}"]
    if audit_head:
        lines.append(f"{AUDIT_HEAD_TRAILER}: {audit_head_value(*audit_head)}")
    return "\n".join([*lines, ""])


def replaced_version(promotion, values_held=None):
    """The version the promotion replaces, its commit's "Previous version": for a rollback the release
    it takes out (what ran, or, when that one's sync failed, what the values file held since); else what
    runs there as the portal, its pages and its API say (`previous_release`); where the portal never
    deployed, what the values file held (`values_held`), or None."""
    if promotion.is_rollback and promotion.rolls_back_id:
        return promotion.rolls_back.release.version
    if promotion.previous_release:
        return promotion.previous_release.version
    return values_held or None


def _unchanged(promotion):
    """Why a commit that changes no file is made anyway (see the module's docstring)."""
    path = promotion.service.values_path(promotion.environment)
    # The portal's last commit there, when it set this tag (else someone did by hand since).
    written_by = Promotion.objects.exclude(pk=promotion.pk).last_committed_in(
        promotion.service_id, promotion.environment_id
    )
    by = ""
    if written_by is not None and written_by.release_id == promotion.release_id:
        how = written_by.get_state_display().lower()
        if written_by.failed_step:
            how += f" at {written_by.failed_step}"
        by = f" (committed by promotion #{written_by.pk}, {how})"
    kind = "rollback" if promotion.is_rollback else "promotion"
    return (
        f"{path} already holds {promotion.release.version}{by}: this commit changes no file, and gives "
        f"Argo CD a revision of this {kind}'s own to sync."
    )


def changelog(promotion):
    """The lines of the "## Changelog" section (none without one): the release's own, or for a
    rollback those of the releases it takes out."""
    release = promotion.release
    if not promotion.is_rollback:
        return ["", "## Changelog", release.changelog.strip()] if release.changelog else []
    replaced = promotion.rolls_back.release if promotion.rolls_back_id else promotion.previous_release
    if replaced is None:
        return []
    if replaced.is_newer_than(release):
        taken_out = Release.objects.newer_than(release).exclude(pk__in=Release.objects.newer_than(replaced))
        taken_out = list(taken_out.newest_first()[: MAX_TAKEN_OUT + 1])
    else:
        taken_out = [replaced]  # a late hotfix, numbered below the release it fixed and goes back to
    lines = ["", "## Changelog", "Taken out by this rollback, newest first:"]
    for gone in taken_out[:MAX_TAKEN_OUT]:
        lines += ["", f"### {gone.version}", gone.changelog.strip() or "(no changelog was registered)"]
    if len(taken_out) > MAX_TAKEN_OUT:
        lines += ["", f"… and older ones, down to the one after {release.version}."]
    return lines


def audit_head_value(event_id, event_hash):
    return f"{event_id}:{event_hash} mac={head_mac(event_id, event_hash)}"


def parse_audit_head(value: str) -> tuple[int, str, str] | None:
    """(event id, hash, MAC or "") of an `Audit-Head:` trailer's value, or None if it is not one."""
    match = AUDIT_HEAD.match(value.strip())
    return (int(match["event"]), match["hash"], match["mac"] or "") if match else None


def checkpoint_message(line: str) -> str:
    """The message of a checkpoint commit: `line` as written to the log, in a trailer."""
    event = re.search(r"event=([0-9]+)", line)
    return f"audit checkpoint: event {event[1] if event else '?'}\n\n{CHECKPOINT_TRAILER}: {line}\n"


def parse_subject(text):
    """(verb, service, environment, version) of a promotion commit's first line, or None."""
    match = SUBJECT.match(text.splitlines()[0].strip() if text else "")
    return (match["verb"], match["service"], match["environment"], match["version"]) if match else None
