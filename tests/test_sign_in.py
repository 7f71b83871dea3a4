"""Local sign-in: break-glass staff only once GitHub sign-in is configured, anyone in the demo;
and no page is open to anonymous visitors unless it is on a short, deliberate list."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from rest_framework.views import APIView

from tests.factories import make_user

pytestmark = pytest.mark.django_db

LOGIN_URL = reverse("login")


@pytest.fixture
def github_configured(settings):
    settings.SOCIAL_AUTH_GITHUB_ORG_KEY = "Iv1.0123456789abcdef"
    settings.SOCIAL_AUTH_GITHUB_ORG_SECRET = "secret"
    settings.SOCIAL_AUTH_GITHUB_ORG_NAME = "nexo-org"


@pytest.fixture
def demo_mode(settings):
    settings.SOCIAL_AUTH_GITHUB_ORG_KEY = ""
    settings.SOCIAL_AUTH_GITHUB_ORG_NAME = ""


def sign_in(client, username, password="pw-for-tests-only"):
    return client.post(LOGIN_URL, {"username": username, "password": password})


def test_in_demo_mode_any_active_local_account_signs_in(client, demo_mode, rita):
    response = sign_in(client, "rita")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert get_user(client).username == "rita"


def test_with_github_configured_a_non_staff_account_is_told_to_use_github(client, github_configured, rita):
    response = sign_in(client, "rita")
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Please sign in with GitHub: local accounts are only for break-glass staff access "
        "while GitHub sign-in for the nexo-org organization is configured."
    ]
    assert "Please sign in with GitHub" in response.content.decode()
    assert not get_user(client).is_authenticated


def test_with_github_configured_a_staff_account_signs_in_locally(client, github_configured):
    make_user("admin", is_staff=True)
    response = sign_in(client, "admin")
    assert response.status_code == 302
    assert get_user(client).username == "admin"


def test_wrong_password_says_nothing_about_github_or_staff(client, github_configured, rita):
    response = sign_in(client, "rita", password="wrong")
    errors = " ".join(response.context["form"].non_field_errors())
    assert "correct username and password" in errors
    assert "GitHub" not in errors


def test_inactive_account_cannot_sign_in_locally(client, demo_mode):
    make_user("gone", is_active=False)
    sign_in(client, "gone")
    assert not get_user(client).is_authenticated


def test_login_page_offers_github_only_when_configured(client, settings, github_configured):
    content = client.get(LOGIN_URL).content.decode()
    assert reverse("social:begin", args=["github-org"]) in content
    assert "nexo-org" in content
    settings.SOCIAL_AUTH_GITHUB_ORG_KEY = ""
    content = client.get(LOGIN_URL).content.decode()
    assert reverse("social:begin", args=["github-org"]) not in content
    assert 'name="password"' in content


def test_github_button_keeps_where_the_person_was_going(client, github_configured):
    content = client.get(LOGIN_URL, {"next": "/promotions/7/"}).content.decode()
    assert f"{reverse('social:begin', args=['github-org'])}?next=/promotions/7/" in content


def test_begin_view_accepts_only_post(client, github_configured):
    assert client.get(reverse("social:begin", args=["github-org"])).status_code == 405


# Pages anyone may open. Adding one here is a decision: say who may use it and why.
OPEN_PAGES = {
    "health",  # load balancers
    "logout",  # POST only, CSRF-protected: after the session ended there is nothing left to end
    "metrics",  # Prometheus: its own bearer token (METRICS_TOKEN), 404 without one
    "login",
    "admin:login",
    "social:begin",  # POST only, CSRF-protected
    "social:complete",  # GitHub's redirect back, checked against the session's state
    "social:idp_launch",  # 404 unless a launch bridge is enabled (it is not)
    "social:app_launch",
    "api:not-found",  # a JSON 404 for unknown /api/ paths, so CI gets an error body, not a login page
}


def url_patterns(resolver=None, namespace=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from url_patterns(pattern, inner)
        else:
            yield f"{namespace}{pattern.name or pattern.pattern}", pattern.callback


def test_only_the_deliberate_pages_are_open_to_anonymous_visitors():
    open_pages = {
        name
        for name, view in url_patterns()
        if not getattr(view, "login_required", True) and not issubclass(getattr(view, "cls", object), APIView)
    }
    assert open_pages == OPEN_PAGES


def test_repeated_wrong_passwords_pause_sign_in_for_that_account_from_that_address(
    client, demo_mode, settings, rita, sam
):
    settings.AXES_FAILURE_LIMIT = 3
    assert [sign_in(client, "rita", password="guess").status_code for _ in range(2)] == [200, 200]
    locked = sign_in(client, "rita", password="guess")
    assert locked.status_code == 429
    assert "cannot sign in from here for 0:15:00" in locked.content.decode()
    # Even the right password now waits; another account from the same address does not.
    assert sign_in(client, "rita").status_code == 429
    assert not get_user(client).is_authenticated
    assert sign_in(client, "sam").status_code == 302


def test_a_success_clears_the_failures_before_it(client, demo_mode, settings, rita):
    settings.AXES_FAILURE_LIMIT = 3
    sign_in(client, "rita", password="guess")
    sign_in(client, "rita", password="guess")
    assert sign_in(client, "rita").status_code == 302
    client.logout()
    assert [sign_in(client, "rita", password="guess").status_code for _ in range(2)] == [200, 200]
    assert sign_in(client, "rita").status_code == 302


def test_behind_the_load_balancer_the_address_is_the_one_it_forwarded(rf, settings):
    from nexo_portal.auth import client_address

    request = rf.get("/", HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.9", REMOTE_ADDR="10.0.0.2")
    settings.SECURE_PROXY_SSL_HEADER = None
    assert client_address(request) == "10.0.0.2"  # not behind a proxy: the header is anyone's to forge
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client_address(request) == "203.0.113.9"  # the address the balancer appended


# --- guessing spread over many addresses: a delay per user name, not a lock -----------------------

NOON = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def spread_guessing(settings, redis_connection, demo_mode):
    """Three failures for one name from anywhere start the delay; it stays at most 4 s."""
    settings.SIGN_IN_USER_FAILURE_LIMIT = 3
    settings.SIGN_IN_USER_MAX_DELAY_SECONDS = 4


def from_address(number):
    return Client(REMOTE_ADDR=f"198.51.100.{number}")


def guess_from_many_addresses(username, count, first=1):
    return [sign_in(from_address(first + n), username, password="guess").status_code for n in range(count)]


def test_guessing_one_user_name_from_many_addresses_delays_its_sign_in(spread_guessing, rita, sam):
    with time_machine.travel(NOON, tick=False):
        assert guess_from_many_addresses("rita", 3) == [200, 200, 200]
        delayed = sign_in(from_address(99), "rita")  # the right password, from an address never seen
        assert delayed.status_code == 429
        assert delayed["Retry-After"] == "1"
        assert "try again in 1 second." in delayed.content.decode()
        assert not get_user(delayed.wsgi_request).is_authenticated
        assert sign_in(from_address(99), "sam").status_code == 302, "other people are not delayed"
        assert sign_in(from_address(98), "RITA", password="guess").status_code == 429, "case does not dodge it"


def test_the_delay_grows_stays_short_and_then_the_person_signs_in(spread_guessing, rita):
    with time_machine.travel(NOON, tick=False) as clock:
        guess_from_many_addresses("rita", 3)
        waits = []
        for attempt in range(4):
            waits.append(seconds_left("rita"))
            clock.shift(waits[-1])
            assert sign_in(from_address(60 + attempt), "rita", password="guess").status_code == 200
        assert waits == [1, 2, 4, 4]
        clock.shift(4)
        assert sign_in(from_address(99), "rita").status_code == 302


def seconds_left(username):
    from nexo_portal.sign_in_delay import seconds_to_wait

    return seconds_to_wait(username)


def test_attempts_made_while_delayed_are_neither_checked_nor_counted(spread_guessing, rita):
    with time_machine.travel(NOON, tick=False) as clock:
        guess_from_many_addresses("rita", 3)
        assert [sign_in(from_address(40 + n), "rita", password="guess").status_code for n in range(5)] == [429] * 5
        clock.shift(1)
        assert sign_in(from_address(49), "rita", password="guess").status_code == 200
        assert seconds_left("rita") == 2, "the fourth failure counted, not the nine attempts"


def test_a_browser_that_signed_in_as_the_person_before_is_never_delayed(spread_guessing, rita):
    browser = from_address(7)
    assert sign_in(browser, "rita").status_code == 302
    # Signing out as a person does (the test client's logout() would forget every cookie).
    browser.post("/accounts/logout/")
    with time_machine.travel(NOON, tick=False):
        guess_from_many_addresses("rita", 3, first=100)
        assert sign_in(from_address(8), "rita").status_code == 429
        assert sign_in(browser, "rita").status_code == 302
        browser.post("/accounts/logout/")
        # Its own typos do not slow it down either.
        assert sign_in(browser, "rita", password="typo").status_code == 200
        assert sign_in(browser, "rita").status_code == 302


def test_a_forged_device_cookie_is_no_exemption(spread_guessing, rita):
    from nexo_portal.sign_in_delay import DEVICE_COOKIE

    with time_machine.travel(NOON, tick=False):
        guess_from_many_addresses("rita", 3)
        forger = from_address(9)
        forger.cookies[DEVICE_COOKIE] = "not-signed-by-the-portal"
        assert sign_in(forger, "rita").status_code == 429


def test_the_admin_sign_in_is_delayed_too(spread_guessing):
    make_user("ops", is_staff=True, is_superuser=True)
    with time_machine.travel(NOON, tick=False):
        assert [
            from_address(n).post("/admin/login/", {"username": "ops", "password": "guess"}).status_code
            for n in range(3)
        ] == [200, 200, 200]
        response = from_address(9).post("/admin/login/", {"username": "ops", "password": "pw-for-tests-only"})
        assert response.status_code == 429


# --- a session that ended while a form was open --------------------------------------------------

NOT_DONE = "Your session had ended, so what you sent was not carried out: nothing was changed."


@pytest.fixture
def awaiting_sam(environments, rita, sam, redis_connection):
    from releases import transitions
    from tests.history import verified_up_to_staging

    history = verified_up_to_staging(environments)
    return transitions.request_promotion(history["release"], environments["production"], rita)


def approve_after_the_session_ended(promotion, person):
    """Sam opens the approve form, his session ends (SESSION_HOURS, or the admin deleted it), he sends it;
    with CSRF checked as in a browser: the CSRF cookie outlives the session."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(person)
    url = f"/promotions/{promotion.pk}/approve/"
    form = client.get(url)
    assert form.status_code == 200
    client.session.flush()
    sent = client.post(url, {"csrfmiddlewaretoken": form.context["csrf_token"], "comment": "ok", "next": "/"})
    return client, url, sent


