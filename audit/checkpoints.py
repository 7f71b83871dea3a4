"""Checkpoints of the audit chain's head, kept outside the database, and the periodic watch that
verifies the chain against them (what that can and cannot prove is in audit/log.py).

A checkpoint is one line, written to the log output (logger `audit.checkpoints`) and to a witness:

    audit-checkpoint v1 event=1234 hash=<64 hex> at=2026-03-01T12:00:00+00:00 mac=<64 hex>

`mac` is the HMAC of everything before it with AUDIT_CHECKPOINT_KEY, so a witness others can
write to (a Git branch, a file, a log store) cannot be given a checkpoint the portal did not make.

The watch keeps its last result, what it alerted included, in ChainVerification, with an HMAC made
the same way: a row changed without the key is not believed (`signed_by_portal`), neither by the
watch nor by the readers of the log, who are told of the chain what `chain_status()` says.

The witness is the class AUDIT_WITNESS names by its dotted path, as Django names its backends, so
this app imports none of the apps that can reach one (releases.gitops.witness writes to the GitOps
repository). A witness has `write(line)`, and `anchors()`: the `Anchor`s it holds, checkpoints
and anything else it can vouch with (commit trailers, `head_anchor`); both raise WitnessUnavailable
when it cannot be reached.
"""

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from . import log
from .models import ChainVerdict, ChainVerification

logger = logging.getLogger(__name__)

_LINE = re.compile(
    r"^audit-checkpoint v1 event=(?P<event>[0-9]+) hash=(?P<hash>[0-9a-f]{64}) at=(?P<at>\S+)"
    r" mac=(?P<mac>[0-9a-f]{64})$"
)


class WitnessUnavailable(Exception):
    """The witness could not be read or written just now; the message says why."""


def checkpoint_line(event_id, event_hash, at, key=None):
    body = f"audit-checkpoint v1 event={event_id} hash={event_hash} at={at.isoformat()}"
    return f"{body} mac={log.keyed_digest('checkpoint', body, key)}"


def parse_checkpoints(text, where, key=None):
    """The anchors of the checkpoint lines in `text`, found in `where` (for the report).

    A line shaped like a checkpoint whose HMAC does not check was not written by the portal: it is
    logged and left out, as it vouches for nothing.
    """
    anchors = []
    for line in text.splitlines():
        anchor = checkpoint_anchor(line, where, key)
        if anchor is None:
            continue
        if not anchor.signed:
            logger.warning(
                "A checkpoint in %s does not carry the portal's HMAC and vouches for nothing: %s", where, line
            )
            continue
        anchors.append(anchor)
    return anchors


def checkpoint_anchor(line, where, key=None):
    """The anchor of a checkpoint `line` found in `where` (for the report), or None if it is none. One
    whose HMAC does not check is not `signed`: someone else wrote it, and it vouches for nothing."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    body = line.strip().rpartition(" mac=")[0]
    if not hmac.compare_digest(match["mac"], log.keyed_digest("checkpoint", body, key)):
        # Its date is whatever its writer chose, and not repeated.
        return log.Anchor(int(match["event"]), match["hash"], f"a checkpoint in {where}", signed=False)
    at = datetime.fromisoformat(match["at"])
    return log.Anchor(int(match["event"]), match["hash"], f"the checkpoint of {at:%Y-%m-%d %H:%M:%S} in {where}")


def head_anchor(event_id, event_hash, mac, source):
    """The anchor of an `Audit-Head:` trailer: signed if `mac` is the portal's for that head."""
    signed = bool(mac) and hmac.compare_digest(mac, log.head_mac(event_id, event_hash))
    return log.Anchor(event_id, event_hash, source, signed=signed)


def configured_witness():
    """An instance of the AUDIT_WITNESS class, or None when there is none (the log output only)."""
    return import_string(settings.AUDIT_WITNESS)() if settings.AUDIT_WITNESS else None


