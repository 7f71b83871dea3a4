"""Timestamps read from PostgreSQL by psycopg's C loader instead of Django's Python one.

Django reads every `timestamptz` with `psycopg_any.BaseTzLoader`, a subclass of psycopg's
pure-Python loader (a C type cannot be subclassed), at ~4 µs a value. The full board reads ~1,200
of them a request, ~4 ms of its CPU (bench/README.md). psycopg's C loader reads the same text in
~0.4 µs and gives the same datetime: the session's time zone is UTC (Django sets it so), and the C
loader returns UTC moments with `datetime.timezone.utc`, exactly as Django's does.

`use_c_timestamp_loader` is a `connection_created` receiver (nexo_portal/apps.py): each new
connection gets the loader, unless psycopg runs without its C extension or the connection's time
zone is not Django's UTC (USE_TZ off, a DATABASES TIME_ZONE setting), where Django's own loader stays.
"""

from datetime import UTC

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format

# psycopg's own loader for the type: the compiled one when its C extension is installed.
_PSYCOPG_LOADER = psycopg.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, Format.TEXT)


class CTimestamptzLoader(Loader):
    """A loader whose `load` is the C loader's own bound method: no Python frame per value."""

    # What Django's create_cursor() compares with the connection's time zone before it puts its
    # own loader back on a cursor.
    timezone = UTC

    def __init__(self, oid, context=None):
        super().__init__(oid, context)
        # psycopg calls the instance's `load`: the C loader's method, bound to a C loader made for
        # this connection (it reads the session's time zone when it is made).
        self.load = _PSYCOPG_LOADER(oid, context).load  # type: ignore[method-assign,misc]

    def load(self, data):  # replaced per instance in __init__; psycopg requires the method
        raise NotImplementedError


def use_c_timestamp_loader(sender, connection, **kwargs):
    # Django's own timezone object, as create_cursor() compares it: with USE_TZ off, or a DATABASES
    # TIME_ZONE even of "UTC" (a ZoneInfo), Django would put its loader back on every cursor.
    if connection.vendor != "postgresql" or psycopg.pq.__impl__ == "python" or connection.timezone is not UTC:
        return
    connection.connection.adapters.register_loader("timestamptz", CTimestamptzLoader)
