"""Checkpoints of the audit chain's head, kept outside the database, and the verification of the
chain against them (what that can and cannot prove is in audit/log.py).

A checkpoint is one line, written to the log output (logger `audit.checkpoints`) and to a witness:

    audit-checkpoint v1 event=1234 hash=<64 hex> at=2026-03-01T12:00:00+00:00 mac=<64 hex>

`mac` is the HMAC of everything before it with AUDIT_CHECKPOINT_KEY, so a witness others can
write to (a Git branch, a file, a log store) cannot be given a checkpoint the portal did not make.

The witness is the class AUDIT_WITNESS names by its dotted path, as Django names its backends, so
this app imports none of the apps that can reach one (releases.gitops.witness writes to the GitOps
repository). A witness has `write(line)`, and `anchors()`: the `Anchor`s it holds, checkpoints
and anything else it can vouch with (commit trailers); both raise WitnessUnavailable when it
cannot be reached.
"""

import hmac
import logging
import re
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from . import log

logger = logging.getLogger(__name__)

_LINE = re.compile(
    r"^audit-checkpoint v1 event=(?P<event>\d+) hash=(?P<hash>[0-9a-f]{64}) at=(?P<at>\S+) mac=(?P<mac>[0-9a-f]{64})$"
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
        match = _LINE.match(line.strip())
        if match is None:
            continue
        body = line.strip().rpartition(" mac=")[0]
        if not hmac.compare_digest(match["mac"], log.keyed_digest("checkpoint", body, key)):
            logger.warning(
                "A checkpoint in %s does not carry the portal's HMAC and vouches for nothing: %s", where, line
            )
            continue
        at = datetime.fromisoformat(match["at"])
        source = f"the checkpoint of {at:%Y-%m-%d %H:%M:%S} in {where}"
        anchors.append(log.Anchor(int(match["event"]), match["hash"], source))
    return anchors


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
    return log.verify_chain(anchors), unread


def take_checkpoint(witness, head, at):
    """Write a checkpoint of `head` (id, hash) to the log output and to `witness`; the line."""
    line = checkpoint_line(*head, at)
    logger.info("%s", line)
    if witness is not None:
        witness.write(line)
    return line