def test_an_approval_sent_after_the_session_ended_is_not_recorded_and_the_sign_in_page_says_so(awaiting_sam, sam):
    client, url, sent = approve_after_the_session_ended(awaiting_sam, sam)

    assert sent.status_code == 302  # not the CSRF failure page: the token is still good
    assert sent["Location"] == f"{LOGIN_URL}?next={url}"
    assert not awaiting_sam.approvals.exists()
    sign_in_page = client.get(sent["Location"]).content.decode()
    assert NOT_DONE in sign_in_page
    assert "Sign in, then do it again." in sign_in_page
    # Said once: the sign-in page opened again later does not repeat it.
    assert NOT_DONE not in client.get(sent["Location"]).content.decode()


def test_after_signing_in_again_the_approval_can_be_done_again(demo_mode, awaiting_sam, sam):
    client, url, sent = approve_after_the_session_ended(awaiting_sam, sam)
    client.get(sent["Location"])

    signed_in = client.post(
        sent["Location"],
        {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, "username": "sam", "password": "pw-for-tests-only"},
    )
    assert signed_in["Location"] == url
    assert "Approve" in client.get(url).content.decode()


def test_a_sign_in_page_reached_by_following_a_link_says_nothing_was_refused(client):
    page = client.get("/audit/", follow=True).content.decode()
    assert "Sign in" in page
    assert NOT_DONE not in page


