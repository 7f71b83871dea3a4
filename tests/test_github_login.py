"""GitHub sign-in end to end: the Django test client drives the portal, the portal talks
HTTP to the GitHub test server (tests/servers/github.py), and the test plays the browser
between the two."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from social_django.models import UserSocialAuth

from nexo_portal.models import Session
from tests.factories import make_user
from tests.servers.github import GITHUB_ORGANIZATION as ORG

pytestmark = pytest.mark.django_db

BEGIN_URL = reverse("social:begin", args=["github-org"])


def begin(client):
    """Press "Sign in with GitHub": the portal answers with GitHub's authorize URL."""
    response = client.post(BEGIN_URL)
    assert response.status_code == 302
    return response["Location"]


def authorize(authorize_url):
    """The browser visits GitHub, which sends it back to the portal's callback."""
    response = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    return response.headers["Location"]


def sign_in_with_github(client):
    return client.get(authorize(begin(client)))


def messages_after(client, response):
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    page = client.get(response["Location"])
    return [str(message) for message in page.context["messages"]]


@pytest.fixture
def octocat(github_server):
    account = github_server.add_account(
        "octocat",
        name="Mona Octocat",
        emails=[
            {"email": "mona@old.example", "primary": False, "verified": True, "visibility": None},
            {"email": "mona@nexo.example", "primary": True, "verified": True, "visibility": "private"},
        ],
        organizations=[ORG],
    )
    github_server.browser_login = "octocat"
    return account


def test_organization_member_signs_in_end_to_end(client, github_server, octocat, settings):
    settings.GITHUB_TEAM_GROUPS = {"sre": "sre-team"}
    github_server.add_team(ORG, "sre", members=["octocat"])

    authorize_url = begin(client)
    assert authorize_url.startswith(f"{github_server.url}/login/oauth/authorize?")
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["client_id"] == [github_server.client_id]
    assert query["redirect_uri"] == ["http://testserver/accounts/complete/github-org/"]
    assert set(query["scope"][0].split(",")) == {"read:org", "user:email"}
    state = query["state"][0]

    callback = authorize(authorize_url)
    callback_query = parse_qs(urlsplit(callback).query)
    assert callback.startswith("http://testserver/accounts/complete/github-org/?")
    assert callback_query["state"] == [state]
    assert callback_query["code"]

    response = client.get(callback)
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = get_user(client)
    assert user.is_authenticated
    assert user.username == "octocat"
    assert (user.email, user.first_name, user.last_name) == ("mona@nexo.example", "Mona", "Octocat")
    assert [group.name for group in user.groups.all()] == ["sre-team"]
    assert github_server.requests == [
        ("GET", "/login/oauth/authorize"),
        ("POST", "/login/oauth/access_token"),
        ("GET", "/api/v3/user"),
        ("GET", "/api/v3/user/emails"),
        ("GET", f"/api/v3/orgs/{ORG}/members/octocat"),
        ("GET", "/api/v3/user/teams"),
    ]
    assert client.get("/").status_code == 200


def test_github_access_token_is_not_kept_in_the_database(client, github_server, octocat):
    sign_in_with_github(client)
    social = UserSocialAuth.objects.get(provider="github-org")
    assert social.uid == str(octocat.id)
    assert "access_token" not in social.extra_data


def test_renamed_github_account_signs_in_to_the_same_portal_account(client, github_server, octocat):
    sign_in_with_github(client)
    first = get_user(client)
    client.logout()
    github_server.accounts["octocat-renamed"] = github_server.accounts.pop("octocat")
    octocat.login = "octocat-renamed"
    github_server.add_member(ORG, "octocat-renamed")
    github_server.browser_login = "octocat-renamed"
    sign_in_with_github(client)
    assert get_user(client).pk == first.pk
    assert User.objects.count() == 1


def test_github_login_equal_to_a_local_user_name_never_takes_that_account(client, github_server, octocat):
    local = make_user("octocat", is_staff=True, is_superuser=True)
    sign_in_with_github(client)
    signed_in = get_user(client)
    assert signed_in.pk != local.pk
    assert signed_in.username.startswith("octocat")
    assert signed_in.username != "octocat"
    assert not signed_in.is_staff
    assert not signed_in.is_superuser


def test_non_member_is_refused_with_a_message(client, github_server):
    github_server.add_account("stranger", organizations=["some-other-org"])
    github_server.browser_login = "stranger"
    response = sign_in_with_github(client)
    assert messages_after(client, response) == [
        f"Your GitHub account is not a member of the {ORG} organization, so it cannot sign in here. "
        f"Ask an owner of {ORG} to add you, then sign in again."
    ]
    assert not get_user(client).is_authenticated
    assert not User.objects.exists()
    assert ("GET", f"/api/v3/orgs/{ORG}/members/stranger") in github_server.requests


