"""The commit messages the portal writes into the GitOps repository, as the reference docs show them:

    promote(nexo-be): production → 2026.02.1
    auto-promote(nexo-be): qa → 2026.02.1
    rollback(nexo-be): production → 2026.01.45

followed by who asked and who approved, and the trailers `Promotion-Id:` and `Release-Digest:`
that let a retried job find its own commit, and `Audit-Head: <event id>:<hash> mac=<hmac>`, the
audit chain's head as the commit was written, which vouches for the log from outside the database;
the HMAC, with AUDIT_CHECKPOINT_KEY, tells it from one written by anyone else who may push.

Checkpoints of the audit chain are commits of their own on another branch (releases/gitops/witness.py),
their line in an `Audit-Checkpoint:` trailer.
"""

import re

from audit.log import head_mac
from releases.models import PromotionKind

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


def promotion_message(promotion, approvers, previous_version=None, audit_head=None):
    """`previous_version`: what the values file held before this commit (default: what the portal
    deployed there), the rollback plan of the reference docs' commit body. `audit_head`: the audit
    chain's (event id, hash) as of this commit, None while the log is empty."""
    lines = [subject(promotion), ""]
    lines.append(f"Requested by {promotion.requester_name()}.")
    if approvers:
        lines.append(f"Approved by {', '.join(approvers)}.")
    if previous_version is None and promotion.previous_release:
        previous_version = promotion.previous_release.version
    if previous_version:
        lines.append(f"Previous version: {previous_version}.")
    if promotion.is_emergency:
        lines.append(f"Break-glass: {promotion.emergency_reason}")
    if promotion.release.changelog:
        lines += ["", "## Changelog", promotion.release.changelog.strip()]
    lines += ["", f"{PROMOTION_TRAILER}: {promotion.pk}", f"{DIGEST_TRAILER}: {promotion.release.image_digest}"]
    if audit_head:
        lines.append(f"{AUDIT_HEAD_TRAILER}: {audit_head_value(*audit_head)}")
    return "\n".join([*lines, ""])


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
