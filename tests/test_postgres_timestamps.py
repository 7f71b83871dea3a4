"""Timestamps read by psycopg's C loader (nexo_portal/lib/postgres.py): the same datetimes as Django's
own loader gives, on every connection the portal opens."""

from datetime import UTC, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format

from nexo_portal.lib.postgres import CTimestamptzLoader, use_c_timestamp_loader
from releases.models import Promotion
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

# Offsets, microseconds, the ends of the years Python reads, a leap second's neighbour, NULL.
LITERALS = [
    "2026-12-06 19:45:12.827054+00",
    "2026-03-29 01:30:00+01",
    "2026-10-25 01:30:00-03:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2016-12-31 23:59:59.5+00",
    "1970-01-01 00:00:00+00",
]


def read(cursor):
    cursor.execute("SELECT " + ", ".join(f"'{literal}'::timestamptz" for literal in LITERALS) + ", NULL::timestamptz")
    return cursor.fetchone()


def test_every_connection_reads_timestamps_with_the_c_loader():
    connection.ensure_connection()
    oid = connection.connection.adapters.types["timestamptz"].oid
    assert connection.connection.adapters.get_loader(oid, Format.TEXT) is CTimestamptzLoader
    # Its `load` is the method of psycopg's compiled loader, not a Python function.
    compiled = type(CTimestamptzLoader(oid, connection.connection).load.__self__)
    assert compiled.__module__.split(".")[0] in {"psycopg_binary", "psycopg_c"}
    assert compiled.__name__ == "TimestamptzLoader"


def test_it_reads_what_djangos_loader_reads():
    with connection.cursor() as cursor:
        ours = read(cursor)
    with connection.cursor() as cursor:
        register_tzloader(connection.timezone, cursor.cursor)  # Django's loader, on this cursor only
        djangos = read(cursor)
    assert ours == djangos
    assert ours[-1] is None
    assert all(moment.tzinfo is UTC for moment in ours[:-1])
    assert ours[1] == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert ours[0].microsecond == 827054


def test_a_model_round_trips_its_timestamps(environments):
    promotion = Promotion.objects.create(
        release=make_release(make_service("nexo-be"), "2026.02.1"),
        environment=environments["develop"],
        requested_at=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    )
    assert Promotion.objects.get(pk=promotion.pk).requested_at == datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def test_a_connection_in_another_time_zone_keeps_djangos_loader():
    """Another zone, a DATABASES TIME_ZONE (even "UTC": a ZoneInfo) or USE_TZ off (None): Django's
    create_cursor() would put its own loader back on every cursor, so none is registered."""
    registered = []
    adapters = SimpleNamespace(register_loader=lambda *args: registered.append(args))
    for zone in (ZoneInfo("Europe/Lisbon"), ZoneInfo("UTC"), None):
        elsewhere = SimpleNamespace(vendor="postgresql", timezone=zone, connection=SimpleNamespace(adapters=adapters))
        use_c_timestamp_loader(sender=None, connection=elsewhere)
    assert registered == []
    in_utc = SimpleNamespace(vendor="postgresql", timezone=UTC, connection=SimpleNamespace(adapters=adapters))
    use_c_timestamp_loader(sender=None, connection=in_utc)
    assert registered == [("timestamptz", CTimestamptzLoader)]