def test_former_member_is_refused_and_their_account_stays_signed_out(client, github_server, octocat):
    sign_in_with_github(client)
    client.logout()
    github_server.remove_member(ORG, "octocat")
    response = sign_in_with_github(client)
    assert "is not a member of the nexo-org organization" in messages_after(client, response)[0]
    assert not get_user(client).is_authenticated


def test_callback_with_another_state_is_refused_before_any_token_exchange(client, github_server, octocat):
    callback = authorize(begin(client))
    forged = callback.replace("state=", "state=forged")
    response = client.get(forged)
    assert messages_after(client, response) == [
        "This GitHub sign-in does not belong to this browser session: it expired, was already used, "
        "or was started in another browser. Please sign in again."
    ]
    assert not get_user(client).is_authenticated
    assert ("POST", "/login/oauth/access_token") not in github_server.requests


def test_callback_in_another_browser_is_refused(client, github_server, octocat):
    callback = authorize(begin(client))
    other_browser = Client()
    response = other_browser.get(callback)
    assert "does not belong to this browser session" in messages_after(other_browser, response)[0]
    assert not get_user(other_browser).is_authenticated


def test_replayed_callback_is_refused(client, github_server, octocat):
    callback = authorize(begin(client))
    assert client.get(callback)["Location"] == "/"
    client.logout()
    response = client.get(callback)
    assert "does not belong to this browser session" in messages_after(client, response)[0]
    assert not get_user(client).is_authenticated


def test_denied_authorization_ends_on_the_login_page(client, github_server, octocat):
    github_server.denies_authorization = True
    response = sign_in_with_github(client)
    assert messages_after(client, response)[0].startswith("GitHub sign-in was cancelled")
    assert not get_user(client).is_authenticated


def test_code_github_does_not_accept_is_refused(client, github_server, octocat):
    callback = authorize(begin(client))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get(callback.replace(code, "0000000000aaaaaaaaaa"))
    assert messages_after(client, response) == [
        "GitHub did not accept the sign-in code (it expired or was already used). Please sign in again."
    ]
    assert not get_user(client).is_authenticated


def test_wrong_client_secret_is_reported_as_a_portal_problem(client, github_server, octocat, settings):
    settings.SOCIAL_AUTH_GITHUB_ORG_SECRET = "not-the-secret"
    response = sign_in_with_github(client)
    assert messages_after(client, response) == [
        "GitHub sign-in is not set up correctly on the portal. Please tell a platform engineer; "
        "the details are in the portal's log."
    ]
    assert not get_user(client).is_authenticated


def test_unreachable_github_is_reported_without_an_error_page(client, github_server, octocat, settings):
    callback = authorize(begin(client))
    settings.SOCIAL_AUTH_GITHUB_ORG_URL = "http://127.0.0.1:9"  # the discard port: nothing listens
    response = client.get(callback)
    assert messages_after(client, response) == [
        "GitHub could not be reached or is busy. Please try again in a few minutes."
    ]


def test_deactivated_portal_account_is_refused(client, github_server, octocat):
    sign_in_with_github(client)
    user = get_user(client)
    client.logout()
    User.objects.filter(pk=user.pk).update(is_active=False)
    response = sign_in_with_github(client)
    assert messages_after(client, response) == [
        "Your portal account is deactivated, so GitHub sign-in cannot let you in. Ask a platform "
        "engineer to re-activate it."
    ]
    assert not get_user(client).is_authenticated


# --- team -> group sync ----------------------------------------------------------------------


def group_names(user):
    return sorted(user.groups.values_list("name", flat=True))


def test_groups_follow_teams_at_every_sign_in_and_unmapped_groups_stay(client, github_server, octocat, settings):
    settings.GITHUB_TEAM_GROUPS = {"sre": "sre-team", "platform-leads": "platform-leads"}
    sre = github_server.add_team(ORG, "sre", members=["octocat"])
    leads = github_server.add_team(ORG, "platform-leads")
    github_server.add_team(ORG, "unmapped-team", members=["octocat"])

    sign_in_with_github(client)
    user = get_user(client)
    assert group_names(user) == ["sre-team"]
    user.groups.add(Group.objects.create(name="backend-team"))  # given by hand in the admin

    client.logout()
    sre.members.discard("octocat")
    leads.members.add("octocat")
    sign_in_with_github(client)
    assert group_names(user) == ["backend-team", "platform-leads"]

    client.logout()
    leads.members.discard("octocat")
    sign_in_with_github(client)
    assert group_names(user) == ["backend-team"]
    assert Group.objects.filter(name="sre-team").exists()