def test_signing_out_after_the_session_ended_signs_out_without_asking_to_sign_in_first(sam):
    """Sam's session ended while the page was open; he presses "Sign out". Nothing is left to end: he
    lands on the sign-in page, not sent to sign in so as to sign out (then a 405 from the sign-out URL)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(sam)
    page = client.get("/")
    assert page.status_code == 200
    client.session.flush()

    signed_out = client.post("/accounts/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})

    assert signed_out.status_code == 302
    assert signed_out["Location"] == LOGIN_URL
    assert NOT_DONE not in client.get(signed_out["Location"]).content.decode()


# --- deactivation ends someone's sessions ----------------------------------------------------------


@pytest.fixture
def platform_admin(django_user_model):
    admin = django_user_model.objects.create_superuser("olga", "olga@nexo.invalid", "pw-for-tests-only")
    client = Client()
    client.force_login(admin)
    return client


def set_active(admin_client, user, active):
    """What a platform engineer does on the user's admin page: tick or untick Active and save."""
    from tests.test_admin import change_page_data

    url = reverse("admin:auth_user_change", args=[user.pk])
    answer = admin_client.post(url, change_page_data(admin_client, url, is_active="on" if active else ""))
    assert answer.status_code == 302, answer.context["adminform"].form.errors if answer.context else answer


