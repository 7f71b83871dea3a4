"""Record audit events and verify the hash chain that links them, against anchors kept elsewhere.

Three things make the log tamper-evident, each against a different hand:

- **The chain.** Each event holds the SHA-256 of the one before it, and its own hash covers that
  link and its content: a row edited, removed or moved by hand breaks the chain where it was.
- **Seals.** Each event's seal is an HMAC of its hash with AUDIT_CHECKPOINT_KEY, a key that lives
  in the portal's environment and never in the database. Whoever writes to the database without
  the key (any role, a superuser included) cannot make a seal that checks: an event appended or
  rewritten that way is *forged*, and a rewrite that recomputes the hashes after it unseals every
  event it touched.
- **Anchors outside the database.** Every GitOps commit carries the chain's head as it was then
  (`Audit-Head: <event id>:<hash>`), and checkpoints — the head, when it was taken and an HMAC
  of both with the same key — go to the log output and to a witness (audit/checkpoints.py).
  What an anchor vouches for cannot be removed or replaced from inside the database: a vouched
  event that is gone means the log was *truncated* (nothing at or before it remains) or its tail
  *deleted*; a vouched event with another hash means history was *rewritten* and its hashes
  recomputed.

What can honestly be claimed, and what cannot:

- Events after the newest anchor are *unvouched*: their seals say the portal wrote them, but
  nothing outside the database knows they exist, so deleting some of the newest of them leaves
  no trace. The window is the time since the last checkpoint or GitOps commit; a checkpoint is
  taken only after a verification against the witness passed, so it never vouches for a log
  that was already short.
- Whoever holds the key *and* the database (the portal's own host, or anyone who can run code
  in its environment, `manage.py shell` included) can do whatever the portal can: append sealed
  events, and delete or rewrite unvouched ones. What the witness holds stays out of their reach
  as long as the GitOps remote refuses force pushes to its branches.
- Every event must be sealed, but for those recorded before seals existed, below
  AUDIT_SEALED_FROM: they have none and are checked by the chain and anchors only (the seal of
  the event AUDIT_SEALED_FROM names vouches for them through its hash, so that event must be
  there). An event without a seal from there on is forged, or had its seal removed. Where seals
  began is pinned in the environment, where the tables' owner cannot move it, and not in the
  database: a row saying so could be changed or deleted, even a signed one, and after every seal
  was emptied and history rewritten, the next event the portal seals would make the rewrite look
  like events from before seals existed. Checkpoints could say it too, but only as long as they
  are there to be read. A log that starts with events without a seal, up to its first sealed one,
  while AUDIT_SEALED_FROM is not set, is what an upgrade without it looks like, and also what
  stripping the oldest seals looks like: a break that says which id to set in the first case.
- A break, once investigated, can be acknowledged (`manage.py acknowledge_audit_break`): a sealed
  event naming who and why, and a fingerprint of each problem found, of the rows or anchor it is
  about as they are. Later verifications leave those problems out, so the chain is checkpointed
  and alerted on again; a change to what one concerns makes it a new problem, and removing the
  acknowledgment (a break in itself) brings them back. One written without the key is forged, and
  acknowledges nothing.
- An anchor names one event, and vouches only when it carries an HMAC made with the key:
  checkpoints do, and so do `Audit-Head:` trailers (`<event id>:<hash> mac=<hmac>`). Anyone with
  push access can write a trailer: one without the portal's MAC (or from before trailers were
  signed) vouches for nothing, and when it contradicts the log it is named in the report (the
  first 100 of them), but it is no break, and neither stops the checkpoints nor hides what the
  signed anchors find. The report says how many were read, so a flood of them is seen.
"""

import hashlib
import hmac
import json
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from nexo_portal.lib import metrics
from nexo_portal.lib.words import listed

from .models import GENESIS_HASH, AuditAction, AuditEvent

# Any constant works; it only has to be the same for every writer of the chain.
_CHAIN_LOCK_KEY = 0x4E45584F  # "NEXO"


def actor_name(actor):
    """A stable text for whoever acted: a user, an API token, or the system itself."""
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    if hasattr(actor, "audit_name"):
        return actor.audit_name()
    return actor.get_username()


