"""What the current request or job is about, for every log line and span it leads to.

A middleware sets the request id and the user; a job sets its id; whoever loads a promotion sets
its id, service and environment. Context variables follow threads and asyncio tasks correctly, and
each `bound()` block gives back what was there before, so a job never inherits the last one's.
"""

from contextlib import contextmanager
from contextvars import ContextVar

FIELDS = ("request_id", "user", "promotion_id", "service", "environment", "job_id")

_context: ContextVar[dict] = ContextVar("nexo_context", default={})  # noqa: B039 - never mutated, only replaced


def current():
    """The fields set now, without the empty ones."""
    return _context.get()


def start(**values):
    """A new context with only these fields, for the rest of this thread's (or task's) work: a request
    starts one, so that Django's own lines about it, logged after the middleware returned, carry it too."""
    _context.set(_merged(values, base={}))


def bind(**values):
    """Add fields to the current context until the enclosing `bound()` block ends."""
    _context.set(_merged(values))


@contextmanager
def bound(*, fresh=False, **values):
    """Fields for the length of the block (`fresh`: only these); the context before comes back after it."""
    token = _context.set(_merged(values, base={} if fresh else None))
    try:
        yield
    finally:
        _context.reset(token)


def bind_promotion(promotion):
    """The promotion's id, service and environment, from the object (its relations loaded or not)."""
    values = {"promotion_id": promotion.pk}
    for field in ("service", "environment"):
        cached = promotion._state.fields_cache.get(field)
        if cached is not None:
            values[field] = cached.name
    bind(**values)


def _merged(values, base=None):
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"Unknown context fields: {sorted(unknown)}")
    merged = dict(_context.get() if base is None else base)
    merged.update({key: value for key, value in values.items() if value not in (None, "")})
    return merged
