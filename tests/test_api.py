"""The REST API for CI: every endpoint, its validation errors, scopes, idempotency and the one error shape."""

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit import log as audit
from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze, Environment
from nexo_portal.lib.errors import Refused
from nexo_portal.models import ApiToken
from releases import registration, steps, transitions
from releases.models import (
    BuildCounter,
    CheckResult,
    Deployment,
    Promotion,
    PromotionState,
    Release,
    Step,
    StepRun,
)
from tests.factories import hex_for, make_release, make_service, make_user

pytestmark = pytest.mark.django_db

SHA = "a3f2b1c" + "0" * 33
DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def world(environments, redis_connection, rita, sam, lead):
    return {
        "service": make_service("nexo-be", team="backend-team"),
        "other": make_service("nexo-fe", team="frontend-team"),
        "env": environments,
        "rita": rita,
        "sam": sam,
        "lead": lead,
    }


def token_client(*scopes, services=(), user=None, name=None):
    name = name or f"ci-{'-'.join(scopes) or 'none'}-{ApiToken.objects.count() + 1}"
    token, plain = ApiToken.objects.issue(
        name=name, scopes=scopes, services=services, all_services=not services, user=user
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    client.token = token
    return client


def session_client(user):
    client = APIClient()
    client.force_login(user)
    return client


def build(**overrides):
    return {
        "service": "nexo-be",
        "commit_sha": SHA,
        "committed_at": "2026-02-03T10:00:00Z",
        "image_digest": DIGEST,
        **overrides,
    }


def assert_error(response, status, field=None, text=""):
    """Every 4xx has the same body: status, code, message, and errors naming the field."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"status", "code", "message", "errors"}
    assert body["status"] == status
    assert text in body["message"], body["message"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body["errors"]
    return body


def test_a_freeze_refusal_tells_a_ci_token_to_wait_for_its_end_not_to_break_glass(world):
    release = make_release(world["service"], "2026.02.1")
    for name in ("develop", "qa", "staging"):
        promotion = Promotion.objects.create(
            release=release, environment=world["env"][name], state=PromotionState.VERIFIED, finished_at=timezone.now()
        )
        Deployment.objects.create(
            service=world["service"],
            environment=world["env"][name],
            release=release,
            promotion=promotion,
            deployed_at=timezone.now(),
        )
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Year-end freeze",
    )
    response = token_client("promote").post(
        "/api/v1/promotions/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "production"},
        format="json",
    )
    body = assert_error(response, 409, text="Year-end freeze. It may be requested once the freeze ends.")
    assert "break-glass" not in body["message"]


# --- registering builds ------------------------------------------------------------------------------------


def test_register_allocates_the_next_calver_build_and_answers_the_tags(world):
    client = token_client("register")
    response = client.post("/api/v1/releases/", build(changelog="- feat: rate limiting"), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    today = timezone.localdate()
    version = f"{today.year}.{today.month:02d}.1"
    assert body["version"] == version
    assert body["tags"] == [version, f"{version}-a3f2b1c", "sha-a3f2b1c"]
    assert body["images"][0] == f"ghcr.io/nexo-org/nexo-be:{version}"
    assert body["created"] is True
    assert body["registered_by"] == f"api-token:{client.token.name}"
    second = client.post(
        "/api/v1/releases/", build(commit_sha=hex_for("next"), image_digest="sha256:" + "c" * 64), format="json"
    )
    assert second.json()["version"] == f"{today.year}.{today.month:02d}.2"


def test_register_starts_the_automatic_develop_promotion(world):
    response = token_client("register").post("/api/v1/releases/", build(), format="json")
    promotion = response.json()["promotion"]
    assert (promotion["environment"], promotion["kind"], promotion["state"]) == ("develop", "auto", "approved")
    assert response.json()["promotion_waits"] is None


def test_a_build_registered_while_develop_is_busy_says_why_it_waits(world):
    client = token_client("register")
    first = client.post("/api/v1/releases/", build(), format="json").json()
    second = client.post(
        "/api/v1/releases/", build(commit_sha=hex_for("next"), image_digest="sha256:" + "c" * 64), format="json"
    ).json()

    assert second["promotion"] is None
    assert second["promotion_waits"] == (
        f"nexo-be {first['version']} → develop is already approved (promotion #{first['promotion']['id']}); "
        "wait for it to finish before requesting another one."
    )
    deferred = AuditEvent.objects.get(action=AuditAction.PROMOTION_DEFERRED)
    assert (deferred.version, deferred.data["reason"]) == (second["version"], second["promotion_waits"])


def test_a_registration_with_its_develop_promotion_runs_at_most_15_queries(
    world, transactional_db, django_assert_max_num_queries
):
    """Registration is CI's hot path: its queries do not grow with the service's history. (The chain's
    head is read once, with its lock; the second audit event links to the first without a read. The
    environments are read once, for the develop promotion and the answer's `image_requirements`.)"""
    client = token_client("register", services=[world["service"]])
    client.post("/api/v1/releases/", build(commit_sha=hex_for("earlier")), format="json")
    Promotion.objects.update(state=PromotionState.VERIFIED)  # develop is free for the next build
    with django_assert_max_num_queries(15):
        response = client.post("/api/v1/releases/", build(), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["promotion"]["state"] == "approved"


def test_the_registering_token_may_follow_the_urls_its_answer_gives(world):
    client = token_client("register")
    body = client.post("/api/v1/releases/", build(), format="json").json()
    assert client.get(body["url"]).status_code == 200
    promotion = client.get(body["promotion"]["url"])
    assert promotion.status_code == 200, promotion.content
    assert promotion.json()["environment"] == "develop"


def test_register_with_an_explicit_version(world):
    response = token_client("register").post(
        "/api/v1/releases/", build(version="2026.02.16-hotfix-auth", hotfix=True), format="json"
    )
    assert response.status_code == 201
    assert response.json()["version"] == "2026.02.16-hotfix-auth"
    assert response.json()["is_hotfix"] is True


def test_a_retried_registration_returns_the_same_release(world):
    client = token_client("register")
    first = client.post("/api/v1/releases/", build(), format="json")
    again = client.post("/api/v1/releases/", build(), format="json")
    assert again.status_code == 200
    assert again.json()["version"] == first.json()["version"]
    assert again.json()["created"] is False
    assert Release.objects.count() == 1


def test_a_retried_registration_names_the_develop_promotion_the_original_started(world):
    """A CI retry after a timeout follows `.promotion.url` as the original's answer would have let it."""
    client = token_client("register")
    first = client.post("/api/v1/releases/", build(), format="json").json()
    again = client.post("/api/v1/releases/", build(), format="json").json()

    assert first["promotion"] is not None
    assert (again["promotion"]["id"], again["promotion"]["url"]) == (
        first["promotion"]["id"],
        first["promotion"]["url"],
    )
    assert (again["promotion"]["environment"], again["promotion"]["kind"]) == ("develop", "auto")
    assert again["promotion_waits"] is None


def test_a_retried_registration_says_why_the_build_waits_as_the_original_did(world):
    client = token_client("register")
    client.post("/api/v1/releases/", build(), format="json")
    waiting = build(commit_sha=hex_for("next"), image_digest="sha256:" + "c" * 64)
    original = client.post("/api/v1/releases/", waiting, format="json").json()
    again = client.post("/api/v1/releases/", waiting, format="json").json()

    assert original["promotion_waits"]
    assert (again["created"], again["promotion"], again["promotion_waits"]) == (
        False,
        None,
        original["promotion_waits"],
    )


def test_a_retried_registration_reads_only_the_token_the_service_and_the_release(
    world, transactional_db, django_assert_max_num_queries
):
    """A retry answers from the release it finds: its service is the one the request named, not read again
    (token, service, BEGIN, the release, the environments, for the first one and what they require of the
    image, the automatic promotion into the first, COMMIT)."""
    client = token_client("register")
    client.post("/api/v1/releases/", build(), format="json")
    with django_assert_max_num_queries(7):
        again = client.post("/api/v1/releases/", build(), format="json")
    assert again.status_code == 200, again.content
    assert again.json()["service"] == "nexo-be"


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_never_make_a_second_version(environments, redis_connection):
    make_service("nexo-be")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    start, answers = threading.Barrier(6), []

    def register():
        try:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {plain}")
            start.wait()
            answers.append(client.post("/api/v1/releases/", build(), content_type="application/json"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [201]
    assert len({answer.json()["version"] for answer in answers}) == 1
    assert Release.objects.count() == 1


class _ChainHeld:
    """Another writer holding the audit chain's lock, and registrations sent meanwhile, each in a thread."""

    def __init__(self, token):
        self.token, self.answers, self.threads, self.work = token, {}, [], None
        self.held, self.done = threading.Event(), threading.Event()

    def __enter__(self):
        self._start(self._hold)
        self.held.wait(timeout=10)
        return self

    def __exit__(self, *exc_info):
        self.done.set()
        for thread in self.threads:
            thread.join()

    def register(self, label, **overrides):
        def post():
            client = Client(HTTP_AUTHORIZATION=f"Bearer {self.token}")
            self.answers[label] = client.post("/api/v1/releases/", build(**overrides), content_type="application/json")

        self._start(post)

    def while_held(self, work):
        """Have the writer holding the lock do `work` in its transaction before it lets go."""
        self.work = work

    def _hold(self):
        with transaction.atomic():
            audit.lock_chain()
            self.held.set()
            self.done.wait(timeout=30)
            if self.work:
                self.work()

    def _start(self, target):
        def run():
            try:
                target()
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()


def _backends_waiting(expected, *, with_a_release_written=False, patience=10):
    """How many backends wait for a lock (holding a row lock of a new release), once `expected` do."""
    written = (
        " AND EXISTS (SELECT 1 FROM pg_locks written JOIN pg_class ON pg_class.oid = written.relation"
        "   WHERE written.pid = waiting.pid AND pg_class.relname = 'releases_release'"
        "   AND written.mode = 'RowExclusiveLock' AND written.granted)"
    )
    query = (
        "SELECT count(DISTINCT waiting.pid) FROM pg_locks waiting WHERE NOT waiting.granted"
        " AND waiting.pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
        + (written if with_a_release_written else "")
    )
    deadline = time.monotonic() + patience
    with connection.cursor() as cursor:
        while True:
            cursor.execute(query)
            (count,) = cursor.fetchone()
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_registrations_write_their_release_before_they_wait_for_the_audit_chain(environments, redis_connection):
    """Every writer of the audit log waits for the chain's lock; a registration takes it only to record
    its events. While another writer holds it, builds of two services have each written their release
    and wait there side by side, rather than one behind the other before doing anything."""
    make_service("nexo-be")
    make_service("nexo-fe")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    with _ChainHeld(plain) as chain:
        chain.register("be", service="nexo-be")
        chain.register("fe", service="nexo-fe")
        waiting = _backends_waiting(2, with_a_release_written=True)
    assert waiting == 2
    assert [chain.answers[label].status_code for label in ("be", "fe")] == [201, 201]
    assert Release.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_retry_racing_its_original_answers_with_the_same_release(environments, redis_connection):
    """The retry finds nothing yet, waits for the month's build counter, then collides with the original
    on the release's unique constraint: it gives its build number back and answers the original's."""
    make_service("nexo-be")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    with _ChainHeld(plain) as chain:
        chain.register("original")
        assert _backends_waiting(1, with_a_release_written=True) == 1
        chain.register("retry")
        assert _backends_waiting(2) == 2
    original, retry = chain.answers["original"], chain.answers["retry"]
    assert (original.status_code, retry.status_code) == (201, 200), retry.content
    assert retry.json()["version"] == original.json()["version"]
    assert Release.objects.count() == 1
    assert BuildCounter.objects.get().last_build == 1


@pytest.mark.django_db(transaction=True)
def test_a_version_registered_meanwhile_by_another_build_is_a_conflict(environments, redis_connection):
    make_service("nexo-be")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    with _ChainHeld(plain) as chain:
        chain.register("first", version="2026.02.1")
        assert _backends_waiting(1, with_a_release_written=True) == 1
        chain.register("second", version="2026.02.1", image_digest="sha256:" + "d" * 64)
        assert _backends_waiting(2) == 2
    assert chain.answers["first"].status_code == 201
    assert_error(chain.answers["second"], 409, text="nexo-be 2026.02.1 is already registered with digest sha256:bbbb")
    assert Release.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_build_that_waited_behind_a_request_made_while_it_registered_goes_once_develop_is_free(
    environments, redis_connection, rita
):
    """A registration writes its release before it takes the chain's lock; a promotion requested in
    between, while it waited for that lock, keeps develop busy. The build waits, and goes once that
    promotion is cancelled: it counts as registered after the request, in the chain's order."""
    service = make_service("nexo-be", team="backend-team")
    older = make_release(service, "2026.02.1")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    requested = {}

    def request_the_older_one():
        requested["promotion"] = transitions.request_promotion(older, environments["develop"], rita)

    with _ChainHeld(plain) as chain:
        chain._start(request_the_older_one)
        assert _backends_waiting(1) == 1
        chain.register("newer")
        assert _backends_waiting(1, with_a_release_written=True) == 1
        assert _backends_waiting(2) == 2
    answer = chain.answers["newer"].json()
    assert answer["promotion"] is None
    assert answer["promotion_waits"].startswith("nexo-be 2026.02.1 → develop is already approved")

    transitions.cancel(Promotion.objects.get(pk=requested["promotion"].pk), rita)

    newer = Release.objects.get(version=answer["version"])
    assert newer.registered_at > requested["promotion"].requested_at
    assert list(newer.promotions.values_list("environment__name", "state")) == [("develop", "approved")]


@pytest.mark.django_db(transaction=True)
def test_a_registration_that_deadlocks_with_the_gitops_import_takes_the_next_build_number(
    environments, redis_connection
):
    """The GitOps history import holds the chain's lock while it creates the releases it finds: one
    with the build number a registration has written (and waits for the chain with) is a deadlock,
    which PostgreSQL ends by aborting the registration. It is tried again, and takes the next one."""
    service = make_service("nexo-be")
    today = timezone.localdate()
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["register"], all_services=True)
    imported = {}
    with _ChainHeld(plain) as chain:
        chain.register("build")
        assert _backends_waiting(1, with_a_release_written=True) == 1
        # As import_gitops_history does, in the transaction holding the chain's lock.
        chain.while_held(
            lambda: imported.update(
                release=make_release(service, f"{today.year}.{today.month:02d}.1", commit_sha="", is_imported=True)
            )
        )
    assert chain.answers["build"].status_code == 201, chain.answers["build"].content
    assert chain.answers["build"].json()["version"] == f"{today.year}.{today.month:02d}.2"
    assert imported["release"].pk is not None
    assert Release.objects.count() == 2


def test_the_same_version_with_another_digest_is_a_conflict(world):
    client = token_client("register")
    client.post("/api/v1/releases/", build(version="2026.02.1"), format="json")
    response = client.post(
        "/api/v1/releases/", build(version="2026.02.1", image_digest="sha256:" + "d" * 64), format="json"
    )
    assert_error(response, 409, text="nexo-be 2026.02.1 is already registered with digest sha256:bbbb")


def test_the_same_build_under_another_version_is_a_conflict(world):
    client = token_client("register")
    client.post("/api/v1/releases/", build(version="2026.02.1"), format="json")
    response = client.post("/api/v1/releases/", build(version="2026.02.2"), format="json")
    assert_error(response, 409, text="is already registered as nexo-be 2026.02.1; it cannot also be 2026.02.2")


@pytest.mark.parametrize(
    ("overrides", "field", "registered"),
    [
        ({"hotfix": True}, "hotfix", "registered with hotfix false"),
        ({"changelog": "- fix: the other one"}, "changelog", 'registered with changelog "- feat: rate limiting"'),
        (
            {"committed_at": "2026-02-03T12:00:00+01:00"},
            "committed_at",
            "registered with committed_at 2026-02-03T10:00:00Z",
        ),
    ],
)
def test_a_retry_with_other_details_is_a_conflict_naming_what_is_registered(world, overrides, field, registered):
    """A build's details are what CI said of it the first time; a retry that says otherwise would be answered
    200 with the old values, and the caller would believe the new ones were kept."""
    client = token_client("register")
    first = client.post("/api/v1/releases/", build(changelog="- feat: rate limiting"), format="json").json()

    response = client.post(
        "/api/v1/releases/", build(**{"changelog": "- feat: rate limiting", **overrides}), format="json"
    )

    assert_error(
        response,
        409,
        field,
        text=f"This build (commit a3f2b1c, digest sha256:bbbbbbbbbbbb…) is nexo-be {first['version']}, {registered}; "
        "a build's details are fixed once registered: register a new build to change them.",
    )
    release = Release.objects.get()
    assert (release.is_hotfix, release.changelog) == (False, "- feat: rate limiting")


def test_a_retry_with_several_other_details_names_each_of_them(world):
    client = token_client("register")
    client.post("/api/v1/releases/", build(version="2026.02.1"), format="json")
    fixing = client.post(
        "/api/v1/releases/",
        build(commit_sha=hex_for("fix"), image_digest="sha256:" + "c" * 64, hotfix=True, fixes="2026.02.1"),
        format="json",
    ).json()

    response = client.post(
        "/api/v1/releases/",
        build(commit_sha=hex_for("fix"), image_digest="sha256:" + "c" * 64, changelog="- fix: login"),
        format="json",
    )

    body = assert_error(
        response,
        409,
        text=f'is nexo-be {fixing["version"]}, registered with changelog "", hotfix true and fixes 2026.02.1;',
    )
    assert [error["field"] for error in body["errors"]] == [None]


def test_a_retry_the_same_time_with_another_offset_is_the_same_build(world):
    client = token_client("register")
    client.post("/api/v1/releases/", build(), format="json")

    again = client.post("/api/v1/releases/", build(committed_at="2026-02-03T11:00:00+01:00"), format="json")

    assert again.status_code == 200, again.content


@pytest.mark.parametrize(
    ("overrides", "status", "field", "text"),
    [
        # 400: what was sent does not match the schema.
        ({"version": "2026.13.1"}, 400, "version", "the month must be 01 to 12"),
        ({"version": "v2026.02.1"}, 400, "version", "not a CalVer version"),
        ({"commit_sha": "a3f2b1c"}, 400, "commit_sha", "full 40-character"),
        ({"commit_sha": "z" * 40}, 400, "commit_sha", "full 40-character"),
        ({"image_digest": "sha256:abc"}, 400, "image_digest", "64 lowercase hex"),
        ({"image_digest": "b" * 64}, 400, "image_digest", "64 lowercase hex"),
        ({"committed_at": "yesterday"}, 400, "committed_at", "Datetime has wrong format"),
        ({"committed_at": "1969-12-31T23:00:00Z"}, 400, "committed_at", "before Git existed"),
        ({"committed_at": "1970-01-01T00:00:00Z"}, 400, "committed_at", "1970-01-01 is a time of 0"),
        ({"committed_at": "2005-04-06T23:59:59Z"}, 400, "committed_at", "before Git existed"),
        ({"committed_at": "2026-12-07T23:00:00"}, 400, "committed_at", "has no UTC offset"),
        ({"committed_at": "2026-12-07"}, 400, "committed_at", "git show -s --format=%cI"),
        ({"committed_at": "3000-01-01T00:00:00Z"}, 400, "committed_at", "between 1970-01-01 and 2999-12-31"),
        # 404: it names something that does not exist.
        ({"service": "nexo-nope"}, 404, "service", "Unknown service 'nexo-nope'"),
        ({"hotfix": True, "fixes": "2026.01.1"}, 404, "fixes", "nexo-be has no release 2026.01.1"),
        # 409: a rule refuses the values.
        ({"version": "9999.12.1"}, 409, "version", "after this month"),
        ({"version": "2026.02.101"}, 409, "version", "at most 100 above it"),
        ({"fixes": "2026.01.1"}, 409, "fixes", "set hotfix to true"),
        ({"committed_at": "2030-01-01T00:00:00Z"}, 409, "committed_at", "after the portal's clock"),
    ],
)
def test_register_validation_errors_name_the_field_and_what_to_fix(world, overrides, status, field, text):
    response = token_client("register").post("/api/v1/releases/", build(**overrides), format="json")
    assert_error(response, status, field, text)
    assert not Release.objects.exists()


def test_a_commit_time_without_its_offset_says_to_send_it(world):
    """Read as UTC, a local time from CI east or west of Greenwich put the start of lead time hours off."""
    response = token_client("register").post(
        "/api/v1/releases/", build(committed_at="2026-02-03T11:00:00"), format="json"
    )
    assert_error(
        response,
        400,
        "committed_at",
        text="committed_at: 2026-02-03T11:00:00 has no UTC offset, so it could be any time over a day: send the "
        "commit's time as Git records it, with its offset (git show -s --format=%cI HEAD), e.g. "
        "2026-02-03T11:00:00+01:00, or in UTC with Z.",
    )


def test_a_commit_dated_before_git_existed_says_why(world):
    """1970-01-01 (a time of 0) made DORA report a lead time of 57 years, without a warning."""
    response = token_client("register").post(
        "/api/v1/releases/", build(committed_at="1970-01-01T00:00:00Z"), format="json"
    )
    assert_error(
        response,
        400,
        "committed_at",
        text="committed_at: A commit dated 1970-01-01 is before Git existed (its first commit was made on "
        "2005-04-07): the time is a default or a clock gone wrong (1970-01-01 is a time of 0), and lead time would "
        "count from it. Give the commit's time as Git records it (git show -s --format=%cI HEAD).",
    )
    assert not Release.objects.exists()


@pytest.mark.parametrize(
    "committed_at",
    [
        "2005-04-07T00:00:00Z",
        "2005-04-06T23:59:59Z",
        "2005-04-07T01:00:00+02:00",
        "2005-04-06T23:00:00-02:00",
        "2004-12-31T12:00:00Z",
        "2010-06-01T10:00:00-07:00",
        "2026-02-03T10:00:00+0100",
        "2026-02-03T10:00:00",
        "2026-02-03T10:00:00.5z",
        "1999-02-03T10:00:00Z",
        "3000-02-03T10:00:00Z",
    ],
)
def test_the_schema_describes_the_commit_times_the_api_accepts(world, committed_at):
    """A request the schema accepts is never a 400 (nexo_portal.lib.api): the pattern says what a commit time is."""
    schema = APIClient()
    schema.force_login(world["rita"])
    pattern = schema.get("/api/v1/schema/?format=json").json()["components"]["schemas"]["RegisterBuildRequest"][
        "properties"
    ]["committed_at"]["pattern"]

    response = token_client("register").post("/api/v1/releases/", build(committed_at=committed_at), format="json")

    assert (re.search(pattern, committed_at) is not None) == (response.status_code != 400), response.content


def test_a_commit_dated_in_the_future_is_refused_saying_what_to_send(world):
    """A local time sent as UTC, or a machine clock running fast: DORA would later leave the release out
    of lead time without a word (its commit after its deployment). The registration is where to say so."""
    with time_machine.travel(datetime(2026, 2, 3, 10, 0, tzinfo=UTC), tick=False):
        response = token_client("register").post(
            "/api/v1/releases/", build(committed_at="2026-02-03T11:00:00Z"), format="json"
        )
    assert_error(
        response,
        409,
        "committed_at",
        text="committed_at 2026-02-03T11:00:00Z is after the portal's clock (2026-02-03T10:00:00Z) by more than the "
        "5 minutes clocks may differ: a build comes from a commit made before it. Send the commit's time as Git "
        "records it, with its offset (git show -s --format=%cI HEAD); a local time sent as UTC, or a clock running "
        "fast where the commit was made, gives such a date.",
    )
    assert not Release.objects.exists()


def test_a_commit_dated_a_little_ahead_is_clock_skew_and_registers(world):
    with time_machine.travel(datetime(2026, 2, 3, 10, 0, tzinfo=UTC), tick=False):
        response = token_client("register").post(
            "/api/v1/releases/", build(committed_at="2026-02-03T10:04:59Z"), format="json"
        )
    assert response.status_code == 201, response.content


def test_a_malformed_field_is_a_400_even_beside_an_unknown_name(world):
    response = token_client("register").post(
        "/api/v1/releases/", build(service="nexo-nope", commit_sha="a3f2b1c"), format="json"
    )
    body = assert_error(response, 400, "commit_sha")
    assert {error["field"] for error in body["errors"]} == {"service", "commit_sha"}


def test_an_explicit_build_may_run_a_little_ahead_of_the_month(world):
    client = token_client("register")
    assert client.post("/api/v1/releases/", build(version="2026.02.100"), format="json").status_code == 201
    response = client.post("/api/v1/releases/", build(version="2026.02.201", commit_sha=hex_for("far")), format="json")
    assert_error(response, 409, "version", "the highest build of nexo-be in 2026.02 is 100")


def test_a_month_whose_build_numbers_are_used_up_is_a_conflict_not_a_500(world):
    from releases.models import BuildCounter

    today = timezone.localdate()
    BuildCounter.objects.create(service=world["service"], year=today.year, month=today.month, last_build=999_999)
    response = token_client("register").post("/api/v1/releases/", build(), format="json")
    assert_error(response, 409, text="has used every build number")
    assert not Release.objects.exists()


def test_missing_fields_are_all_listed(world):
    body = assert_error(token_client("register").post("/api/v1/releases/", {}, format="json"), 400)
    assert {error["field"] for error in body["errors"]} == {"service", "commit_sha", "committed_at", "image_digest"}


def test_register_needs_a_token_with_the_register_scope(world):
    assert_error(
        APIClient().post("/api/v1/releases/", build(), format="json"), 401, text="credentials were not provided"
    )
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer nexo_not-a-real-token")
    assert_error(bad.post("/api/v1/releases/", build(), format="json"), 401)
    assert_error(
        token_client("read").post("/api/v1/releases/", build(), format="json"), 403, text="lacks the 'register' scope"
    )


def test_a_token_made_for_other_services_may_not_register_this_one(world):
    client = token_client("register", services=[world["other"]])
    assert_error(client.post("/api/v1/releases/", build(), format="json"), 403, text="not on nexo-be")
    assert not Release.objects.exists()


def test_a_token_whose_services_were_all_deleted_registers_no_service(world):
    # A CI token made for a misspelt service, which was then deleted: it must not become a token for every service.
    typo = make_service("nexo-bee", team="backend-team")
    client = token_client("register", services=[typo])
    assert_error(client.post("/api/v1/releases/", build(), format="json"), 403, text="not on nexo-be")
    typo.delete()
    assert_error(client.post("/api/v1/releases/", build(), format="json"), 403, text="no longer exist")
    assert not Release.objects.exists()


def test_a_token_for_all_services_registers_a_service_added_after_it(world):
    client = token_client("register")
    make_service("nexo-new", team="backend-team")
    assert client.post("/api/v1/releases/", build(service="nexo-new"), format="json").status_code == 201


def test_people_register_builds_only_of_services_their_team_owns(world):
    frank = make_user("frank", groups=["frontend-team"])
    body = assert_error(
        session_client(frank).post("/api/v1/releases/", build(), format="json"),
        403,
        text="Only members of backend-team",
    )
    assert "API token" in body["message"]
    assert not Release.objects.exists()
    assert session_client(world["rita"]).post("/api/v1/releases/", build(), format="json").status_code == 201


def test_a_personal_token_registers_as_its_person(world):
    client = token_client("register", user=world["sam"])
    assert_error(client.post("/api/v1/releases/", build(), format="json"), 403, text="Only members of backend-team")
    assert not Release.objects.exists()


# --- reading releases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "1969-12-31T00:00:00Z"])
def test_date_time_filters_outside_the_calendar_the_portal_keeps_are_a_400(world, moment):
    response = session_client(world["rita"]).get("/api/v1/releases/", {"registered_after": moment})
    assert_error(response, 400, "registered_after", "Give a date between 1970-01-01 and 2999-12-31.")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"hotfix": "maybe"}, "hotfix"),
        ({"registered_after": "1969-12-31T00:00:00Z"}, "registered_after"),
        ({"registered_before": "2026-02-30T00:00:00Z"}, "registered_before"),
    ],
)
def test_a_filter_refused_by_the_strict_form_says_its_code(world, query, field):
    body = assert_error(session_client(world["rita"]).get("/api/v1/releases/", query), 400, field)
    assert body["code"] == "invalid"
    assert [error["code"] for error in body["errors"]] == ["invalid"]


