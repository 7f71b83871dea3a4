"""The pages in a real headless Chromium: accessibility (axe-core, vendored in tests/vendor), what a
promotion ships, the soak charts, the DORA page at 1440 px, and API docs that load nothing from
outside the portal."""

from datetime import timedelta
from pathlib import Path

import pytest

from releases import transitions
from releases.models import CheckResult, SampleCheck, VerificationSample
from tests import test_browser
from tests.test_browser import sign_in

pytestmark = pytest.mark.browser

# The browser, a page that fails on any Content-Security-Policy violation, and the portal with
# nexo-be 2026.02.1 verified up to staging: shared with tests/test_browser.py.
browser = test_browser.browser
page = test_browser.page
portal = test_browser.portal

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_violations(page):
    """axe-core's WCAG 2.x A/AA violations of the page as it is now, plus a missing h1.

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy
    does not govern, so the page under test stays exactly as served.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE)
    results = page.evaluate(
        """async (tags) => {
            const wcag = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            const heading = await axe.run(document, {runOnly: {type: 'rule', values: ['page-has-heading-one']}});
            return [...wcag.violations, ...heading.violations].map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ': ' + n.failureSummary),
            }));
        }""",
        WCAG,
    )
    return results


@pytest.fixture
def awaiting(portal, settings):
    """A production promotion of nexo-be 2026.02.1 awaiting approval, what it ships and a soak to draw."""
    settings.ARGOCD_UI_URL = "https://argocd.example.com"
    settings.GITOPS_COMMIT_URL_TEMPLATE = "https://git.example.com/nexo-gitops/commit/{sha}"
    release = portal["release"]
    release.changelog = "## Features\n- feat: **rate limiting** ([docs](https://docs.example/rl))"
    release.save()
    staging = release.promotions.get(environment__name="staging")
    start = staging.deployed_at
    staging.verification_started_at, staging.verdict_at = start, start + timedelta(minutes=4)
    staging.save()
    for minute in range(4):
        VerificationSample.objects.create(
            promotion=staging,
            kind=SampleCheck.ERROR_RATE,
            target="sum(rate(http_requests_total[1m]))",
            value=0.002 * minute,
            ok=True,
            taken_at=start + timedelta(minutes=minute),
            detail="fine",
        )
        VerificationSample.objects.create(
            promotion=staging,
            kind=SampleCheck.HEALTH_URL,
            target="https://nexo-be.staging.example/healthz",
            value=200,
            ok=minute != 2,
            taken_at=start + timedelta(minutes=minute),
            detail="200 OK" if minute != 2 else "503",
        )
    CheckResult.objects.create(
        release=release, environment=staging.environment, name="e2e", passed=True, reported_by="api-token:ci"
    )
    production, rita = staging.environment.next(), portal["people"]["rita"]
    cancelled = transitions.request_promotion(release, production, rita)
    transitions.cancel(cancelled, rita, "wrong build")
    promotion = transitions.request_promotion(release, production, rita)
    return {"promotion": promotion, "staging": staging, "cancelled": cancelled}


def test_the_pages_pass_axe(page, portal, awaiting):
    base = portal["url"]
    sign_in(page, portal, "sam")
    pages = {
        "board": "/",
        "promotion awaiting approval": f"/promotions/{awaiting['promotion'].pk}/",
        "promotion with a soak": f"/promotions/{awaiting['staging'].pk}/",
        "promotion with skipped steps": f"/promotions/{awaiting['cancelled'].pk}/",
        "release": portal["release"].get_absolute_url(),
        "confirmation without JavaScript": f"/promotions/{awaiting['promotion'].pk}/approve/",
        "DORA": "/dora/",
        "audit log": "/audit/",
    }
    found = {}
    for name, path in pages.items():
        page.goto(base + path)
        found[name] = axe_violations(page)
    page.goto(base + f"/promotions/{awaiting['promotion'].pk}/")
    page.locator('a[data-action="approve"]').first.click()
    page.locator("#confirm-dialog #what-ships").wait_for()
    found["approve dialog"] = axe_violations(page)

    assert {name: violations for name, violations in found.items() if violations} == {}


def test_the_sign_in_page_passes_axe(page, portal):
    page.goto(portal["url"] + "/accounts/login/")

    assert axe_violations(page) == []


def test_skipped_steps_are_told_apart_without_losing_contrast(page, portal, awaiting):
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/promotions/{awaiting['cancelled'].pk}/")

    skipped = page.locator("li.step.skipped")
    assert skipped.count() >= 4
    assert skipped.first.evaluate("element => getComputedStyle(element).opacity") == "1"
    assert skipped.first.locator(".marker").evaluate("element => getComputedStyle(element).borderStyle") == "dashed"


def test_every_page_has_a_main_heading_and_the_favicon(page, portal, awaiting):
    sign_in(page, portal, "sam")
    for path in ("/", f"/promotions/{awaiting['promotion'].pk}/approve/", "/dora/", "/audit/"):
        page.goto(portal["url"] + path)
        assert page.locator("h1").count() == 1, path
        icon = page.locator('link[rel="icon"]').get_attribute("href")
        assert page.request.get(portal["url"] + icon).status == 200


def test_the_approve_dialog_shows_what_ships(page, portal, awaiting):
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/promotions/{awaiting['promotion'].pk}/")
    page.locator('a[data-action="approve"]').first.click()
    dialog = page.locator("#confirm-dialog")
    dialog.locator("#what-ships").wait_for()

    text = dialog.inner_text()
    assert "rate limiting" in text
    assert dialog.locator(".changelog li strong").inner_text() == "rate limiting"
    assert "e2e passed" in text
    assert portal["release"].image_digest in text
    assert '+  tag: "2026.02.1"' in dialog.locator("pre.diff").inner_text()
    test_browser.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(test_browser.ARTIFACTS / "approve-dialog.png"), full_page=True)


def test_the_soak_is_drawn_and_its_samples_fold_away(page, portal, awaiting):
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/promotions/{awaiting['staging'].pk}/")

    assert page.locator("svg.soak-chart").count() == 2
    assert page.locator("svg.soak-chart line.threshold").count() == 1
    assert not page.locator("#samples-table table").is_visible()
    page.click("#samples-table summary")
    assert page.locator("#samples-table tbody tr").count() == 8
    assert page.locator('a[data-link="gitops-commit"]').get_attribute("href") == (
        f"https://git.example.com/nexo-gitops/commit/{'c' * 40}"
    )
    assert page.locator('a[data-link="argocd"]').get_attribute("href") == (
        "https://argocd.example.com/applications/nexo-be-staging"
    )
    hover = page.locator("ol.timeline time").first.get_attribute("title")
    assert hover.endswith(" UTC")
    page.screenshot(path=str(test_browser.ARTIFACTS / "promotion-soak.png"), full_page=True)


def test_the_dora_page_fits_1440_pixels_and_its_axis_labels_are_whole(page, portal):
    # nexo-be's releases ran in staging (the portal fixture): a table row and trend charts to draw.
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/dora/?environment=staging&interval=weekly")

    scroller = page.locator(".table-scroll:has(.dora-services)")
    assert scroller.locator("tbody tr").count() == 1
    assert scroller.evaluate("element => element.scrollWidth <= element.clientWidth")
    assert page.locator("svg.chart").count() == 6
    for chart in page.locator("svg.chart").all():
        left = chart.bounding_box()["x"]
        for tick in chart.locator("text.tick").all():
            box = tick.bounding_box()
            if box and box["width"]:
                assert box["x"] >= left - 0.5, tick.inner_text()
    page.screenshot(path=str(test_browser.ARTIFACTS / "dora.png"), full_page=True)


def test_a_promotion_page_fits_a_phone(page, portal, awaiting):
    # The staging promotion: its GitOps commit's 40-character hash on the timeline, the soak charts.
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/promotions/{awaiting['staging'].pk}/")

    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    for card in page.locator(".columns > .card").all():
        assert card.evaluate("card => card.scrollWidth <= card.clientWidth"), card.locator("h2").first.inner_text()


def test_the_waiting_list_keeps_each_row_one_height(page, portal, awaiting):
    sign_in(page, portal, "sam")
    page.goto(f"{portal['url']}/waiting/")

    cells = page.locator(f'tr[data-promotion="{awaiting["promotion"].pk}"] > td')
    assert cells.count() == 4
    bottoms = {round(box["y"] + box["height"]) for box in (cell.bounding_box() for cell in cells.all())}
    assert len(bottoms) == 1, bottoms


@pytest.mark.parametrize("path", ["/slo/", "/dora/?environment=staging"])
def test_a_wide_table_scrolls_in_its_own_box_on_a_phone(page, portal, path):
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, portal, "sam")
    page.goto(portal["url"] + path)

    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_board_fits_a_phone_with_its_folded_reasons(page, portal):
    """The hidden "to you: Approve" of "1 unavailable · why not?" is absolutely positioned; with no
    positioned ancestor it escaped the table's scroll box and the page scrolled sideways into blank space."""
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, portal, "rita")

    assert page.locator("#board details.why-not").count() > 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "document.documentElement.scrollWidth"
    )


@pytest.mark.parametrize("path", ["/api/v1/redoc/", "/api/v1/docs/"])
def test_the_api_docs_load_nothing_from_outside_the_portal(browser, portal, path):
    # A context of its own: on ReDoc's page the policy refuses ReDoc's logo from the Redocly CDN,
    # a refusal the shared page fixture would count as a broken policy.
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    requested, refused, blocked = [], [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("requestfailed", lambda request: blocked.append((request.url, request.failure)))
    page.on("console", lambda message: refused.append(message.text) if "Content Security" in message.text else None)
    try:
        sign_in(page, portal, "sam")
        page.goto(portal["url"] + path)
        page.wait_for_load_state("networkidle")
        if "redoc" in path:
            page.get_by_role("heading", name="Nexo Release Portal API").first.wait_for()
    finally:
        context.close()

    # The browser refuses the rest itself by the page's policy ("csp"): it never goes on the network.
    outside = [url for url in requested if not url.startswith((portal["url"], "data:", "blob:"))]
    assert all((url, "csp") in blocked for url in outside), (outside, blocked)
    assert any("redoc" in url or "swagger" in url for url in requested)
    assert [text for text in refused if "cdn.redoc.ly" not in text] == []
