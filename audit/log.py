"""Record audit events and verify the hash chain that links them."""

import hashlib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from .models import GENESIS_HASH, AuditEvent

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


# Set while a `chain_transaction()` holds the chain's lock, so nothing inside asks for it again.
_chain_held = ContextVar("audit_chain_held", default=False)


def lock_chain():
    """Hold the chain's lock until the current transaction ends.

    A transaction that records an event and also locks rows takes this first, so every
    writer takes its locks in the same order — the chain, then rows — and no two writers
    can wait on each other in a circle. On SQLite writes are serialised already.
    """
    if connection.vendor == "postgresql" and not _chain_held.get():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


@contextmanager
def chain_transaction(savepoint=True):
    """A transaction (a savepoint when nested) that holds the chain's lock from its first statement.

    Use it (as a decorator or a `with` block) for a change that records audit events: the lock
    is asked for once, however many events and nested changes follow inside it.
    """
    with transaction.atomic(savepoint=savepoint):
        if _chain_held.get():
            yield
            return
        lock_chain()
        token = _chain_held.set(True)
        try:
            yield
        finally:
            _chain_held.reset(token)


# One statement appends the event to the head it reads, which the lock keeps still: the hash is
# compute_hash()'s, SHA-256 of the previous hash, a newline and the canonical JSON.
_APPEND = """
    INSERT INTO {table} (created_at, action, actor, service, environment, version, promotion_id, message, data,
                         previous_hash, hash)
    SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb,
           head.hash, encode(sha256(convert_to(head.hash || E'\\n' || %s, 'UTF8')), 'hex')
    FROM (SELECT COALESCE((SELECT hash FROM {table} ORDER BY id DESC LIMIT 1), %s) AS hash) AS head
    RETURNING id, previous_hash, hash
"""


def record(
    action, *, actor=None, service="", environment="", version="", promotion=None, message="", data=None, at=None
):
    """Append one event to the chain and return it.

    Writers are serialised (an advisory lock on PostgreSQL; SQLite serialises writes by
    itself) so no two events can claim the same predecessor. Call it inside the caller's
    transaction so the event is written if and only if the change it describes is.
    `at` is when it happened, for a history written after the fact (the demo's); default now.
    """
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
    with transaction.atomic(savepoint=False):
        lock_chain()
        if connection.vendor == "postgresql":
            _append(event)
        else:
            event.previous_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
            event.previous_hash = event.previous_hash or GENESIS_HASH
            event.hash = compute_hash(event.previous_hash, event.hashed_fields())
            event.save()
    return event


def _append(event):
    fields = event.hashed_fields()
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with connection.cursor() as cursor:
        cursor.execute(
            _APPEND.format(table=AuditEvent._meta.db_table),
            [
                event.created_at,
                event.action,
                event.actor,
                event.service,
                event.environment,
                event.version,
                event.promotion_id,
                event.message,
                json.dumps(event.data),
                canonical,
                GENESIS_HASH,
            ],
        )
        event.pk, event.previous_hash, event.hash = cursor.fetchone()
    event._state.adding = False
    event._state.db = connection.alias


@dataclass
class ChainReport:
    checked: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self):
        return self.broken_at is None


def verify_chain():
    """Walk the whole log in order and report the first event that does not fit."""
    expected_previous = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.previous_hash != expected_previous:
            return ChainReport(
                checked, event.pk, "it does not link to the event before it (an event was removed or reordered)"
            )
        if compute_hash(event.previous_hash, event.hashed_fields()) != event.hash:
            return ChainReport(checked, event.pk, "its content does not match its hash (the row was edited)")
        expected_previous = event.hash
        checked += 1
    return ChainReport(checked)