def compute_hash(previous_hash, fields):
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{previous_hash}\n{canonical}".encode()).hexdigest()


def keyed_digest(purpose, text, key=None):
    """HMAC-SHA256 of `text` with AUDIT_CHECKPOINT_KEY (or `key`), for one `purpose`, so a seal can
    never pass for a checkpoint's HMAC or the other way round."""
    key = settings.AUDIT_CHECKPOINT_KEY if key is None else key
    return hmac.new(key.encode(), f"nexo-audit-{purpose}\n{text}".encode(), hashlib.sha256).hexdigest()


def seal_of(event_hash, key=None):
    return keyed_digest("event", event_hash, key)


def head_mac(event_id, event_hash, key=None):
    """What an `Audit-Head:` trailer carries besides the head it names, so that only the portal can
    write one that vouches."""
    return keyed_digest("head", f"{event_id}:{event_hash}", key)


@dataclass
class _Hold:
    """What a `chain_transaction()` knows while it holds the chain's lock: the head as it last read
    or wrote it, and the savepoints open then. Nobody else can append while the lock is held, so
    the next event links to that head without reading it again; if a savepoint it was seen in
    has closed since, an event may have been rolled back, and the head is read again."""

    head: str | None = None
    savepoints: tuple[str, ...] = ()

    def head_if_current(self, savepoints):
        """The head, if no savepoint it was seen in has closed since (one could have rolled back)."""
        if self.head is not None and savepoints[: len(self.savepoints)] == self.savepoints:
            return self.head
        return None


def _open_savepoints():
    # `atomic(savepoint=False)` blocks leave None here: they make no savepoint to roll back to.
    return tuple(sid for sid in connection.savepoint_ids if sid)


# Set while a `chain_transaction()` holds the chain's lock, so nothing inside asks for it again.
_hold: ContextVar[_Hold | None] = ContextVar("audit_chain_hold", default=None)


def lock_chain():
    """Hold the chain's lock until the current transaction ends.

    A transaction that records an event and also locks rows takes this first, so every
    writer takes its locks in the same order — the chain, then rows — and no two writers
    can wait on each other in a circle. On SQLite writes are serialised already.
    """
    if connection.vendor == "postgresql" and _hold.get() is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


