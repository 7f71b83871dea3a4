"""A CI check that fails after the verdict: the newest result of a check counts, so the release's
verification where it ran no longer holds, and it may not go on from there until it passes again."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from nexo_portal.models import ApiToken
from releases import registration, transitions
from releases.board import build_board
from releases.models import Promotion
from releases.policy import PromotionError
from tests.factories import make_release, make_service
from tests.history import action_link, cell_html, ran

pytestmark = pytest.mark.django_db

CVE = "https://ci.example/nexo-auth/runs/88"
REFUSAL = (
    "nexo-auth 2026.12.3 was verified in qa, then security failed there (CVE-2026-1234 critical, "
    f"{CVE}): it may not go on to staging. Fix it and register a new build, or have CI report a passing "
    "rerun of security in qa."
)


@pytest.fixture
def world(environments, redis_connection, rita, paulo, viewer):
    service = make_service("nexo-auth", team="backend-team")
    earlier, release = make_release(service, "2026.12.2"), make_release(service, "2026.12.3")
    for name in ("develop", "qa", "staging"):
        ran(earlier, environments[name], at=timezone.now() - timedelta(days=1))
    for name in ("develop", "qa"):
        ran(release, environments[name])
    return {"service": service, "release": release, "env": environments, "rita": rita, "paulo": paulo}


def api(*scopes):
    name = f"ci-{'-'.join(scopes)}-{ApiToken.objects.count() + 1}"
    _, plain = ApiToken.objects.issue(name=name, scopes=scopes, all_services=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


def report(check, passed, summary="", url="", environment="qa"):
    response = api("report").post(
        "/api/v1/verifications/",
        {
            "service": "nexo-auth",
            "version": "2026.12.3",
            "environment": environment,
            "check": check,
            "passed": passed,
            "summary": summary,
            "url": url,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response


def request_staging():
    return api("promote").post(
        "/api/v1/promotions/",
        {"service": "nexo-auth", "version": "2026.12.3", "environment": "staging"},
        format="json",
    )


def test_a_check_failing_after_the_verdict_keeps_the_release_from_going_on(world):
    report("security", False, "CVE-2026-1234 critical", CVE)

    response = request_staging()

    assert response.status_code == 409, response.content
    assert response.json()["message"] == REFUSAL
    with pytest.raises(PromotionError) as refused:
        transitions.request_promotion(world["release"], world["env"]["staging"], world["rita"])
    assert str(refused.value) == REFUSAL
    assert not Promotion.objects.filter(environment=world["env"]["staging"], release=world["release"]).exists()


def test_a_passing_rerun_lets_it_go_on_again(world):
    report("security", False, "CVE-2026-1234 critical", CVE)
    report("security", True, "CVE-2026-1234 fixed upstream: false positive")

    response = request_staging()

    assert response.status_code == 201, response.content


def test_a_failing_check_qa_does_not_require_leaves_its_verification_standing(world):
    """CI that runs staging's security scan in qa too may say so: it counts in staging, not against qa's verdict."""
    world["env"]["qa"].required_checks = ["e2e", "performance"]
    world["env"]["qa"].save()
    world["env"]["staging"].required_checks = ["security"]
    world["env"]["staging"].save()
    report("security", False, "CVE-2026-1234 critical", CVE)

    assert request_staging().status_code == 201


def test_the_board_and_the_matrix_say_the_verification_no_longer_holds(client, world):
    report("security", False, "CVE-2026-1234 critical", CVE)
    client.force_login(world["rita"])

    page = client.get("/")
    qa, staging = cell_html(page, "nexo-auth", "qa"), cell_html(page, "nexo-auth", "staging")
    board = build_board(world["rita"])
    cells = {cell.environment.name: cell for cell in board.rows[0].cells}
    matrix = api("read").get("/api/v1/matrix/").json()[0]["environments"]

    assert cells["qa"].verification.label == "verified, then security failed"
    assert cells["qa"].verification.tone == "bad"
    assert "CVE-2026-1234 critical" in qa
    assert [cell["verification"] for cell in matrix][:2] == ["verified", "verified, then security failed"]
    offered = next(action for action in cells["staging"].actions if action.kind == "request")
    assert (offered.label, offered.allowed, offered.why_not) == ("Promote 2026.12.3", False, REFUSAL)
    assert 'data-action="request"' in staging
    assert 'class="button small primary"' not in (action_link(staging, "request") or "")
    confirmation = client.get("/services/nexo-auth/environments/staging/promote/2026.12.3/").content.decode()
    assert "You cannot do this:" in confirmation
    assert "then security failed there (CVE-2026-1234 critical" in confirmation


def test_the_audit_log_says_which_verification_a_failing_result_overturns_and_when_it_holds_again(world):
    verified = Promotion.objects.get(release=world["release"], environment=world["env"]["qa"])
    release, qa = world["release"], world["env"]["qa"]
    registration.report_check_result(
        release, qa, name="security", passed=False, summary="CVE-2026-1234 critical", url=CVE, actor=world["rita"]
    )
    registration.report_check_result(release, qa, name="security", passed=True, actor=world["rita"])

    failed, passed = AuditEvent.objects.filter(action=AuditAction.CHECK_REPORTED).order_by("id")

    assert failed.message == (
        f"security failed for nexo-auth 2026.12.3 in qa (CVE-2026-1234 critical, {CVE}); the verification of promotion "
        f"#{verified.pk} no longer holds: 2026.12.3 may not go on from qa until security passes again"
    )
    assert failed.data["overturns_verification"] == verified.pk
    assert passed.message == (
        f"security passed for nexo-auth 2026.12.3 in qa; the verification of promotion #{verified.pk} holds again"
    )
    assert passed.data["restores_verification"] == verified.pk
