"""Who may do what, checked through every entry point: the domain functions, the API, the admin
and the HTML views of the board.

Roles: a member of the service's owning team (rita), the staging approver (paulo, platform-team),
an SRE and a platform lead (production approvers), someone from another team, a superuser and a
CI token with every scope (the API only: tokens cannot sign in to pages or the admin).
"""

import threading
from datetime import timedelta

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from nexo_portal.models import ApiToken
from nexo_portal.tokens import TokenPrincipal
from releases import policy, transitions
from releases.models import Approval, Deployment, Promotion, PromotionState, Step, StepRun
from releases.policy import PromotionError
from tests.factories import make_release, make_service, make_user

ROLES = ["team_member", "staging_approver", "sre", "platform_lead", "outsider", "superuser", "ci_token"]
ACTIONS = ["request", "approve", "reject", "cancel", "rollback", "break_glass"]
ENVIRONMENTS = ["develop", "qa", "staging", "production"]
APPROVERS = {"staging": {"staging_approver"}, "production": {"sre", "platform_lead"}}


def expected(role, action, environment):
    """The policy, written out plainly: True when the role may do the action there."""
    approvers = APPROVERS.get(environment, set())
    may_request = role in {"team_member", "superuser", "ci_token"} | approvers
    if action in ("request", "rollback"):
        return may_request
    if action == "break_glass":
        return environment == "production" and may_request and role != "ci_token"
    if action in ("approve", "reject"):
        return role in approvers
    if action == "cancel":  # the team member requested it
        return role in {"team_member", "superuser"} | approvers
    raise AssertionError(action)


def applicable(action, environment):
    # develop and qa take no approvals, so there is nothing to approve, reject or cancel there.
    return not (action in ("approve", "reject", "cancel") and environment in ("develop", "qa"))


CASES = [
    pytest.param(role, action, environment, id=f"{role}-{action}-{environment}")
    for role in ROLES
    for action in ACTIONS
    for environment in ENVIRONMENTS
    if applicable(action, environment)
]


@pytest.fixture
def world(environments, redis_connection, rita, paulo, sam, lead):
    service = make_service("nexo-be", team="backend-team")
    people = {
        "team_member": rita,
        "staging_approver": paulo,
        "sre": sam,
        "platform_lead": lead,
        "outsider": make_user("otto", groups=["frontend-team"]),
        "superuser": make_user("root", is_superuser=True),
    }
    # A second staging approver, so that a rollback paulo requests could be approved by someone
    # (a rollback nobody else could approve is refused whoever asks: tests/test_rollback_policy.py).
    make_user("pia", groups=["platform-team"])
    # Everyone is staff with view rights, so in the admin only the promotion policy refuses.
    view = Permission.objects.filter(codename__in=["view_promotion", "view_release", "view_deployment"])
    for user in people.values():
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        user.user_permissions.add(*view)
    token, plain = ApiToken.objects.issue(
        name="ci", scopes=["register", "promote", "report", "read"], all_services=True
    )
    return {"service": service, "env": environments, "people": people, "token": token, "plain": plain}


def verified(release, environment):
    now = timezone.now()
    Deployment.objects.current().filter(service=release.service, environment=environment).update(replaced_at=now)
    promotion = Promotion.objects.create(
        release=release, environment=environment, state=PromotionState.VERIFIED, deployed_at=now, finished_at=now
    )
    Deployment.objects.create(
        service=release.service, environment=environment, release=release, promotion=promotion, deployed_at=now
    )
    return promotion


def arrange(world, action, environment_name):
    """The state each action needs, so that only the actor decides the outcome."""
    env = world["env"]
    environment = env[environment_name]
    names = ENVIRONMENTS[: ENVIRONMENTS.index(environment_name)]
    old, new = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    for name in names:
        verified(old, env[name])
        verified(new, env[name])
    if action == "rollback":
        verified(old, environment)
        verified(new, environment)
    if action in ("approve", "reject", "cancel"):
        return {"promotion": transitions.request_promotion(new, environment, world["people"]["team_member"])}
    if action == "break_glass":
        return {"release": make_release(world["service"], "2026.02.3", is_hotfix=True), "environment": environment}
    return {"release": new, "environment": environment}