def test_deactivating_someone_in_the_admin_ends_their_sessions_for_good(platform_admin, rita):
    """Reactivated, Rita signs in again: the session she had before is not let back in."""
    browser = Client()
    browser.force_login(rita)
    assert browser.get("/").status_code == 200

    set_active(platform_admin, rita, False)
    assert browser.get("/").status_code == 302
    set_active(platform_admin, rita, True)

    answer = browser.get("/")
    assert answer.status_code == 302
    assert answer["Location"].startswith(LOGIN_URL)


def test_deactivating_someone_leaves_everyone_elses_sessions(platform_admin, rita, sam):
    browser = Client()
    browser.force_login(sam)

    set_active(platform_admin, rita, False)

    assert browser.get("/").status_code == 200
    assert platform_admin.get("/").status_code == 200


def test_an_upgrade_keeps_people_signed_in_but_not_the_deactivated(rita, sam, settings):
    """The sessions Django kept before they knew whose they are move to the portal's table, except those
    of people deactivated (which would come back with them) and those expired."""
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session as DjangoSession
    from django.utils import timezone

    from nexo_portal.models import Session

    def kept_by_django(user, key, expires_in_hours=1):
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        DjangoSession.objects.create(
            session_key=key,
            session_data=SessionStore().encode(data),
            expire_date=timezone.now() + timedelta(hours=expires_in_hours),
        )

    kept_by_django(rita, "ritasessionkey" + "a" * 18)
    kept_by_django(rita, "ritaexpiredkey" + "b" * 18, expires_in_hours=-1)
    kept_by_django(sam, "samsessionkey" + "c" * 19)
    type(sam).objects.filter(pk=sam.pk).update(is_active=False)
    move = import_module("nexo_portal.migrations.0007_sessions_know_whose_they_are")

    move.move_sessions_of_active_people(apps, schema_editor=None)

    assert list(Session.objects.values_list("session_key", "user__username")) == [("ritasessionkey" + "a" * 18, "rita")]
    assert not DjangoSession.objects.exists()
    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = "ritasessionkey" + "a" * 18
    assert browser.get("/").status_code == 200
