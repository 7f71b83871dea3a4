"""The board in a real headless Chromium, with a real RQ worker carrying the promotion through
the pipeline (real PostgreSQL, Redis and a bare GitOps repository) while the page watches.

Screenshots of the board and of the promotion page go to test-artifacts/.
"""

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone

from environments.models import ChangeFreeze, Environment
from releases import github_events, transitions
from releases.models import Hold, Promotion, PromotionState
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.browser

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "pw-for-tests-only"


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A browser page; any Content-Security-Policy violation on it fails the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    refused = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    yield page
    context.close()
    assert refused == [], "the page broke its Content-Security-Policy"


@pytest.fixture
def worker(pipeline, tmp_path):
    """A real RQ worker (with its scheduler) in its own process, on the test database."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.RQ_QUEUES["default"]["URL"],
        "GITOPS_REPO_URL": settings.GITOPS_REPO_URL,
        "GITOPS_WORKDIR": str(tmp_path / "worker"),
        "LOG_LEVEL": "WARNING",
        # Pull-request delivery, when a test points the portal at the GitHub stand-in (empty otherwise).
        "GITOPS_GITHUB_REPOSITORY": settings.GITOPS_GITHUB_REPOSITORY,
        "GITOPS_GITHUB_API_URL": settings.GITOPS_GITHUB_API_URL,
        "GITOPS_GITHUB_TOKEN": settings.GITOPS_GITHUB_TOKEN,
    }
    with open(tmp_path / "worker.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rqworker",
                "--with-scheduler",
                "--worker-class",
                "rq.worker.SimpleWorker",
                "default",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield process
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def portal(pipeline, live_server, settings, rita, sam, sara):
    """nexo-be 2026.02.1 verified up to staging, people to request and approve, a board refreshing every second."""
    settings.LIVE_REFRESH_SECONDS = 1
    # The live server serves static files through Django's finders, which know the files by
    # their own names, not by the hashed names of the production manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    env = pipeline.environments
    production = env["production"]
    production.verification_window = timedelta(seconds=6)
    production.save()
    service = pipeline.add_service("nexo-be", tag="2026.01.9")
    release = make_release(service, "2026.02.1", changelog="- feat: rate limiting")
    for name in ("develop", "qa", "staging"):
        ran(release, env[name])
    people = {"rita": rita, "sam": sam, "sara": sara}
    return {"url": live_server.url, "service": service, "release": release, "people": people, "gitops": pipeline.gitops}


def sign_in(page, portal, username):
    page.goto(f"{portal['url']}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stacked button[type=submit]")
    page.wait_for_url(f"{portal['url']}/")


def sign_out(page):
    page.click("form.signout button")
    # The sign-in page, with ?next=/ when the board's own refresh found the session ended first.
    page.wait_for_url(re.compile(r".*/accounts/login/(\?next=.*)?$"))


def production_cell(page):
    return page.locator('tr[data-service="nexo-be"] td[data-environment="production"]')


def confirm(page, action, comment=None):
    """Click an action in the production cell, check the dialog says what will happen, confirm it."""
    production_cell(page).locator(f'a[data-action="{action}"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "nexo-be 2026.02.1 → production" in dialog.inner_text()
    if comment is not None:
        dialog.locator("textarea").fill(comment)
    with page.expect_navigation():
        dialog.locator("button[type=submit]").click()
    return page.locator(".messages").inner_text()


def test_a_production_promotion_requested_approved_by_two_sres_and_carried_out_while_the_board_watches(
    page, portal, worker
):
    sign_in(page, portal, "rita")
    message = confirm(page, "request")
    assert "Requested nexo-be 2026.02.1 → production" in message
    assert "awaiting approval 0/2" in production_cell(page).inner_text()
    approve = production_cell(page).locator('a[data-action="approve"]')
    assert "unavailable" in approve.get_attribute("class")  # not for the requester; the dialog says why
    assert not approve.is_visible()  # folded behind the cell's one "why not?"
    production_cell(page).locator("details.why-not summary").click()
    approve.click()
    page.locator("#confirm-dialog").wait_for(state="visible")
    assert "You requested this promotion" in page.locator("#confirm-dialog").inner_text()
    page.locator("#confirm-dialog [data-close-dialog]").click()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "board-awaiting-approval.png"), full_page=True)
    sign_out(page)

    sign_in(page, portal, "sam")
    assert "1 of 2 approvals so far" in confirm(page, "approve", comment="canary is clean")
    assert "awaiting approval 1/2" in production_cell(page).inner_text()
    sign_out(page)

    sign_in(page, portal, "sara")
    assert "the GitOps commit is on its way" in confirm(page, "approve")
    page.evaluate("window.stillTheSamePage = true")

    seen, deadline = [], time.monotonic() + 90
    while time.monotonic() < deadline:
        text = production_cell(page).inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        if "2026.02.1" in text.split("\n")[0] and "verified" in text:
            break
        time.sleep(0.2)
    assert "verified" in seen[-1], seen
    assert any("soaking" in text for text in seen), seen
    assert page.evaluate("window.stillTheSamePage") is True  # htmx refreshed the board, no reload
    page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)

    promotion = Promotion.objects.get(environment__name="production")
    assert promotion.state == PromotionState.VERIFIED
    assert 'tag: "2026.02.1"' in portal["gitops"].read("helm/nexo-be/values-prod.yaml")

    page.goto(f"{portal['url']}/promotions/{promotion.pk}/")
    timeline = page.locator("ol.timeline")
    assert timeline.locator("li.step.done").count() == 7
    text = timeline.inner_text()
    assert "sam" in text
    assert "canary is clean" in text
    assert "sara" in text
    assert promotion.gitops_commit_sha in text
    assert "Promotion requested" in page.locator("#events-title + div").inner_text()
    page.screenshot(path=str(ARTIFACTS / "promotion.png"), full_page=True)


def test_an_approve_dialog_left_open_while_another_approves_comes_back_saying_so(page, portal):
    """The dialog said sam's approval was 1 of 2; sara approved while it was open (a live refresh leaves an
    open dialog alone). His click does not start the production commit unbeknown to him: the confirmation
    comes back as things stand, his comment kept, and one more click approves."""
    promotion = transitions.request_promotion(
        portal["release"], Environment.objects.get(name="production"), portal["people"]["rita"]
    )
    sign_in(page, portal, "sam")
    production_cell(page).locator('a[data-action="approve"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "Yours is approval 1 of 2" in dialog.inner_text()
    dialog.locator("textarea").fill("canary is clean")
    transitions.approve(promotion, portal["people"]["sara"])

    with page.expect_navigation():
        dialog.locator("button[type=submit]").click()

    again = page.locator(".confirm-page")
    assert "Since you opened this, sara approved: yours is now the last approval needed" in again.inner_text()
    assert "Yours is approval 2 of 2: the GitOps commit starts as soon as you approve." in again.inner_text()
    assert again.locator("textarea").input_value().strip() == "canary is clean"
    assert Promotion.objects.get(pk=promotion.pk).state == PromotionState.AWAITING_APPROVAL
    with page.expect_navigation():
        again.locator("button[type=submit]").click()
    assert "the GitOps commit is on its way" in page.locator(".messages").inner_text()
    assert Promotion.objects.get(pk=promotion.pk).state == PromotionState.APPROVED


def test_a_rejection_needs_a_comment_and_stops_the_promotion(page, portal):
    sign_in(page, portal, "rita")
    confirm(page, "request")
    sign_out(page)

    sign_in(page, portal, "sam")
    production_cell(page).locator('a[data-action="reject"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    dialog.locator("button[type=submit]").click()  # the browser refuses an empty required comment
    assert dialog.is_visible()
    assert Promotion.objects.get(environment__name="production").state == PromotionState.AWAITING_APPROVAL
    dialog.locator("textarea").fill("error budget is spent this week")
    with page.expect_navigation():
        dialog.locator("button[type=submit]").click()
    assert "You rejected nexo-be 2026.02.1 → production." in page.locator(".messages").inner_text()
    assert "rejected by sam" in production_cell(page).inner_text()
    page.screenshot(path=str(ARTIFACTS / "board-rejected.png"), full_page=True)

    production_cell(page).locator(".stopped a").click()
    page.wait_for_url("**/promotions/*/")
    assert "error budget is spent this week" in page.locator("ol.timeline").inner_text()
    assert page.locator('li.step[data-step="approvals"]').get_attribute("class") == "step failed"
    page.screenshot(path=str(ARTIFACTS / "promotion-rejected.png"), full_page=True)


def test_a_refused_request_comes_back_with_the_keyboard_on_the_field_to_put_right(page, portal):
    ChangeFreeze.objects.create(
        environment=Environment.objects.get(name="production"),
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=5),
        reason="Year-end freeze",
    )
    sign_in(page, portal, "rita")
    production_cell(page).locator('a[data-action="request"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    with page.expect_navigation():
        dialog.locator("button[type=submit]").click()  # break-glass not ticked
    assert "mark this one break-glass and name the incident" in page.locator("main form").inner_text()
    assert page.evaluate("document.activeElement.id") == "id_emergency"

    page.keyboard.press("Space")  # ticked where the keyboard already is; no reason given
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert "say which incident it is for" in page.locator("main form").inner_text()
    assert page.evaluate("document.activeElement.id") == "id_reason"
    assert not Promotion.objects.filter(environment__name="production").exists()


def test_the_board_works_without_javascript(browser, portal):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, portal, "rita")
    production_cell(page).locator('a[data-action="request"]').click()
    page.wait_for_url("**/promote/2026.02.1/?next=*")
    assert "nexo-be 2026.02.1 → production" in page.locator("main").inner_text()
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert "awaiting approval 0/2" in production_cell(page).inner_text()
    context.close()


def test_the_board_refreshes_itself_and_gives_a_keyboard_user_their_place_back(page, portal):
    sign_in(page, portal, "rita")
    page.evaluate("window.stillTheSamePage = true")
    stamp = page.locator(".refreshed time")
    first = stamp.get_attribute("datetime")
    page.wait_for_function(
        "() => document.querySelector('.refreshed time').getAttribute('datetime') !== " + repr(first)
    )
    assert page.evaluate("window.stillTheSamePage") is True

    for _ in range(40):  # tab into the board, as a keyboard user does
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('#board a[href]')"):
            break
    focused = page.evaluate("document.activeElement.getAttribute('href')")
    held = stamp.get_attribute("datetime")
    page.wait_for_function("() => document.querySelector('.refreshed time').getAttribute('datetime') !== " + repr(held))
    # htmx settles the new content a moment after the swap; then the focus is back on the same link.
    page.wait_for_function("href => document.activeElement.getAttribute('href') === href", arg=focused, timeout=2000)
    assert page.evaluate("!!document.activeElement.closest('#board')")


def test_closing_a_confirmation_with_escape_leaves_the_board_refreshing(page, portal):
    sign_in(page, portal, "rita")
    production_cell(page).locator('a[data-action="request"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    held = page.locator(".refreshed time").get_attribute("datetime")
    page.wait_for_function(
        "() => document.querySelector('.refreshed time').getAttribute('datetime') !== " + repr(held), timeout=5000
    )


def test_a_second_click_on_confirm_is_not_sent(page, portal):
    sign_in(page, portal, "rita")
    production_cell(page).locator('a[data-action="request"]').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    # Listen after the portal's own handler; hold every submission so both clicks are seen.
    page.evaluate("""() => {
        window.submissions = [];
        document.addEventListener("submit", (event) => {
            window.submissions.push(event.defaultPrevented);
            event.preventDefault();
        });
    }""")
    button = dialog.locator("button[type=submit]")
    button.click()
    button.click(force=True)
    assert page.evaluate("window.submissions") == [False, True], "the second click would have been sent"
    assert button.get_attribute("aria-disabled") == "true"


def test_a_board_that_cannot_refresh_says_so_and_recovers(page, portal):
    sign_in(page, portal, "rita")
    page.route("**/", lambda route: route.abort() if route.request.headers.get("hx-request") else route.continue_())
    notice = page.locator("#refresh-failed")
    notice.wait_for(state="visible", timeout=5000)
    assert "Could not refresh since" in notice.inner_text()
    page.unroute("**/")
    notice.wait_for(state="detached", timeout=5000)


def test_a_refresh_tells_the_time_in_the_portals_time_zone_not_the_browsers(browser, portal, settings):
    settings.TIME_ZONE = "UTC"
    context = browser.new_context(timezone_id="America/Sao_Paulo", locale="en-US")
    page = context.new_page()
    sign_in(page, portal, "rita")
    stamp = page.locator(".refreshed time")
    first = stamp.get_attribute("datetime")
    # Nothing changes on the board: the refresh is answered 304 and the script sets the time itself.
    page.wait_for_function(
        "() => document.querySelector('.refreshed time').getAttribute('datetime') !== " + repr(first)
    )
    checked = datetime.fromisoformat(stamp.get_attribute("datetime").replace("Z", "+00:00"))
    assert stamp.inner_text() == checked.astimezone(UTC).strftime("%H:%M:%S")

    page.route("**/", lambda route: route.abort() if route.request.headers.get("hx-request") else route.continue_())
    notice = page.locator("#refresh-failed")
    notice.wait_for(state="visible", timeout=5000)
    since = notice.locator("time")
    failed = datetime.fromisoformat(since.get_attribute("datetime").replace("Z", "+00:00"))
    assert since.inner_text() == failed.astimezone(UTC).strftime("%H:%M:%S")
    context.close()


def test_filtering_the_board_in_place_offers_to_clear_the_filter_and_keeps_the_header_in_view(page, portal):
    for number in range(30):  # enough rows to scroll
        make_service(f"svc-{number:02d}", team="backend-team")
    sign_in(page, portal, "rita")
    assert page.locator("a.clear").count() == 0
    page.select_option("#filter-service", "nexo-be")
    page.locator("a.clear").wait_for(state="visible")
    assert "Showing 1 service" in page.locator("p.filtered").inner_text()
    page.select_option("#filter-service", "")
    page.locator("a.clear").wait_for(state="detached")

    page.set_viewport_size({"width": 1200, "height": 600})
    page.locator("#board .table-scroll").evaluate("box => box.scrollTo(0, 2000)")
    header = page.locator("table.board thead th").first.bounding_box()
    box = page.locator("#board .table-scroll").bounding_box()
    assert box["y"] - 1 <= header["y"] <= box["y"] + 5, (header, box)


def test_the_promotion_page_keeps_the_commit_message_open_across_refreshes(page, portal):
    release = portal["release"]
    syncing = Promotion.objects.create(
        release=release,
        service=release.service,
        environment=Environment.objects.get(name="production"),
        state=PromotionState.SYNCING,
        requested_by=portal["people"]["rita"],
        gitops_commit_sha="c" * 40,
        gitops_commit_message="promote(nexo-be): production → 2026.02.1\n\nRequested by rita.",
    )
    sign_in(page, portal, "rita")
    page.goto(f"{portal['url']}/promotions/{syncing.pk}/")
    page.click("#commit-message summary")
    page.evaluate("document.getElementById('promotion-live').dataset.before = 'yes'")
    # Something changes, so the next refresh brings new content rather than a 304.
    Promotion.objects.filter(pk=syncing.pk).update(error="Argo CD is slow today")
    page.wait_for_function("() => !document.getElementById('promotion-live').dataset.before")  # morphed by a refresh
    page.wait_for_function("() => document.getElementById('commit-message').open", timeout=2000)
    assert "Requested by rita." in page.locator("#commit-message").inner_text()


def test_the_admin_works_under_the_content_security_policy(page, portal, django_user_model):
    django_user_model.objects.create_superuser("operator", "op@nexo.invalid", PASSWORD)
    sign_in(page, portal, "operator")
    page.goto(f"{portal['url']}/admin/")
    assert page.locator("#content-main").is_visible()
    page.goto(f"{portal['url']}/admin/environments/changefreeze/add/")
    page.locator("#id_starts_at_0").wait_for()
    page.click(".datetimeshortcuts a:has-text('Today')")  # the admin's own date widget, from its scripts
    assert page.locator("#id_starts_at_0").input_value()
    page.goto(f"{portal['url']}/admin/releases/release/")
    page.locator("#action-toggle").check()  # the changelist's actions script
    assert page.locator(".action-counter").inner_text().startswith("1 of 1")


@pytest.fixture
def pull_request_portal(portal, github_server, settings):
    """The portal above with production delivered by pull request on the GitHub stand-in; sara
    signed in to the portal with GitHub as sara-gh."""
    from social_django.models import UserSocialAuth

    github_server.add_repository("nexo-org/nexo-gitops", portal["gitops"].bare)
    github_server.add_account("nexo-portal-bot")
    for team in ("sre-team", "platform-leads"):
        github_server.add_team("nexo-org", team)
    settings.GITOPS_GITHUB_REPOSITORY = "nexo-org/nexo-gitops"
    settings.GITOPS_GITHUB_API_URL = github_server.api_url
    settings.GITOPS_GITHUB_TOKEN = github_server.issue_token("nexo-portal-bot", ["repo"])
    settings.GITHUB_WEBHOOK_SECRET = "browser-webhook-secret"
    settings.SOCIAL_AUTH_GITHUB_ORG_KEY = ""  # people sign in with passwords here, as in the tests above
    account = github_server.add_account("sara-gh")
    UserSocialAuth.objects.create(user=portal["people"]["sara"], provider="github-org", uid=str(account.id))
    Environment.objects.filter(name="production").update(delivery_mode="pull_request")
    return {**portal, "github": github_server, "repository": github_server.repositories["nexo-org/nexo-gitops"]}


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("not in time")


def test_one_approval_in_the_portal_and_one_on_the_pull_request_carry_the_promotion_out(
    page, pull_request_portal, worker
):
    portal, repository = pull_request_portal, pull_request_portal["repository"]
    sign_in(page, portal, "rita")
    confirm(page, "request")
    promotion = Promotion.objects.get(environment__name="production")
    wait_for(lambda: Promotion.objects.get(pk=promotion.pk).pr_number == 1)
    page.reload()
    assert "PR #1 (open)" in production_cell(page).inner_text()
    sign_out(page)

    sign_in(page, portal, "sam")
    assert "1 of 2 approvals so far" in confirm(page, "approve", comment="canary is clean")
    sign_out(page)

    repository.review(1, "sara-gh", "APPROVED", "approved on GitHub")
    body = json.dumps(
        {"action": "submitted", "pull_request": {"number": 1}, "repository": {"full_name": "nexo-org/nexo-gitops"}}
    ).encode()
    delivered = requests.post(
        f"{portal['url']}/api/v1/webhooks/github/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request_review",
            "X-GitHub-Delivery": "browser-1",
            "X-Hub-Signature-256": github_events.signature_for("browser-webhook-secret", body),
        },
        timeout=30,
    )
    assert delivered.status_code == 202, delivered.text

    sign_in(page, portal, "rita")
    wait_for(lambda: "verified" in production_cell(page).inner_text(), timeout=90)
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFIED
    assert repository.pulls[1].merged
    assert promotion.gitops_commit_sha == repository.pulls[1].merge_commit_sha
    page.goto(f"{portal['url']}/promotions/{promotion.pk}/")
    timeline = page.locator("ol.timeline").inner_text()
    assert "canary is clean" in timeline
    assert "approved on GitHub" in timeline
    assert "Pull request #1 (merged)" in timeline
    page.screenshot(path=str(ARTIFACTS / "promotion-pull-request.png"), full_page=True)


@pytest.mark.parametrize(
    "viewport", [{"width": 1440, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_a_long_board_keeps_the_readers_place_through_refreshes(page, portal, viewport):
    env = {environment.name: environment for environment in Environment.objects.all()}
    services = {}
    for number in range(40):  # a board longer and wider than the screen
        services[number] = service = make_service(f"svc-{number:02d}", team="backend-team")
        release = make_release(service, "2026.02.1")
        for name in ("develop", "qa", "staging", "production"):
            ran(release, env[name])
        ran(make_release(service, "2026.02.2"), env["develop"])  # which sam may not promote to qa
    statuses = []
    page.on(
        "response", lambda response: response.request.headers.get("hx-request") and statuses.append(response.status)
    )
    page.set_viewport_size(viewport)
    sign_in(page, portal, "sam")
    box = page.locator("#board .table-scroll")
    folded = page.locator('tr[data-service="svc-30"] td[data-environment="qa"] details.why-not')
    folded.locator("summary").click()
    box.evaluate("box => box.scrollTo(box.scrollWidth, 1500)")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    place = box.evaluate("box => [box.scrollLeft, box.scrollTop]")
    window_y = page.evaluate("window.scrollY")
    if viewport["width"] < 900:  # on a desktop all four environments fit side by side
        assert place[0] > 0, place
    assert place[1] > 0, place

    for number, reason in ((35, "first change"), (36, "second change")):
        Hold.objects.create(service=services[number], environment=env["production"], reason=reason)
        page.wait_for_function(
            "reason => document.getElementById('board').textContent.includes(reason)", arg=reason, timeout=10_000
        )
        assert box.evaluate("box => [box.scrollLeft, box.scrollTop]") == place
        assert page.evaluate("window.scrollY") == window_y
        assert folded.evaluate("details => details.open")
    # While nothing changed, the refreshes were answered 304 and left the board alone.
    page.wait_for_timeout(2500)
    assert box.evaluate("box => [box.scrollLeft, box.scrollTop]") == place
    assert 304 in statuses, statuses
    assert 200 in statuses, statuses
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"board-scrolled-{viewport['width']}.png"))