def assert_outcome(allowed, done, role, action, environment):
    assert done == allowed, f"{role} {action} in {environment}: expected {'allowed' if allowed else 'refused'}"


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "environment"), CASES)
def test_domain_functions(world, role, action, environment):
    setup = arrange(world, action, environment)
    actor = TokenPrincipal(world["token"]) if role == "ci_token" else world["people"][role]
    calls = {
        "request": lambda: transitions.request_promotion(setup["release"], setup["environment"], actor),
        "rollback": lambda: transitions.request_rollback(world["service"], setup["environment"], actor),
        "break_glass": lambda: transitions.request_promotion(
            setup["release"], setup["environment"], actor, is_emergency=True, reason="INC-42: logins failing"
        ),
        "approve": lambda: transitions.approve(setup["promotion"], actor, "ok"),
        "reject": lambda: transitions.reject(setup["promotion"], actor, "not now"),
        "cancel": lambda: transitions.cancel(setup["promotion"], actor),
    }
    refusal = None
    try:
        calls[action]()
    except PromotionError as error:
        refusal = error
    done = refusal is None
    assert done or str(refusal), "every refusal says why"
    assert_outcome(expected(role, action, environment), done, role, action, environment)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "environment"), CASES)
def test_api(world, role, action, environment):
    setup = arrange(world, action, environment)
    client = APIClient()
    if role == "ci_token":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {world['plain']}")
    else:
        client.force_login(world["people"][role])
    if action in ("request", "break_glass"):
        body = {"service": "nexo-be", "version": setup["release"].version, "environment": environment}
        if action == "break_glass":
            body |= {"emergency": True, "reason": "INC-42: logins failing"}
        response = client.post("/api/v1/promotions/", body, format="json")
    elif action == "rollback":
        response = client.post("/api/v1/rollbacks/", {"service": "nexo-be", "environment": environment}, format="json")
    else:
        response = client.post(
            f"/api/v1/promotions/{setup['promotion'].pk}/{action}/", {"comment": "because"}, format="json"
        )
    allowed = expected(role, action, environment)
    assert_outcome(allowed, response.status_code in (200, 201), role, action, environment)
    if not allowed:
        assert response.status_code in (403, 409), response.content
        assert response.json()["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "environment"), [case for case in CASES if case.values[0] != "ci_token"])
def test_admin_actions(world, client, role, action, environment):
    setup = arrange(world, action, environment)
    client.force_login(world["people"][role])
    if action in ("request", "break_glass"):
        url = reverse("admin:releases_release_changelist")
        data = {
            "action": "request_promotion",
            "_selected_action": [setup["release"].pk],
            "apply": "1",
            "environment": setup["environment"].pk,
        }
        if action == "break_glass":
            data |= {"emergency": "on", "reason": "INC-42: logins failing"}
    elif action == "rollback":
        url = reverse("admin:releases_deployment_changelist")
        current = Deployment.objects.current().get(service=world["service"], environment=setup["environment"])
        data = {"action": "roll_back", "_selected_action": [current.pk], "apply": "1"}
    else:
        url = reverse("admin:releases_promotion_changelist")
        data = {"action": action, "_selected_action": [setup["promotion"].pk], "apply": "1", "comment": "because"}
    before = (
        Promotion.objects.count(),
        Approval.objects.count(),
        Promotion.objects.filter(state=PromotionState.CANCELLED).count(),
    )
    response = client.post(url, data, follow=True)
    assert response.status_code == 200
    after = (
        Promotion.objects.count(),
        Approval.objects.count(),
        Promotion.objects.filter(state=PromotionState.CANCELLED).count(),
    )
    shown = [str(message) for message in response.context["messages"]]
    assert_outcome(expected(role, action, environment), after != before, role, action, environment)
    assert shown, "the admin says what happened"


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "environment"), [case for case in CASES if case.values[0] != "ci_token"])
def test_html_views(world, client, role, action, environment):
    setup = arrange(world, action, environment)
    client.force_login(world["people"][role])
    if action in ("request", "break_glass"):
        url = reverse("releases:request", args=["nexo-be", environment, setup["release"].version])
        data = {"emergency": "on", "reason": "INC-42: logins failing"} if action == "break_glass" else {}
    elif action == "rollback":
        url = reverse("releases:rollback", args=["nexo-be", environment])
        data = {"release": "2026.02.1", "running": "2026.02.2"}
    else:
        url = reverse(f"releases:{action}", args=[setup["promotion"].pk])
        data = {"comment": "because"}
        if action == "approve":
            data["expected"] = policy.approvals_standing(setup["promotion"])  # what its confirmation shows
    before = (
        Promotion.objects.count(),
        Approval.objects.count(),
        Promotion.objects.filter(state=PromotionState.CANCELLED).count(),
    )
    response = client.post(url, data, follow=True)
    after = (
        Promotion.objects.count(),
        Approval.objects.count(),
        Promotion.objects.filter(state=PromotionState.CANCELLED).count(),
    )
    assert_outcome(expected(role, action, environment), after != before, role, action, environment)
    shown = [str(message) for message in response.context["messages"]] if response.context else []
    assert shown or response.status_code == 400, "the page says what happened"