def test_list_filters_by_service_environment_and_date_and_paginates(world):
    for n in range(1, 4):
        make_release(world["service"], f"2026.02.{n}")
    make_release(world["other"], "2026.02.1")
    deployed = Release.objects.get(service=world["service"], version="2026.02.2")
    Deployment.objects.create(
        service=world["service"], environment=world["env"]["qa"], release=deployed, deployed_at=timezone.now()
    )
    client = token_client("read")
    assert client.get("/api/v1/releases/").json()["count"] == 4
    assert [
        r["version"]
        for r in client.get("/api/v1/releases/", {"service": "nexo-be", "ordering": "version"}).json()["results"]
    ] == [
        "2026.02.1",
        "2026.02.2",
        "2026.02.3",
    ]
    assert [r["version"] for r in client.get("/api/v1/releases/", {"environment": "qa"}).json()["results"]] == [
        "2026.02.2"
    ]
    page = client.get("/api/v1/releases/", {"page_size": 2}).json()
    assert (page["count"], len(page["results"]), page["next"] is not None) == (4, 2, True)
    assert client.get("/api/v1/releases/", {"registered_after": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    # An offset PostgreSQL cannot store is still a valid instant.
    assert client.get("/api/v1/releases/", {"registered_after": "2000-01-01T00:00:00-23:54"}).json()["count"] == 4
    assert_error(client.get("/api/v1/releases/", {"registered_after": "soon"}), 400, "registered_after")


@pytest.mark.parametrize(
    ("path", "query", "text"),
    [
        ("/api/v1/releases/", {"service": "nexo-backend"}, "There is no service called “nexo-backend”."),
        ("/api/v1/releases/", {"environment": "prod"}, "There is no environment called “prod”."),
        ("/api/v1/promotions/", {"service": "nexo-backend"}, "There is no service called “nexo-backend”."),
        ("/api/v1/promotions/", {"environment": "prod"}, "There is no environment called “prod”."),
        # A % in the name is text, not a format (schemathesis found it answering 500).
        ("/api/v1/promotions/", {"service": "ȾįøN%Ø"}, "There is no service called “ȾįøN%Ø”."),
        ("/api/v1/releases/", {"environment": "prod%s%(value)s"}, "There is no environment called “prod%s%(value)s”."),
    ],
)
def test_a_list_filtered_by_a_name_that_does_not_exist_is_a_404_naming_it(world, path, query, text):
    [field] = query
    body = assert_error(token_client("read").get(path, query), 404, field, text)
    assert body["code"] == "does_not_exist"


def test_releases_ordered_by_version_follow_calver_not_text(world):
    for version in ["2026.02.9", "2026.02.10", "2026.10.1", "2026.09.2", "2025.12.11"]:
        make_release(world["service"], version)
    client = token_client("read")

    def versions(ordering):
        answer = client.get("/api/v1/releases/", {"service": "nexo-be", "ordering": ordering})
        return [release["version"] for release in answer.json()["results"]]

    assert versions("version") == ["2025.12.11", "2026.02.9", "2026.02.10", "2026.09.2", "2026.10.1"]
    assert versions("-version") == ["2026.10.1", "2026.09.2", "2026.02.10", "2026.02.9", "2025.12.11"]


@pytest.mark.parametrize(
    ("path", "ordering", "offered"),
    [
        ("/api/v1/releases/", "created", "registered_at, committed_at, version"),
        ("/api/v1/releases/", "-version,service__team__name", "registered_at, committed_at, version"),
        ("/api/v1/releases/", "version, committed_at", "registered_at, committed_at, version"),
        ("/api/v1/promotions/", "--requested_at", "requested_at, finished_at"),
        ("/api/v1/promotions/", "state", "requested_at, finished_at"),
    ],
)
def test_an_ordering_the_list_does_not_offer_is_a_400_naming_those_it_does(world, path, ordering, offered):
    body = assert_error(token_client("read").get(path, {"ordering": ordering}), 400, "ordering", offered)
    assert body["code"] == "invalid"


def test_the_schema_says_which_orderings_a_list_offers(world):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    [ordering] = [p for p in schema["paths"]["/api/v1/promotions/"]["get"]["parameters"] if p["name"] == "ordering"]
    assert ordering["schema"]["pattern"] == "^-?(requested_at|finished_at)(,-?(requested_at|finished_at))*$"
    assert "requested_at, finished_at" in ordering["description"]


def test_release_detail_shows_its_promotions(world):
    release = make_release(world["service"], "2026.02.1")
    transitions.request_promotion(release, world["env"]["develop"], world["rita"])
    body = token_client("read").get("/api/v1/services/nexo-be/releases/2026.02.1/").json()
    assert body["version"] == "2026.02.1"
    assert [(p["environment"], p["state"]) for p in body["promotions"]] == [("develop", "approved")]
    assert_error(token_client("read").get("/api/v1/services/nexo-be/releases/2026.09.9/"), 404)


# --- promotions ---------------------------------------------------------------------------------------------


def verified_through(release, *names, environments):
    for name in names:
        promotion = Promotion.objects.create(
            release=release, environment=environments[name], state=PromotionState.VERIFIED, finished_at=timezone.now()
        )
        Deployment.objects.current().filter(service=release.service, environment=environments[name]).update(
            replaced_at=timezone.now()
        )
        Deployment.objects.create(
            service=release.service,
            environment=environments[name],
            release=release,
            promotion=promotion,
            deployed_at=timezone.now(),
        )


def test_request_approve_and_reject_through_the_api(world):
    release = make_release(world["service"], "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=world["env"])
    response = session_client(world["rita"]).post(
        "/api/v1/promotions/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "production"},
        format="json",
    )
    assert response.status_code == 201, response.content
    promotion = response.json()
    assert (promotion["state"], promotion["approvals_required"], promotion["requested_by"]) == (
        "awaiting_approval",
        2,
        "rita",
    )

    url = f"/api/v1/promotions/{promotion['id']}/"
    assert_error(
        session_client(world["rita"]).post(url + "approve/", {}, format="json"),
        403,
        text="You requested this promotion",
    )
    first = session_client(world["sam"]).post(url + "approve/", {"comment": "ok"}, format="json").json()
    assert [(a["user"], a["decision"]) for a in first["approvals"]] == [("sam", "approve")]
    assert_error(session_client(world["sam"]).post(url + "approve/", {}, format="json"), 409, text="already decided")
    lead = session_client(world["lead"])
    assert_error(lead.post(url + "reject/", {"comment": ""}, format="json"), 400, "comment", "may not be blank")
    assert_error(lead.post(url + "reject/", {"comment": "  "}, format="json"), 409, "comment", "Say why")
    rejected = (
        session_client(world["lead"])
        .post(url + "reject/", {"comment": "not during the incident"}, format="json")
        .json()
    )
    assert rejected["state"] == "rejected"


def test_a_ci_token_never_approves_but_a_personal_token_does(world):
    release = make_release(world["service"], "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    url = f"/api/v1/promotions/{promotion.pk}/approve/"
    assert_error(token_client("promote").post(url, {}, format="json"), 403, text="API tokens of CI never approve")
    personal = token_client("promote", user=world["sam"], name="sam-laptop")
    assert personal.post(url, {}, format="json").json()["approvals"][0]["user"] == "sam"


def test_a_decision_through_a_token_says_in_the_audit_which_token_and_who_made_it(world, django_user_model):
    """A superuser may create a personal token for someone else: the audit of what it decided names the
    token and its creator, so that approvals given through tokens one person made stand out."""
    from audit.models import AuditAction, AuditEvent

    root = django_user_model.objects.create_superuser("root", "root@nexo.invalid", "pw")
    release = make_release(world["service"], "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    token, plain = ApiToken.objects.issue(
        name="sam-script", scopes=["promote"], user=world["sam"], created_by=root, all_services=True
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")

    assert client.post(f"/api/v1/promotions/{promotion.pk}/approve/", {}, format="json").status_code == 200

    approved = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_APPROVED)
    assert approved.actor == "sam"
    assert approved.data["via"] == {
        "via": "the API with personal token sam-script, created by root",
        "token": token.prefix,
        "token_created_by": "root",
    }
    assert "approved by sam (1/2) in the API with personal token sam-script, created by root" in approved.message
    session = session_client(world["lead"]).post(f"/api/v1/promotions/{promotion.pk}/approve/", {}, format="json")
    assert session.status_code == 200
    by_session = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_APPROVED, actor="lead")
    assert "via" not in by_session.data, "a session is the portal itself"


def test_a_token_made_for_someone_else_does_not_decide_for_its_maker(world, django_user_model):
    """A superuser's request approved through a personal token she made for sam counts as hers; and
    one who approved may not approve again through a token made for someone else."""
    root = django_user_model.objects.create_superuser("root", "root@nexo.invalid", "pw")
    release = make_release(world["service"], "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], root)
    _, for_sam = ApiToken.objects.issue(
        name="sam-by-root", scopes=["promote"], user=world["sam"], created_by=root, all_services=True
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {for_sam}")

    refused = client.post(f"/api/v1/promotions/{promotion.pk}/approve/", {}, format="json")

    assert_error(refused, 403, text="created by the person who requested this promotion")
    assert promotion.approvals.count() == 0

    newer = make_release(world["service"], "2026.02.2")
    verified_through(newer, "develop", "qa", "staging", environments=world["env"])
    other = transitions.request_promotion(newer, world["env"]["production"], world["rita"])
    transitions.approve(other, world["lead"])
    world["lead"].is_superuser = True  # who may make personal tokens for others
    world["lead"].save()
    _, for_sam_by_lead = ApiToken.objects.issue(
        name="sam-by-lead", scopes=["promote"], user=world["sam"], created_by=world["lead"], all_services=True
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {for_sam_by_lead}")
    again = client.post(f"/api/v1/promotions/{other.pk}/approve/", {}, format="json")
    assert_error(again, 403, text="created by someone who has already decided")


def test_request_validation_and_rules(world):
    client = session_client(world["rita"])
    make_release(world["service"], "2026.02.1")
    assert_error(
        client.post(
            "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.1", "environment": "prod"}, format="json"
        ),
        404,
        "environment",
        "Unknown environment 'prod'. Environments are: develop, qa, staging, production.",
    )
    assert_error(
        client.post(
            "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.9", "environment": "qa"}, format="json"
        ),
        404,
        "version",
        "nexo-be has no release 2026.02.9",
    )
    assert_error(
        client.post(
            "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.1", "environment": "qa"}, format="json"
        ),
        409,
        text="has not been verified in develop",
    )
    outsider = session_client(make_user("outsider"))
    assert_error(
        outsider.post(
            "/api/v1/promotions/",
            {"service": "nexo-be", "version": "2026.02.1", "environment": "develop"},
            format="json",
        ),
        403,
        text="Only members of backend-team",
    )
    assert not Promotion.objects.exists()


def test_a_promote_token_requests_and_cancels_its_own_promotion(world):
    make_release(world["service"], "2026.02.1")
    client = token_client("promote", services=[world["service"]])
    promotion = client.post(
        "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.1", "environment": "develop"}, format="json"
    ).json()
    assert promotion["requested_by"] == f"api-token:{client.token.name}"
    assert (
        client.post(f"/api/v1/promotions/{promotion['id']}/cancel/", {}, format="json").json()["state"] == "cancelled"
    )


def test_rollback_through_the_api_goes_to_the_last_verified_release(world):
    old, new = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    verified_through(old, "develop", environments=world["env"])
    verified_through(new, "develop", environments=world["env"])
    Promotion.objects.filter(release=new).update(deployed_at=timezone.now())
    response = session_client(world["rita"]).post(
        "/api/v1/rollbacks/", {"service": "nexo-be", "environment": "develop"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert (response.json()["version"], response.json()["kind"]) == ("2026.02.1", "rollback")


def test_a_rollback_pinned_to_what_ran_is_refused_once_another_release_runs(world):
    old, new, hotfix = (make_release(world["service"], version) for version in ("2026.02.1", "2026.02.2", "2026.02.3"))
    for release in (old, new):
        verified_through(release, "develop", environments=world["env"])
        Promotion.objects.filter(release=release).update(deployed_at=timezone.now())
    client = session_client(world["rita"])
    seen = {"service": "nexo-be", "environment": "develop", "version": "2026.02.1", "running": "2026.02.2"}
    verified_through(hotfix, "develop", environments=world["env"])  # went out after the caller looked
    Promotion.objects.filter(release=hotfix).update(deployed_at=timezone.now())

    refused = client.post("/api/v1/rollbacks/", seen, format="json")

    assert refused.status_code == 409, refused.content
    assert refused.json()["message"] == (
        "develop now runs nexo-be 2026.02.3, not 2026.02.2 as the rollback you confirmed said; nothing was "
        "requested. Look again at what runs there, and roll back 2026.02.3 if that is what you mean."
    )
    assert not Promotion.objects.filter(kind="rollback").exists()
    pinned = client.post("/api/v1/rollbacks/", seen | {"running": "2026.02.3"}, format="json")
    assert pinned.status_code == 201, pinned.content
    assert Promotion.objects.get(kind="rollback").rolls_back.release == hotfix


def test_promotion_list_and_detail_with_step_timestamps(world):
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    client = token_client("read")
    listed = client.get("/api/v1/promotions/", {"service": "nexo-be", "state": "approved"}).json()
    assert [p["id"] for p in listed["results"]] == [promotion.pk]
    assert client.get("/api/v1/promotions/", {"state": "verified"}).json()["count"] == 0
    detail = client.get(f"/api/v1/promotions/{promotion.pk}/").json()
    for step in ("requested_at", "approved_at", "commit_started_at", "committed_at", "deployed_at", "finished_at"):
        assert step in detail
    assert detail["approved_at"] is not None
    assert detail["committed_at"] is None


def test_a_promotion_held_by_a_freeze_says_until_when_and_why(world):
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    client = token_client("read")
    assert client.get(f"/api/v1/promotions/{promotion.pk}/").json()["held_by_freeze"] is None
    freeze = ChangeFreeze.objects.create(
        environment=world["env"]["develop"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(hours=2),
        reason="Year-end freeze",
    )

    detail = client.get(f"/api/v1/promotions/{promotion.pk}/").json()
    listed = client.get("/api/v1/promotions/", {"state": "approved"}).json()["results"]
    expected = {"ends_at": freeze.ends_at.isoformat().replace("+00:00", "Z"), "reason": "Year-end freeze"}
    assert detail["state"] == "approved"
    assert detail["held_by_freeze"] == expected
    assert [p["held_by_freeze"] for p in listed] == [expected]


def syncing(world):
    """nexo-be 2026.02.1 committed to develop, its sync step taken by a worker."""
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    promotion = transitions.mark_committed(
        transitions.start_commit(promotion), "c" * 40, "promote(nexo-be): develop → 2026.02.1"
    )
    promotion = transitions.mark_syncing(promotion, configured=True)
    steps.claim(StepRun.objects.get(promotion=promotion, step=Step.SYNC).pk)
    return promotion


def syncing_while_argo_cd_is_away(world):
    """A promotion syncing in develop whose sync step waits for Argo CD, out of reach, and says so on its
    run as jobs.sync_promotion does."""
    promotion = syncing(world)
    waits = "Argo CD unreachable since 21:19:23 (connection refused); asking again until 21:29:23"
    steps.note_trouble(promotion.pk, Step.SYNC, waits)
    return promotion, waits


def test_a_sync_waiting_for_argo_cd_out_of_reach_says_so_as_its_page_does(world, viewer):
    """sync_status says only "running", for up to ARGOCD_SYNC_TIMEOUT_SECONDS: held_up says why it does
    not move, in the words of the promotion page."""
    promotion, waits = syncing_while_argo_cd_is_away(world)
    client = token_client("read")

    detail = client.get(f"/api/v1/promotions/{promotion.pk}/").json()
    listed = client.get("/api/v1/promotions/", {"state": "syncing"}).json()["results"]

    assert (detail["sync_status"], detail["held_up"]) == ("running", [waits])
    assert [p["held_up"] for p in listed] == [[waits]]
    page = Client()
    page.force_login(viewer)
    assert waits in page.get(f"/promotions/{promotion.pk}/").content.decode()


def test_a_promotion_nothing_holds_up_says_so_with_an_empty_list(world):
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    assert token_client("read").get(f"/api/v1/promotions/{promotion.pk}/").json()["held_up"] == []


def test_the_promotion_list_reads_the_step_runs_once_however_many_promotions_it_shows(world):
    syncing_while_argo_cd_is_away(world)
    client = token_client("read")
    client.get("/api/v1/promotions/")  # the token's first use is written down once
    with CaptureQueriesContext(connection) as one:
        client.get("/api/v1/promotions/")
    for version in ("2026.02.2", "2026.02.3"):
        Promotion.objects.create(
            release=make_release(world["service"], version),
            environment=world["env"]["qa"],
            state=PromotionState.VERIFIED,
            finished_at=timezone.now(),
        )
    with CaptureQueriesContext(connection) as three:
        assert client.get("/api/v1/promotions/").json()["count"] == 3
    assert len(three) == len(one)


def test_a_sync_that_came_up_degraded_says_so_and_that_it_was_applied(world):
    """Argo CD applied its commit and the release came up Degraded: its manifests run there, which
    "failed at sync" alone does not tell a pipeline deciding whether to clean up."""
    promotion = syncing(world)
    transitions.fail(promotion, "sync", "nexo-be-develop is Degraded", applied_health="Degraded")
    client = token_client("read")

    detail = client.get(f"/api/v1/promotions/{promotion.pk}/").json()
    listed = client.get("/api/v1/promotions/", {"state": "failed"}).json()["results"]

    assert (detail["failed_step"], detail["applied_health"]) == ("sync", "Degraded")
    assert [p["applied_health"] for p in listed] == ["Degraded"]


def test_a_promotion_argo_cd_never_applied_has_no_applied_health(world):
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    assert token_client("read").get(f"/api/v1/promotions/{promotion.pk}/").json()["applied_health"] == ""


# --- booleans ----------------------------------------------------------------------------------------------------

# Every boolean a request body holds: (path, field, the rest of a body that would be accepted).
BOOLEANS = {
    "RegisterBuildRequest": ("/api/v1/releases/", "hotfix", build()),
    "RequestPromotionRequest": (
        "/api/v1/promotions/",
        "emergency",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "develop", "reason": "INC-1"},
    ),
    "CheckResultRequest": (
        "/api/v1/verifications/",
        "passed",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "e2e"},
    ),
}


@pytest.mark.parametrize("value", ["yes", "false", "true", "on", 1, 0, None])
@pytest.mark.parametrize("request_body", sorted(BOOLEANS))
def test_a_boolean_is_json_true_or_false_not_text_or_a_number(world, request_body, value):
    """DRF's BooleanField takes "yes", "false", 1 and 0: `"passed": "false"` read as false only by luck, and a
    schema that says boolean was not what the API took."""
    make_release(world["service"], "2026.02.1")
    path, field, body = BOOLEANS[request_body]

    response = token_client("register", "promote", "report").post(path, {**body, field: value}, format="json")

    assert_error(response, 400, field, text=f"{field}: Give true or false, a JSON boolean: not text nor a number.")
    assert (Release.objects.count(), Promotion.objects.count(), CheckResult.objects.count()) == (1, 0, 0)


def test_a_form_encoded_boolean_is_one_of_the_words_forms_use(world):
    """A form's fields are all text: there a boolean is a word (true as OpenAPI encodes it, on as a browser
    does, True as Python's requests does), and only those."""
    make_release(world["service"], "2026.02.1")
    client = token_client("report")
    body = {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "e2e"}

    for word in ("false", "true", "on", "True", "0"):
        assert client.post("/api/v1/verifications/", {**body, "passed": word}).status_code == 201
    assert_error(client.post("/api/v1/verifications/", {**body, "passed": "nope"}), 400, "passed", "Give true or false")
    assert list(CheckResult.objects.order_by("id").values_list("passed", flat=True)) == [False, True, True, True, False]


def test_every_boolean_a_request_body_holds_is_tested_here(world):
    schema = APIClient()
    schema.force_login(world["rita"])
    components = schema.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    booleans = {
        (name, field)
        for name, component in components.items()
        if name.endswith("Request")
        for field, property in component.get("properties", {}).items()
        if property.get("type") == "boolean"
    }
    assert booleans == {(name, field) for name, (_, field, _) in BOOLEANS.items()}


# --- verification results from CI ----------------------------------------------------------------------------


def test_ci_reports_a_verification_result(world):
    make_release(world["service"], "2026.02.1")
    client = token_client("report")
    response = client.post(
        "/api/v1/verifications/",
        {
            "service": "nexo-be",
            "version": "2026.02.1",
            "environment": "qa",
            "check": "e2e",
            "passed": False,
            "url": "https://ci.example/runs/7",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    result = CheckResult.objects.get()
    assert (result.name, result.passed, result.reported_by) == ("e2e", False, f"api-token:{client.token.name}")
    assert_error(token_client("read").post("/api/v1/verifications/", {}, format="json"), 403, text="'report' scope")
    assert_error(
        client.post(
            "/api/v1/verifications/",
            {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "e 2 e", "passed": True},
            format="json",
        ),
        400,
        "check",
    )


@pytest.mark.parametrize(
    ("check", "stored", "error"),
    [
        ("E2E", "e2e", None),  # as the environments require it
        ("Performance", "performance", None),
        ("e2e_suite", None, "Use lowercase letters, digits and hyphens only"),
        ("-e2e", None, "Use lowercase letters, digits and hyphens only"),
        ("e" * 51, None, "no more than 50 characters"),
    ],
)
def test_a_check_is_named_as_the_environments_require_it(world, check, stored, error):
    make_release(world["service"], "2026.02.1")
    response = token_client("report").post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": check, "passed": True},
        format="json",
    )
    if error:
        assert_error(response, 400, "check", text=error)
        assert not CheckResult.objects.exists()
    else:
        assert response.status_code == 201, response.content
        assert response.json()["check"] == stored
        assert CheckResult.objects.get().name == stored


@pytest.mark.parametrize("check", ["e2e-test", "vibes"])
def test_a_check_no_environment_requires_is_refused_naming_those_they_do(world, check):
    """A CI typo kept quietly counts nowhere, and qa's soak later fails for want of the real name."""
    make_release(world["service"], "2026.02.1")
    response = token_client("report").post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": check, "passed": True},
        format="json",
    )
    assert_error(
        response,
        409,
        "check",
        text=f"No environment requires a check called “{check}”, so its result would count nowhere. The checks "
        "required are e2e, performance, security (qa: e2e, performance, security). Report one of them, or add "
        "the check to an environment's required checks (admin → Environments) before CI reports it.",
    )
    assert not CheckResult.objects.exists()


def test_a_check_another_environment_requires_may_be_reported_anywhere(world):
    """CI that runs qa's E2E suite in staging too may say so: the result is kept, and counts where required."""
    make_release(world["service"], "2026.02.1")
    response = token_client("report").post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "staging", "check": "e2e", "passed": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert CheckResult.objects.get().environment.name == "staging"


def test_with_no_check_required_anywhere_a_result_is_refused_saying_so(world):
    Environment.objects.update(required_checks=[])
    make_release(world["service"], "2026.02.1")
    response = token_client("report").post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "e2e", "passed": True},
        format="json",
    )
    assert_error(response, 409, "check", text="No environment requires any check, so its result would count nowhere.")


def test_the_domain_refuses_a_check_no_environment_requires(world):
    release = make_release(world["service"], "2026.02.1")
    with pytest.raises(Refused, match="No environment requires a check called “vibes”") as refused:
        registration.report_check_result(release, world["env"]["qa"], name="vibes", passed=True, actor=world["rita"])
    assert refused.value.field == "check"


def test_people_outside_the_owning_team_may_not_overturn_a_ci_result(world):
    make_release(world["service"], "2026.02.1")
    token_client("report").post(
        "/api/v1/verifications/",
        {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "security", "passed": False},
        format="json",
    )
    frank = make_user("frank", groups=["frontend-team"])
    overturn = {"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "check": "security", "passed": True}
    assert_error(
        session_client(frank).post("/api/v1/verifications/", overturn, format="json"),
        403,
        text="Only members of backend-team",
    )
    assert list(CheckResult.objects.values_list("passed", flat=True)) == [False]
    assert_error(
        token_client("report", services=[world["other"]]).post("/api/v1/verifications/", overturn, format="json"),
        403,
        text="not on nexo-be",
    )
    assert list(CheckResult.objects.values_list("passed", flat=True)) == [False]


# --- one error shape everywhere ----------------------------------------------------------------------------------


def test_unknown_api_paths_answer_json_404(world):
    assert_error(APIClient().get("/api/v1/nothing-here/"), 404, text="No API endpoint at /api/v1/nothing-here/")


def test_wrong_method_has_the_same_error_shape(world):
    assert_error(token_client("read").delete("/api/v1/releases/"), 405)


def test_token_calls_are_throttled(world, settings):
    settings.API_TOKEN_THROTTLE_RATE = "3/minute"
    from django.core.cache import cache

    cache.clear()
    client = token_client("read")
    answers = [client.get("/api/v1/releases/").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert_error(client.get("/api/v1/releases/"), 429, text="throttled")


def test_the_schema_and_docs_are_served(world):
    client = session_client(world["rita"])
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/releases/" in spec["paths"]
    assert "apiToken" in spec["components"]["securitySchemes"]
    assert client.get("/api/v1/docs/").status_code == 200
    assert b"cdn" not in client.get("/api/v1/docs/").content.lower()


def test_the_schema_links_a_build_and_a_promotion_to_what_may_come_next(world):
    spec = token_client("read").get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    registered = spec["paths"]["/api/v1/releases/"]["post"]["responses"]["201"]["links"]
    assert registered["PromoteRelease"] == {
        "operationId": "promotions_create",
        "requestBody": {"service": "$response.body#/service", "version": "$response.body#/version"},
    }
    requested = spec["paths"]["/api/v1/promotions/"]["post"]["responses"]["201"]["links"]
    assert set(requested) == {"GetPromotion", "ApprovePromotion", "RejectPromotion", "CancelPromotion"}
    assert requested["CancelPromotion"]["parameters"] == {"id": "$response.body#/id"}
    operation_ids = {operation["operationId"] for path in spec["paths"].values() for operation in path.values()}
    for path in spec["paths"].values():
        for operation in path.values():
            for response in operation["responses"].values():
                assert {link["operationId"] for link in response.get("links", {}).values()} <= operation_ids


@pytest.mark.parametrize("path", ["/api/v1/schema/", "/api/v1/docs/", "/api/v1/redoc/"])
def test_the_schema_and_docs_need_a_session_or_a_token(world, path):
    assert APIClient().get(path).status_code in (401, 403)
    assert token_client("read").get(path).status_code == 200


@pytest.mark.parametrize("sent", ["2026-02-03T12:00:00+02:00", "2026-02-02T10:06:00-23:54"])
def test_datetime_fields_round_trip_in_utc(world, sent):
    response = token_client("register").post("/api/v1/releases/", build(committed_at=sent), format="json")
    assert response.status_code == 201, response.content
    assert Release.objects.get().committed_at == datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    assert response.json()["committed_at"].startswith("2026-02-03T10:00:00")


# --- the version matrix and the audit log ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "text"),
    [
        ({"service": "nexo-backend"}, "service", "Unknown service 'nexo-backend'"),
        ({"team": "backend"}, "team", "No team owns a service under the name 'backend'"),
        ({"team": "sre-team"}, "team", "No team owns a service under the name 'sre-team'"),
    ],
)
def test_the_matrix_of_a_service_or_team_that_does_not_exist_is_a_404_naming_it(world, query, field, text):
    body = assert_error(token_client("read").get("/api/v1/matrix/", query), 404, field, text)
    assert body["code"] == "does_not_exist"


def test_the_matrix_of_a_team_is_its_services(world):
    rows = token_client("read").get("/api/v1/matrix/", {"team": "backend-team"}).json()
    assert [row["service"] for row in rows] == ["nexo-be"]


def test_matrix_shows_every_service_and_environment_with_drift(world, settings):
    settings.ARGOCD_URL, settings.ARGOCD_TOKEN = "https://argocd.nexo.example", "token"
    releases = [make_release(world["service"], f"2026.02.{n}") for n in range(1, 25)]
    verified_through(releases[-1], "develop", environments=world["env"])
    verified_through(releases[0], "qa", environments=world["env"])
    promotion = transitions.request_promotion(releases[0], world["env"]["staging"], world["rita"])
    Deployment.objects.filter(release=releases[-1]).update(health="Healthy")

    body = token_client("read").get("/api/v1/matrix/").json()
    assert [row["service"] for row in body] == ["nexo-be", "nexo-fe"]
    cells = {cell["environment"]: cell for cell in body[0]["environments"]}
    assert list(cells) == ["develop", "qa", "staging", "production"]
    assert (cells["develop"]["version"], cells["develop"]["health"], cells["develop"]["verification"]) == (
        "2026.02.24",
        "Healthy",
        "verified",
    )
    assert (cells["qa"]["version"], cells["qa"]["builds_behind"], cells["qa"]["drift_warning"]) == (
        "2026.02.1",
        23,
        True,
    )
    assert cells["staging"]["version"] is None
    assert (cells["staging"]["waiting"], cells["staging"]["waiting_promotion"]) == (
        "awaiting approval 0/1",
        promotion.pk,
    )
    assert token_client("read").get("/api/v1/matrix/", {"team": "frontend-team"}).json()[0]["service"] == "nexo-fe"
    assert cells["production"]["image_requirements"] == []
    world["env"]["production"].requires_image_check = world["env"]["production"].requires_signature = True
    world["env"]["production"].save()
    production = token_client("read").get("/api/v1/matrix/").json()[0]["environments"][3]
    assert production["image_requirements"] == [
        "digest and tags checked in the registry",
        "a Cosign signature by the service's key",
    ]
    settings.ARGOCD_URL = ""
    assert token_client("read").get("/api/v1/matrix/").json()[0]["environments"][0]["health"] == "not configured"


def test_audit_log_is_paginated_filtered_and_exported_in_the_reference_shape(world):
    release = make_release(world["service"], "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"])
    transitions.approve(promotion, world["lead"])
    client = token_client("read")

    listed = client.get("/api/v1/audit/", {"service": "nexo-be", "action": "promotion.approved"}).json()
    assert listed["count"] == 2
    assert [event["actor"] for event in listed["results"]] == ["lead", "sam"]  # newest first
    assert_error(
        client.get("/api/v1/audit/", {"since": "2026-03-01", "until": "2026-02-01"}), 409, "until", "before the start"
    )
    assert_error(client.get("/api/v1/audit/", {"until": "9999-12-31"}), 400, "until", "Give a date between")
    assert_error(client.get("/api/v1/audit/", {"service": "nexo-nope"}), 404, "service", "names no service “nexo-nope”")

    export = client.get("/api/v1/audit/export/", {"action": "promotion.approved", "per": "step"})
    records = json.loads(b"".join(export.streaming_content))
    assert [record["event"] for record in records] == ["promotion.approved", "promotion.approved"]
    last = records[-1]
    assert {
        "event",
        "service",
        "version",
        "from_environment",
        "to_environment",
        "timestamp",
        "initiator",
        "approvers",
        "rollback",
    } <= set(last)
    assert (last["service"], last["version"], last["from_environment"], last["to_environment"]) == (
        "nexo-be",
        "2026.02.1",
        "staging",
        "production",
    )
    assert (last["initiator"], last["approvers"], last["rollback"]) == ("rita", ["sam", "lead"], False)
    assert last["timestamp"].endswith("Z")