class FileWitness:
    """Checkpoints appended to AUDIT_WITNESS_FILE: on storage the database's administrators cannot
    write (another host's mount, an append-only volume), or for a portal without GitOps."""

    def __init__(self, path=None):
        self.path = Path(path or settings.AUDIT_WITNESS_FILE)

    def __str__(self):
        return str(self.path)

    def write(self, line):
        try:
            with self.path.open("a") as file:
                file.write(line + "\n")
        except OSError as error:
            raise WitnessUnavailable(f"Cannot append to {self.path}: {error.strerror}") from error

    def anchors(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise WitnessUnavailable(f"Cannot read {self.path}: {error.strerror}") from error
        return parse_checkpoints(text, str(self.path))


def verify(witness, anchors=()):
    """The chain checked against what `witness` vouches for and `anchors`: (report, why the witness
    could not be read, or "")."""
    anchors, unread = list(anchors), ""
    if witness is not None:
        try:
            anchors += witness.anchors()
        except WitnessUnavailable as error:
            unread = f"The witness could not be read, so the tail was not checked: {error}"
    report = log.verify_chain(anchors)
    for text in report.unverified:
        logger.warning("Audit chain: %s", text)
    if report.unsigned:
        logger.warning("Audit chain: %s", report.skipped())
    return report, unread


def take_checkpoint(witness, head, at):
    """Write a checkpoint of `head` (id, hash) to the log output and to `witness`; the line."""
    line = checkpoint_line(*head, at)
    logger.info("%s", line)
    if witness is not None:
        witness.write(line)
    return line


def signed_by_portal(verification, key=None):
    """Whether `verification` is as the watch saved it: its MAC checks."""
    return hmac.compare_digest(verification.mac, verification_mac(verification, key))


def verification_mac(verification, key=None):
    """The MAC of what `verification` holds: the watch runs as the runtime role, which may write its row."""
    fields = json.dumps(verification.signed_fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return log.keyed_digest("verification", fields, key)


@dataclass(frozen=True)
class ChainStatus:
    """What a reader of the log is told of its chain, by the audit page, the API and the export: the
    last verification, or that there is none, or that the one on record is not believed. The runtime
    role may write its row, so what one the portal did not sign says is not repeated."""

    verification: ChainVerification | None
    believed: bool

    @property
    def intact(self):
        """Whether the last verification found the chain intact; None when there is none to believe."""
        return self.verification.ok if self.believed else None

    @property
    def verified_at(self):
        return self.verification.checked_at if self.believed else None

    @property
    def verified_through(self):
        """The newest event the last verification read: those after it are not verified yet."""
        return self.verification.checked_through if self.believed else None

    @property
    def broken_at(self):
        """The lowest event the last verification found a problem at: from it on, nothing is vouched for."""
        return self.verification.broken_from if self.believed else None

    @property
    def summary(self):
        if self.verification is None:
            return (
                "The chain has not been verified yet: the reconciler verifies it against its checkpoints every "
                "few minutes, and manage.py verify_audit_chain does it now."
            )
        if not self.believed:
            # The reconciler verifies at its next round when the last verification is not believed.
            return (
                "The last verification on record is not signed by the portal: it may have been altered; the "
                f"next check, within {settings.RECONCILE_SECONDS} seconds, replaces it."
            )
        return " ".join(filter(None, [self.verification.summary, self.verification.witness_error]))

    def of_event(self, event_id):
        """What the last verification says of event `event_id`, as a ChainVerdict."""
        if not self.believed:
            return ChainVerdict.UNVERIFIED
        if self.verification.broken_from is not None and event_id >= self.verification.broken_from:
            return ChainVerdict.BROKEN
        if self.verification.checked_through is None or event_id > self.verification.checked_through:
            return ChainVerdict.UNVERIFIED
        return ChainVerdict.VERIFIED


def chain_status():
    """The ChainStatus of the log now."""
    latest = ChainVerification.latest()
    return ChainStatus(latest, latest is not None and signed_by_portal(latest))


def _latest_signed():
    """The latest verification, or None when there is none the watch can believe."""
    latest = ChainVerification.latest()
    if latest is not None and not signed_by_portal(latest):
        logger.warning(
            "The audit chain's last verification (checked at %s) does not carry the portal's MAC: someone "
            "without AUDIT_CHECKPOINT_KEY changed it, or it was saved before verifications were signed. It "
            "is not believed: the chain is verified now, and a break alerted again.",
            latest.checked_at,
        )
        return None
    return latest


def watch(alert=None, now=None, force=False):
    """The periodic job: verify the chain against the witness, remember the result, call `alert`
    with the summary once when it breaks (again only if it breaks differently: a problem found or
    gone, wherever it is), log every run that finds it broken at ERROR, and checkpoint the head
    when the chain holds and the head is new. A checkpoint is taken only after the witness was
    read, so it never vouches for a tail deleted since the last one.

    Does nothing (returns None) before AUDIT_VERIFY_SECONDS have passed since the last run, unless
    `force`; else returns the ChainVerification saved.
    """
    now = now or timezone.now()
    latest = _latest_signed()
    if not force and latest and latest.checked_at > now - timedelta(seconds=settings.AUDIT_VERIFY_SECONDS):
        return None
    witness = configured_witness()
    report, witness_error = verify(witness)
    if witness is None and report.ok and report.head and latest and latest.vouched_through == report.head[0]:
        # The log output is not read back: the last run's checkpoint of this head is in it already.
        report.vouched_through, report.vouched_by = report.head[0], "the checkpoint in the log output"
    if report.ok and report.head and not witness_error and report.vouched_through != report.head[0]:
        try:
            take_checkpoint(witness, report.head, now)
        except WitnessUnavailable as error:
            witness_error = f"The checkpoint could not be written: {error}"
        else:
            report.vouched_through, report.vouched_by, report.unvouched = report.head[0], "the checkpoint just taken", 0
    if witness_error:
        logger.warning("Audit chain: %s", witness_error)
    verification, news = _remember(report, witness_error, now)
    if not verification.ok:
        # Every run, not only the one that alerts: the log is read by those the alert may not reach,
        # and `alerted` is a row the portal's own role may change.
        logger.error("%s", verification.summary)
    if news and alert is not None:
        alert(verification.summary)
    return verification


def _breaks(report):
    """What was found broken, as `ChainVerification.alerted` keeps it: the first problem's place, and
    a digest of the later ones so that any new one changes it."""
    if report.ok:
        return ""
    first = f"{report.problem} at {report.broken_at}"
    if not (report.later or report.more):
        return first
    later = "; ".join(f"{problem} at {event_id}" for event_id, problem in report.later) + f"; {report.more} more"
    return f"{first}, {len(report.later) + report.more} later {hashlib.sha256(later.encode()).hexdigest()[:16]}"


def _remember(report, witness_error, now):
    """Save the result as the latest verification; (it, whether this break is news)."""
    broken = _breaks(report)
    with transaction.atomic():
        verification, _ = ChainVerification.objects.select_for_update().get_or_create(
            pk=1, defaults={"checked_at": now, "ok": report.ok, "summary": ""}
        )
        # What a row changed without the key says was alerted or since when is not believed.
        believed = signed_by_portal(verification)
        news = bool(broken) and (broken != verification.alerted or not believed)
        if report.ok:
            verification.broken_since = None
        elif verification.ok or verification.broken_since is None or not believed:
            verification.broken_since = now
        verification.checked_at = now
        verification.ok = report.ok
        verification.problem = report.problem
        verification.broken_at = report.broken_at
        verification.broken_from = report.broken_from
        verification.summary = report.summary()
        verification.events_checked = report.checked
        verification.checked_through = report.head and report.head[0]
        verification.vouched_through = report.vouched_through
        verification.unvouched = report.unvouched
        verification.witness_error = witness_error
        verification.alerted = broken
        verification.mac = verification_mac(verification)
        verification.save()
    return verification, news