@pytest.mark.django_db
def test_a_refusal_says_exactly_why(world):
    promotion = arrange(world, "approve", "production")["promotion"]
    with pytest.raises(
        PromotionError,
        match="You requested this promotion; another approver from platform-leads or sre-team must approve it",
    ):
        transitions.approve(promotion, world["people"]["team_member"])
    with pytest.raises(
        PromotionError, match="Only members of platform-leads or sre-team may approve promotions into production"
    ):
        transitions.approve(promotion, world["people"]["superuser"])
    with pytest.raises(PromotionError, match="API tokens of CI never approve promotions"):
        transitions.approve(promotion, TokenPrincipal(world["token"]))


@pytest.mark.django_db
def test_break_glass_still_needs_approvals_skips_verification_and_is_flagged(world):
    release = make_release(world["service"], "2026.02.9", is_hotfix=True)
    promotion = transitions.request_promotion(
        release, world["env"]["production"], world["people"]["sre"], is_emergency=True, reason="INC-42: logins failing"
    )
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert promotion.is_emergency
    assert promotion.emergency_reason == "INC-42: logins failing"
    with pytest.raises(PromotionError, match="needs a reason"):
        transitions.request_promotion(
            release, world["env"]["production"], world["people"]["sre"], is_emergency=True, reason=" "
        )
    api = APIClient()
    api.force_login(world["people"]["platform_lead"])
    assert api.get(f"/api/v1/promotions/{promotion.pk}/").json()["is_emergency"] is True
    production = [
        cell for cell in api.get("/api/v1/matrix/").json()[0]["environments"] if cell["environment"] == "production"
    ]
    assert production[0]["waiting_is_emergency"] is True
    for page in ("/", promotion.get_absolute_url(), release.get_absolute_url()):
        assert b'<span class="badge emergency">break-glass</span>' in api.get(page).content, page


@pytest.mark.django_db
def test_break_glass_passes_a_freeze_but_an_ordinary_request_does_not(world):
    from environments.models import ChangeFreeze

    release = make_release(world["service"], "2026.02.9")
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Black Friday",
    )
    with pytest.raises(PromotionError, match="frozen"):
        transitions.request_promotion(release, world["env"]["production"], world["people"]["sre"])
    assert transitions.request_promotion(
        release, world["env"]["production"], world["people"]["sre"], is_emergency=True, reason="INC-7"
    ).is_emergency


@pytest.mark.django_db(transaction=True)
def test_two_approvers_clicking_at_once_start_the_pipeline_exactly_once(environments, redis_connection, rita):
    service = make_service("nexo-be", team="backend-team")
    release = make_release(service, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        verified(release, environments[name])
    promotion = transitions.request_promotion(release, environments["production"], rita)
    approvers = [make_user(f"sre{n}", groups=["sre-team"]) for n in range(3)]
    start, errors = threading.Barrier(3), []

    def approve(user):
        try:
            start.wait()
            transitions.approve(promotion, user)
        except PromotionError as refusal:
            errors.append(str(refusal))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED
    assert promotion.approvals.count() == 2
    assert len(errors) == 1
    assert "only a promotion awaiting approval can be approved" in errors[0]
    [commit] = StepRun.objects.filter(promotion=promotion)
    assert commit.step == Step.COMMIT
    assert django_rq.get_queue("default").job_ids == [commit.rq_job_id]
