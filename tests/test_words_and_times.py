"""What the pages say: refusals that name the groups that exist, soak arithmetic that adds up,
and times with their time zone and the exact time on hover."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.test import Client

from releases import confirmations, policy, timeline, transitions
from releases.models import Promotion, PromotionState
from tests.factories import make_release, make_service, make_user
from tests.history import verified_up_to_staging

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


# --- refusals ---------------------------------------------------------------------------------


def test_a_refusal_names_the_approver_groups_that_exist(environments, rita, viewer):
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], environments["production"], rita)

    assert policy.why_not_approve(promotion, viewer) == (
        "Only members of platform-leads or sre-team may approve promotions into production."
    )
    assert policy.why_not_approve(promotion, rita) == (
        "You requested this promotion; another approver from platform-leads or sre-team must approve it."
    )


def test_an_environment_without_approver_groups_is_named_as_such_not_as_nobody(environments, rita, viewer):
    production = environments["production"]
    production.approver_groups.clear()
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], production, rita)

    refusals = [
        policy.why_not_approve(promotion, viewer),
        policy.why_not_approve(promotion, rita),
        confirmations.for_request(history["release"], production, rita).consequences,
        confirmations.for_approve(promotion, viewer).consequences,
    ]

    text = repr(refusals)
    assert "nobody (" not in text
    assert "from ," not in text
    assert "from ." not in text
    assert refusals[0] == (
        "Nobody may approve promotions into production yet: production has no approver group yet; "
        "an administrator must set one in the admin."
    )
    assert "nobody can approve it until then: production has no approver group yet" in refusals[1]


def test_a_request_refusal_without_any_group_says_only_administrators_may(environments, viewer):
    service = make_service("orphan")
    release = make_release(service, "2026.02.1")
    qa = environments["qa"]
    qa.approver_groups.clear()
    qa.requester_groups.clear()

    refusal = policy.why_not_request(viewer, release.service, qa)

    assert refusal == (
        "Only administrators (no team owns orphan, and qa has no approver or requester group) may request "
        "promotions of orphan into qa."
    )


def test_a_request_refusal_names_the_team_and_the_groups(environments, viewer):
    history = verified_up_to_staging(environments)

    refusal = policy.why_not_request(viewer, history["service"], environments["production"])

    assert refusal == (
        "Only members of backend-team, platform-leads or sre-team may request promotions of nexo-be into production."
    )


# --- soak arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "elapsed", "expected"),
    [
        (timedelta(minutes=4), timedelta(minutes=1, seconds=40), ("1 min 40 s", "2 min 20 s", "4 min", 41)),
        (timedelta(minutes=4), timedelta(seconds=59), ("59 s", "3 min 1 s", "4 min", 24)),
        (timedelta(minutes=4), timedelta(minutes=2), ("2 min", "2 min", "4 min", 50)),
        (timedelta(minutes=4), timedelta(minutes=9), ("4 min", "0 s", "4 min", 100)),
        (timedelta(hours=2), timedelta(minutes=61, seconds=30), ("1 h 1 min", "59 min", "2 h", 50)),
    ],
)
def test_soak_time_elapsed_and_left_add_up_to_the_window(window, elapsed, expected):
    promotion = Promotion(state=PromotionState.VERIFYING, verification_started_at=START, verdict_at=START + window)

    soak = timeline.soak(promotion, START + elapsed)

    assert (soak.elapsed, soak.left, soak.window, soak.percent) == expected


# --- times --------------------------------------------------------------------------------------


def test_a_time_shows_the_exact_moment_and_time_zone_on_hover(settings):
    settings.TIME_ZONE = "Europe/Lisbon"
    html = Template('{% load portal_time %}{{ moment|when:"H:i" }}').render(
        Context({"moment": datetime(2026, 7, 1, 12, 5, 9, tzinfo=UTC)})
    )

    assert html == '<time datetime="2026-07-01T13:05:09+01:00" title="2026-07-01 13:05:09 WEST">13:05</time>'


def test_every_page_says_which_time_zone_its_times_are_in(environments, settings):
    settings.TIME_ZONE = "Europe/Lisbon"
    client = Client()
    client.force_login(make_user())

    page = client.get("/").content.decode()

    assert "Times are shown in Europe/Lisbon" in page


def test_the_promotion_page_gives_each_time_its_exact_value_on_hover(environments, rita):
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], environments["production"], rita)
    client = Client()
    client.force_login(rita)

    page = client.get(promotion.get_absolute_url()).content.decode()

    exact = promotion.requested_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'title="{exact}"' in page