def _lock_and_read_head():
    """Take the chain's lock (again: it is re-entrant) and read the head after it was granted."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT audit_lock_chain_and_read_head(%s)", [_CHAIN_LOCK_KEY])
            head_hash = cursor.fetchone()[0]
        else:
            head_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    return head_hash or GENESIS_HASH


@contextmanager
def chain_transaction(savepoint=True):
    """A transaction (a savepoint when nested) that holds the chain's lock from its first statement.

    Use it (as a decorator or a `with` block) for a change that records audit events: the lock
    is asked for once, and the head read with it, however many events and nested changes follow.
    """
    with transaction.atomic(savepoint=savepoint):
        if _hold.get() is not None:
            yield
            return
        hold = _Hold()
        if connection.vendor == "postgresql":
            hold.head, hold.savepoints = _lock_and_read_head(), _open_savepoints()
        token = _hold.set(hold)
        try:
            yield
        finally:
            _hold.reset(token)


def record(
    action, *, actor=None, service="", environment="", version="", promotion=None, message="", data=None, at=None
):
    """Append one event to the chain, sealed, and return it.

    Writers are serialised (an advisory lock on PostgreSQL; SQLite serialises writes by
    itself) so no two events can claim the same predecessor. Call it inside the caller's
    transaction so the event is written if and only if the change it describes is.
    `at` is when it happened, for a history written after the fact (the demo's); default now.
    An actor that says more about itself than its name (`audit_context()`: a GitHub Actions run's
    trusted claims) adds that to the event's data.
    """
    context = getattr(actor, "audit_context", None)
    if context is not None:
        data = {**(data or {}), **context()}
    event = AuditEvent(
        created_at=at or timezone.now(),
        action=action,
        actor=actor_name(actor),
        service=str(service or ""),
        environment=str(environment or ""),
        version=str(version or ""),
        promotion_id=getattr(promotion, "pk", promotion),
        message=message[:500],
        # Round-trip through JSON so what is hashed is exactly what the database gives back.
        data=json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder)),
    )
    # Inside the caller's transaction no savepoint is needed: if this fails, so does the change.
    # The seal needs the hash here, where the key is, so the hash is computed here too.
    with transaction.atomic(savepoint=False):
        hold, savepoints = _hold.get(), _open_savepoints()
        event.previous_hash = (hold and hold.head_if_current(savepoints)) or _lock_and_read_head()
        event.hash = compute_hash(event.previous_hash, event.hashed_fields())
        event.seal = seal_of(event.hash)
        event.save(force_insert=True)
        if hold is not None:
            hold.head, hold.savepoints = event.hash, savepoints
        # Counted once it is committed: a change rolled back takes its event with it.
        transaction.on_commit(lambda: metrics.AUDIT_EVENTS.labels(action=str(action)).inc())
    return event


def head():
    """(id, hash) of the newest event, or None while the log is empty."""
    return AuditEvent.objects.order_by("-id").values_list("id", "hash").first()


@dataclass(frozen=True)
class Anchor:
    """Something outside the database that says event `event_id` had hash `hash`: a checkpoint or a
    commit trailer. `source` says which, for the person reading the report. One not `signed` with
    the portal's key (a trailer without its MAC) vouches for nothing, and is named if it contradicts
    the log."""

    event_id: int
    hash: str
    source: str
    signed: bool = True


# What verify_chain() can find, in the words the report uses.
EDITED = "edited"
REMOVED = "removed"
TRUNCATED = "truncated"
TAIL_DELETED = "tail deleted"
REWRITTEN = "rewritten"
FORGED = "forged"


# Problems named after the first, at most; the rest are counted. Seals are reported once per run of
# events they fail on, so a forged tail is one problem however long it is.
MAX_LATER_PROBLEMS = 100
# Of those, the ones the summary names.
LATER_IN_SUMMARY = 5


@dataclass
class ChainReport:
    checked: int
    broken_at: int | None = None
    # The lowest event any problem reported is at, the first or a later one: from it on, nothing is vouched for.
    broken_from: int | None = None
    reason: str = ""
    problem: str = ""
    anchors: int = 0
    vouched_through: int | None = None
    vouched_by: str = ""
    unvouched: int = 0
    unsealed: int = 0
    head: tuple[int, str] | None = None
    # (event id, problem) of every problem after the first, in the order they are reported.
    later: list[tuple[int, str]] = field(default_factory=list)
    more: int = 0
    # What the first MAX_LATER_PROBLEMS unsigned anchors that contradict the log say: no break, but
    # someone wrote them. `unsigned` counts every anchor without the portal's MAC that was read.
    unverified: list[str] = field(default_factory=list)
    unsigned: int = 0
    # What identifies each problem reported, for an acknowledgment (manage.py acknowledge_audit_break).
    fingerprints: list[str] = field(default_factory=list)
    # Problems found that an acknowledgment in the log names, left out; and those acknowledgments.
    acknowledged: int = 0
    acknowledged_by: list[str] = field(default_factory=list)

    @property
    def ok(self):
        return not self.problem

    def add_problem(self, event_id, problem, reason, fingerprint):
        """The first problem is reported in full; the later ones by place and kind."""
        self.fingerprints.append(fingerprint)
        self.broken_from = event_id if self.broken_from is None else min(self.broken_from, event_id)
        if not self.problem:
            self.broken_at, self.problem, self.reason = event_id, problem, reason
        elif len(self.later) < MAX_LATER_PROBLEMS:
            self.later.append((event_id, problem))
        else:
            self.more += 1

    def summary(self):
        """One paragraph for the command's output, the log, the alert and the audit page."""
        if not self.ok:
            text = f"The audit chain breaks at event {self.broken_at} ({self.problem}): {self.reason}"
            named = [f"event {event_id} ({problem})" for event_id, problem in self.later[:LATER_IN_SUMMARY]]
            rest = len(self.later) - len(named) + self.more
            if rest:
                named.append(f"{rest} more")
            if named:
                text += f"; it breaks also at {listed(named)}"
            if self.acknowledged:
                text += f"; left out: {self._acknowledged_summary()}"
            return text + "." + self._unverified_summary()
        text = "The audit chain is intact"
        if self.acknowledged:
            text += f" but for {self._acknowledged_summary()}"
        text += f": {self.checked} event{'s' if self.checked != 1 else ''} checked"
        if self.unsealed:
            text += f", the oldest {self.unsealed} from before seals existed"
        if self.vouched_through is not None:
            text += f"; {self.vouched_by} vouches for event {self.vouched_through}"
            if self.unvouched:
                text += f", and the {self.unvouched} after it are vouched for by their seals only"
        elif self.anchors == 0 and self.checked:
            text += "; no checkpoint or commit trailer vouches for any of them yet"
        return text + "." + self._unverified_summary()

    def _acknowledged_summary(self):
        plural = "s" if self.acknowledged != 1 else ""
        return f"{self.acknowledged} known problem{plural}, acknowledged by {' and '.join(self.acknowledged_by)}"

    def _unverified_summary(self):
        named = "".join(f" {text[0].upper()}{text[1:]}." for text in self.unverified[:LATER_IN_SUMMARY])
        return named + (f" {self.skipped()}" if self.unsigned else "")

    def skipped(self):
        """What the anchors without the portal's MAC that were read say: that someone writes them."""
        if self.unsigned == 1:
            return (
                "Skipped 1 commit trailer or checkpoint without the portal's MAC, which vouches for nothing: "
                "someone who may push to the witness wrote it, unless it is an Audit-Head trailer from before "
                "the portal signed its own."
            )
        return (
            f"Skipped {self.unsigned} commit trailers and checkpoints without the portal's MAC, which vouch for "
            "nothing: someone who may push to the witness wrote them, unless they are Audit-Head trailers from "
            "before the portal signed its own."
        )


def verify_chain(anchors=(), key=None):
    """Walk the whole log in order and report what does not fit: the first problem in full, and
    every later one (up to MAX_LATER_PROBLEMS) by place and kind.

    Breaks in the chain (an edited row, a removed or moved one) come first, in the order of the
    rows; then the anchors, oldest first (truncation, a deleted tail, a rewrite); then seals (a
    forged event), once per run of events whose seals fail. After a break the walk goes on from
    the row where it is, so a first break, known and alerted, never hides a later one. `key`
    defaults to AUDIT_CHECKPOINT_KEY. Anchors that are not `signed` vouch for nothing: the ones that
    contradict the log are named (`ChainReport.unverified`), but they are no break.

    A problem an acknowledgment in the log names (a sealed event recorded by
    `manage.py acknowledge_audit_break`) is counted, not reported, for as long as what it concerns
    stays as it was acknowledged: each problem's fingerprint covers the rows or anchor it is about,
    so a change there since is a new problem.
    """
    anchored_ids = {anchor.event_id for anchor in anchors}
    unsigned = [anchor for anchor in anchors if not anchor.signed]
    anchors = sorted((anchor for anchor in anchors if anchor.signed), key=lambda anchor: anchor.event_id)
    report = ChainReport(0, anchors=len(anchors), unsigned=len(unsigned))
    found = {}
    expected_previous = GENESIS_HASH
    unsealed = 0
    first_id = last = None
    sealed_since = None
    # Whoever owns the tables can empty every seal; where seals began is therefore said outside them.
    sealed_from = settings.AUDIT_SEALED_FROM
    first_sealed_found = False
    # The first event with a seal, and the last of those without one before it: the shape of a log begun
    # before seals existed, or of one whose oldest seals were stripped.
    first_with_seal = last_seal_less = None
    bad_seals, bad_seals_uncounted, run = [], 0, None
    # (event id, problem, reason, fingerprint) in the order they are reported, once the acknowledgments,
    # which come after what they acknowledge, are known.
    found_problems = []
    acknowledged = set()
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.previous_hash != expected_previous:
            reason = "it does not link to the event before it (an event was removed or reordered)"
            fingerprint = _fingerprint(REMOVED, event.pk, event.previous_hash, expected_previous)
            found_problems.append((event.pk, REMOVED, reason, fingerprint))
        content_hash = compute_hash(event.previous_hash, event.hashed_fields())
        if content_hash != event.hash:
            reason = "its content does not match its hash (the row was edited)"
            found_problems.append((event.pk, EDITED, reason, _fingerprint(EDITED, event.pk, event.hash, content_hash)))
        sealed = bool(event.seal) and hmac.compare_digest(event.seal, seal_of(event.hash, key))
        if sealed:
            sealed_since = sealed_since or event.pk
            if event.action == AuditAction.CHAIN_BREAK_ACKNOWLEDGED and content_hash == event.hash:
                acknowledged.update(str(fingerprint) for fingerprint in event.data.get("fingerprints", []))
                report.acknowledged_by.append(f"{event.actor} (event {event.pk})")
        from_before_seals = not sealed and sealed_since is None and not event.seal and event.pk < sealed_from
        unsealed += from_before_seals
        bad_seal = not (sealed or from_before_seals)
        if not bad_seal:
            run = None
        elif run is None:  # a run of failing seals starts here
            run = hashlib.sha256()
            if len(bad_seals) <= MAX_LATER_PROBLEMS:
                bad_seals.append((event.pk, not event.seal, run))
            else:
                bad_seals_uncounted += 1
        if run is not None:
            run.update(f"{event.pk}:{event.hash}:{event.seal}\n".encode())
        first_sealed_found = first_sealed_found or event.pk == sealed_from
        if first_with_seal is None:
            if event.seal:
                first_with_seal = event.pk
            else:
                last_seal_less = event.pk
        if event.pk in anchored_ids:
            found[event.pk] = event.hash
        first_id = first_id or event.pk
        last = (event.pk, event.hash)
        # The next row is checked against this one as it is: one removed row is one problem, not every row after it.
        expected_previous = event.hash
        report.checked += 1
    report.unsealed, report.head = unsealed, last
    for anchor in unsigned:
        if len(report.unverified) == MAX_LATER_PROBLEMS:
            break  # the rest are counted: a flood of them is said in one sentence, not one a trailer
        if (found_hash := found.get(anchor.event_id)) != anchor.hash:
            what = "with a hash it does not have" if found_hash else "which the log does not hold"
            report.unverified.append(
                f"{anchor.source} names event {anchor.event_id}, {what}, and does not carry the portal's MAC: "
                "it vouches for nothing"
            )
    first_bad_seal = bad_seals[0][0] if bad_seals else None
    vouching = []
    for anchor in anchors:
        problem = _anchor_problem(anchor, found.get(anchor.event_id), first_id, last, first_bad_seal)
        if problem:
            kind, reason, detail = problem
            fingerprint = _fingerprint(kind, anchor.event_id, anchor.hash, detail)
            found_problems.append((anchor.event_id, kind, reason, fingerprint))
        else:
            vouching.append(anchor)
    if vouching and all(fingerprint in acknowledged for *_, fingerprint in found_problems):
        report.vouched_through, report.vouched_by = vouching[-1].event_id, vouching[-1].source
        report.unvouched = AuditEvent.objects.filter(id__gt=report.vouched_through).count()
    unsealed_prefix = None
    if not sealed_from and last_seal_less is not None and sealed_since is not None and first_with_seal == sealed_since:
        unsealed_prefix = (first_id, last_seal_less, sealed_since)
    for event_id, stripped, seals in bad_seals:
        kind, reason = _seal_problem(event_id, stripped, sealed_since, sealed_from, vouching, unsealed_prefix)
        # Not the kind: a checkpoint taken since turns "forged" into "edited", and the run is still the same.
        found_problems.append((event_id, kind, reason, _fingerprint("seals", event_id, seals.hexdigest())))
    if sealed_from and not first_sealed_found:
        # Its seal vouched for the events from before seals; without it they could have been rewritten, and
        # the portal's next event, linked to what it found, sealed them as they are.
        carried_on = "" if last is None or last[0] < sealed_from else ", and the portal has written on from there since"
        reason = (
            "AUDIT_SEALED_FROM says the portal sealed this event first, and it is gone: the events from "
            f"{sealed_from} on were deleted{carried_on}"
        )
        found_problems.append((sealed_from, TAIL_DELETED, reason, _fingerprint(TAIL_DELETED, sealed_from)))
    for event_id, problem, reason, fingerprint in found_problems:
        if fingerprint in acknowledged:
            report.acknowledged += 1
        else:
            report.add_problem(event_id, problem, reason, fingerprint)
    report.more += bad_seals_uncounted
    return report


def _fingerprint(problem, event_id, *state):
    """What stays the same for as long as a problem is the same one: its kind, its place, and the
    hashes of what it concerns as they are now."""
    return hashlib.sha256("\n".join(str(part) for part in (problem, event_id, *state)).encode()).hexdigest()[:32]


def _seal_problem(event_id, stripped, sealed_since, sealed_from, vouching, unsealed_prefix=None):
    """(problem, reason) for a run of events whose seals fail, from `event_id` on; `stripped`: it has none;
    `vouching`: the anchors that hold. Under one of them the seal was changed, not the event appended.
    `unsealed_prefix`: (first, last, first sealed) when the log starts with events without a seal, up to its
    first sealed event, and AUDIT_SEALED_FROM is not set."""
    if sealed_since is None and not stripped:
        return FORGED, (
            "no event's seal checks from here on: AUDIT_CHECKPOINT_KEY is not the key the portal sealed them "
            "with, or they were all written by someone without it"
        )
    source = next((anchor.source for anchor in vouching if anchor.event_id >= event_id), None)
    if unsealed_prefix is not None and unsealed_prefix[0] == event_id:
        # What a log begun before seals looks like once upgraded without AUDIT_SEALED_FROM: still a break, as
        # stripping the oldest seals looks the same, but one that says how to tell and what to do.
        return (EDITED if source else FORGED), _unsealed_prefix_reason(*unsealed_prefix)
    if source is not None:
        return EDITED, (
            f"its seal {'was removed' if stripped else 'does not match its hash'} although {source} vouches for "
            "the chain through it: the seal was changed, or AUDIT_CHECKPOINT_KEY is not the key the portal sealed "
            "it with"
        )
    if stripped:
        since = f"from event {sealed_from} on (AUDIT_SEALED_FROM)" if sealed_from else "it recorded"
        return FORGED, (
            f"it has no seal, yet the portal sealed every event {since}: it was appended, or its seal removed and "
            "the events from here on rewritten, by someone who could write to the database but does not hold "
            "AUDIT_CHECKPOINT_KEY"
        )
    return FORGED, (
        "its seal is not the portal's: it was appended, or rewritten with every hash after it, by someone "
        "who could write to the database but does not hold AUDIT_CHECKPOINT_KEY"
    )


def _unsealed_prefix_reason(first, last, first_sealed):
    if first == last:
        events, them, their = f"event {first} carries no seal and comes", "it", "its seal was"
    else:
        events, them, their = f"events {first}–{last} carry no seal and all come", "them", "their seals were"
    return (
        f"{events} before the first sealed event {first_sealed}: if this installation recorded {them} before "
        f"seals existed (before the portal's audit migration 0008_auditevent_seal), set "
        f"AUDIT_SEALED_FROM={first_sealed} (docs/deploy.md); otherwise {their} stripped: investigate"
    )


def _anchor_problem(anchor, found_hash, first_id, last, first_bad_seal):
    """(problem, reason, what else identifies it) when the table contradicts `anchor`, else None."""
    if found_hash == anchor.hash:
        return None
    if found_hash is not None:
        reason = (
            f"it is not the event {anchor.source} vouches for: the history up to it was rewritten "
            "and the hashes recomputed"
        )
        return REWRITTEN, reason, found_hash
    if last is None or first_id > anchor.event_id:
        holds = f"its oldest event is {first_id}" if last is not None else "it is empty"
        reason = (
            f"{anchor.source} vouches for this event, and the table holds nothing up to it ({holds}): "
            "the log was truncated"
        )
        return TRUNCATED, reason, ""
    if first_bad_seal is not None and first_bad_seal > anchor.event_id:
        reason = (
            f"{anchor.source} vouches for this event, which is gone, and the events after the gap "
            "are not sealed by the portal: events were removed and the hashes after them recomputed"
        )
        return REWRITTEN, reason, ""
    survivor = AuditEvent.objects.filter(id__lt=anchor.event_id).order_by("-id").values_list("id", flat=True).first()
    carried_on = "" if last[0] < anchor.event_id else ", and the portal has written on from there since"
    reason = (
        f"{anchor.source} vouches for this event, which is gone: the events after {survivor} were deleted{carried_on}"
    )
    return TAIL_DELETED, reason, survivor
