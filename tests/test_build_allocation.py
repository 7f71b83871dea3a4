"""Build numbers are handed out race-free on PostgreSQL, with real concurrent connections."""

import threading

import pytest
from django.db import connection, connections, transaction

from releases.models import BuildCounter
from tests.factories import make_release, make_service


@pytest.mark.django_db
def test_first_build_of_a_month_is_one_and_numbers_are_consecutive():
    service = make_service()
    assert [BuildCounter.allocate(service, 2026, 2) for _ in range(3)] == [1, 2, 3]
    assert BuildCounter.allocate(service, 2026, 3) == 1


@pytest.mark.django_db
def test_allocation_skips_numbers_taken_by_explicit_versions():
    service = make_service()
    make_release(service, "2026.02.45")
    assert BuildCounter.allocate(service, 2026, 2) == 46


@pytest.mark.django_db
def test_allocation_is_per_service():
    first, second = make_service(), make_service()
    assert BuildCounter.allocate(first, 2026, 2) == 1
    assert BuildCounter.allocate(second, 2026, 2) == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_allocations_give_fifty_distinct_consecutive_numbers():
    service = make_service()
    start = threading.Barrier(50)
    results, errors = [], []

    def allocate():
        try:
            start.wait()
            with transaction.atomic():
                number = BuildCounter.allocate(service, 2026, 2)
                # Hold the transaction a moment, as a real registration would while saving the release.
                make_release(service, f"2026.02.{number}")
            results.append(number)
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=allocate) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert connection.vendor == "postgresql"
    assert errors == []
    assert sorted(results) == list(range(1, 51))