def test_a_sign_in_lasts_a_working_day_so_a_team_left_on_github_stops_counting(
    client, github_server, octocat, settings
):
    """Teams are read at sign-in: with Django's two-week sessions, someone taken out of the SRE team on
    GitHub kept approving production for up to two weeks. A sign-in now ends after SESSION_HOURS."""
    settings.GITHUB_TEAM_GROUPS = {"sre": "sre-team"}
    github_server.add_team(ORG, "sre", members=["octocat"])
    signed_in_at = timezone.now()
    sign_in_with_github(client)

    session = Session.objects.get(session_key=client.session.session_key)
    assert session.expire_date <= signed_in_at + timedelta(hours=12, minutes=1)
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))  # the day is over
    assert client.get("/").status_code == 302


def test_groups_a_sign_in_changes_are_in_the_audit_log(client, github_server, octocat, settings):
    from audit.models import AuditEvent

    settings.GITHUB_TEAM_GROUPS = {"sre": "sre-team"}
    sre = github_server.add_team(ORG, "sre")

    sign_in_with_github(client)  # in no mapped team: no group changes, none is recorded
    assert not AuditEvent.objects.exists()
    user = get_user(client)
    user.groups.add(Group.objects.create(name="backend-team"))  # given by hand in the admin

    client.logout()
    sre.members.add("octocat")
    sign_in_with_github(client)  # now approves production
    client.logout()
    sre.members.discard("octocat")
    sign_in_with_github(client)

    added, removed = AuditEvent.objects.order_by("id")
    assert (added.action, added.actor) == ("user.groups_synced", "system")
    assert added.data == {
        "model": "auth.User",
        "object": user.pk,
        "changes": {"groups": [["backend-team"], ["backend-team", "sre-team"]]},
    }
    assert user.get_username() in added.message
    assert "sre-team" in added.message
    assert removed.data["changes"] == {"groups": [["backend-team", "sre-team"], ["backend-team"]]}


def test_same_team_slug_in_another_organization_grants_nothing(client, github_server, octocat, settings):
    settings.GITHUB_TEAM_GROUPS = {"sre": "sre-team", "partner-org/auditors": "auditors"}
    github_server.add_member("partner-org", "octocat")
    github_server.add_team("partner-org", "sre", members=["octocat"])
    github_server.add_team("partner-org", "auditors", members=["octocat"])
    sign_in_with_github(client)
    assert group_names(get_user(client)) == ["auditors"]


def test_teams_are_read_from_every_page(client, github_server, octocat, settings):
    settings.GITHUB_TEAM_GROUPS = {"team-115": "release-managers"}
    for number in range(120):
        github_server.add_team(ORG, f"team-{number}", members=["octocat"])
    sign_in_with_github(client)
    assert group_names(get_user(client)) == ["release-managers"]
    assert github_server.requests.count(("GET", "/api/v3/user/teams")) == 2


def test_without_a_team_mapping_teams_are_not_read(client, github_server, octocat, settings):
    settings.GITHUB_TEAM_GROUPS = {}
    sign_in_with_github(client)
    assert get_user(client).is_authenticated
    assert ("GET", "/api/v3/user/teams") not in github_server.requests


# --- the test server itself speaks GitHub's formats ----------------------------------------------


def test_github_server_answers_bad_credentials_like_github(github_server):
    for headers, message in [
        ({}, "Requires authentication"),
        ({"Authorization": "token gho_unknown"}, "Bad credentials"),
    ]:
        response = requests.get(f"{github_server.api_url}user", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["message"] == message
        assert response.json()["status"] == "401"
        assert response.json()["documentation_url"].startswith("https://docs.github.com/")


def test_github_server_token_exchange_is_form_encoded_unless_json_is_asked_for(github_server):
    payload = {"client_id": github_server.client_id, "client_secret": github_server.client_secret, "code": "nope"}
    form = requests.post(f"{github_server.url}/login/oauth/access_token", data=payload, timeout=5)
    assert form.status_code == 200
    assert parse_qs(form.text)["error"] == ["bad_verification_code"]
    as_json = requests.post(
        f"{github_server.url}/login/oauth/access_token", data=payload, headers={"Accept": "application/json"}, timeout=5
    )
    assert as_json.json()["error_description"] == "The code passed is incorrect or expired."


def test_github_server_sends_non_members_asking_about_others_to_the_public_check(github_server):
    github_server.add_account("outsider")
    github_server.add_account("hubot", organizations=[ORG])
    token = github_server.issue_token("outsider", ["read:org"])
    response = requests.get(
        f"{github_server.api_url}orgs/{ORG}/members/hubot",
        headers={"Authorization": f"Bearer {token}"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{github_server.api_url}orgs/{ORG}/public_members/hubot"
