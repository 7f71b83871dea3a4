"""What waits for you: the count in the navigation and the tab title, the page of the promotions you may
decide, and the compact board (unavailable actions folded, rows with nothing to do hidden, a release just
rejected or rolled back never offered as the obvious next step)."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from environments.models import ChangeFreeze
from releases import policy, transitions
from releases.models import PromotionKind, PromotionState
from releases.waiting import for_person, held_by_freezes
from tests.factories import make_release, make_service
from tests.history import action_link, cell_html, ran

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting(environments, rita):
    """nexo-be 2026.02.1 verified up to staging, and rita's request to take it to production."""
    service = make_service("nexo-be", team="backend-team")
    release = make_release(service, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    return transitions.request_promotion(release, environments["production"], rita)


def page_as(client, user, path="/", **headers):
    client.force_login(user)
    return client.get(path, headers=headers)


def nav_count(page):
    return int(re.search(r'<span id="waiting-count"[^>]*data-count="(\d+)"', page).group(1))


def test_the_approvers_see_the_count_in_the_navigation_and_the_tab_title(client, awaiting, sam, lead, rita, viewer):
    for person in (sam, lead):
        page = page_as(client, person).content.decode()
        assert nav_count(page) == 1
        assert "<title>(1) Promotion board · Nexo Release Portal</title>" in page
    for person in (rita, viewer):  # the requester, and someone in no approver group
        page = page_as(client, person).content.decode()
        assert nav_count(page) == 0
        assert "<title>Promotion board · Nexo Release Portal</title>" in page


def test_the_count_follows_the_decisions_and_comes_with_every_refresh(client, awaiting, sam, sara):
    transitions.approve(awaiting, sam, "canary is clean")
    refresh = page_as(client, sam, "/", **{"HX-Request": "true", "HX-Target": "board"}).content.decode()
    assert nav_count(refresh) == 0  # sam decided already
    assert 'hx-swap-oob="true"' in refresh
    assert refresh.startswith("<title>Promotion board · Nexo Release Portal</title>")
    refresh = page_as(client, sara, "/", **{"HX-Request": "true", "HX-Target": "board"}).content.decode()
    assert nav_count(refresh) == 1
    assert refresh.startswith("<title>(1) Promotion board")


def test_the_waiting_page_lists_what_you_may_decide_with_its_actions(client, awaiting, sam, rita):
    page = page_as(client, sam, "/waiting/").content.decode()
    assert "nexo-be 2026.02.1 → production" in page
    assert "by rita" in page
    assert "0/2" in page
    assert action_link(page, "approve").startswith('<a class="button small primary"')
    assert "next=%2Fwaiting%2F" in action_link(page, "reject")
    assert action_link(page, "cancel") is None  # deciding, not withdrawing
    mine = page_as(client, rita, "/waiting/").content.decode()
    assert "Nothing waits for you" in mine
    assert action_link(mine, "approve") is None


def test_the_waiting_page_says_how_long_ago_as_the_board_does(client, awaiting, sam):
    type(awaiting).objects.filter(pk=awaiting.pk).update(requested_at=timezone.now() - timedelta(seconds=20))
    assert ">just now</time>" in page_as(client, sam, "/waiting/").content.decode()  # not "0 minutes ago"
    type(awaiting).objects.filter(pk=awaiting.pk).update(requested_at=timezone.now() - timedelta(hours=3, minutes=5))
    assert ">3 h ago</time>" in page_as(client, sam, "/waiting/").content.decode()


def test_one_rule_decides_what_waits(awaiting, sam, sara, rita, paulo, lead):
    """The list is exactly the people policy lets approve, whoever asks."""
    for person in (sam, sara, rita, paulo, lead):
        listed = [promotion.pk for promotion in for_person(person)]
        assert listed == ([awaiting.pk] if policy.why_not_approve(awaiting, person) is None else [])
    assert for_person(sam)
    assert not for_person(rita)
    assert not for_person(paulo)


def test_a_freeze_keeps_what_waits_there_off_the_list_in_a_fixed_number_of_queries(
    environments, awaiting, rita, sam, django_assert_max_num_queries
):
    for name in ("nexo-fe", "nexo-auth"):
        release = make_release(make_service(name, team="backend-team"), "2026.02.1")
        for environment in ("develop", "qa", "staging"):
            ran(release, environments[environment])
        transitions.request_promotion(release, environments["production"], rita)
    with django_assert_max_num_queries(5):  # and the person's groups
        assert len(for_person(sam)) == 3

    ChangeFreeze.objects.create(
        environment=environments["production"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Year-end freeze",
    )
    with django_assert_max_num_queries(5):  # and the person's groups
        assert for_person(sam) == []


def test_the_waiting_page_lists_apart_what_a_freeze_holds_with_when_it_ends(
    client, environments, awaiting, rita, sam, django_assert_max_num_queries
):
    ends_at = timezone.now() + timedelta(hours=1)
    ChangeFreeze.objects.create(
        environment=environments["production"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    with django_assert_max_num_queries(5):  # and the person's groups
        assert [promotion.pk for promotion in held_by_freezes(sam)] == [awaiting.pk]
    assert held_by_freezes(rita) == []  # she requested it: it never waits for her

    page = page_as(client, sam, "/waiting/").content.decode()
    assert nav_count(page) == 0  # nothing to approve now
    assert "Nothing waits for you" not in page
    assert "Nothing you may approve now: what waits for you is held by a change freeze, below." in page
    held = page.split('data-held="freeze"', 1)[1].split("</table>", 1)[0]
    assert "nexo-be 2026.02.1 → production" in held
    assert f">{timezone.localtime(ends_at):%Y-%m-%d %H:%M}</time>" in held
    assert "Year-end freeze" in held
    assert "next=%2Fwaiting%2F" in action_link(held, "reject")  # a rejection needs no open environment
    assert action_link(held, "approve") is None
    assert 'data-held="freeze"' not in page_as(client, rita, "/waiting/").content.decode()


def test_actions_you_may_not_take_are_folded_behind_one_why_not(client, awaiting, rita, viewer):
    cell = cell_html(page_as(client, rita), "nexo-be", "production")
    assert cell.count("<details") == 1
    folded = re.search(r"<details.*</details>", cell, re.S).group(0)
    assert 'data-action="approve"' in folded
    assert "You requested this promotion" in folded  # the reason, readable once opened
    assert 'data-action="cancel"' not in folded  # she may withdraw it: a button, not folded
    assert '<a class="button small ' in action_link(cell, "cancel")
    nothing = cell_html(page_as(client, viewer), "nexo-be", "production")
    assert '<div class="actions">' not in nothing  # nothing for the viewer but the folded line


def test_rows_with_nothing_to_do_can_be_hidden(client, environments, awaiting, sam):
    make_service("nexo-fe", team="frontend-team")  # nothing deployed, nothing to request
    response = page_as(client, sam, "/?todo=1")
    assert [row.service.name for row in response.context["board"].rows] == ["nexo-be"]
    page = response.content.decode()
    assert "1 where you have nothing to do is hidden" in page
    assert 'hx-get="/?todo=1"' in page  # the refresh keeps it
    assert [row.service.name for row in page_as(client, sam, "/").context["board"].rows] == ["nexo-be", "nexo-fe"]


def test_a_release_just_rejected_is_offered_again_but_not_as_the_primary_action(client, awaiting, sam, rita):
    transitions.reject(awaiting, sam, "error budget is spent")
    cell = cell_html(page_as(client, rita), "nexo-be", "production")
    promote = action_link(cell, "request")
    assert "Promote 2026.02.1 again" in promote
    assert "primary" not in promote
    assert "2026.02.1 was rejected by sam just now here" in promote
    assert "rejected by sam just now" in cell


def test_a_release_just_rolled_back_is_offered_again_but_not_as_the_primary_action(client, environments, rita):
    service = make_service("nexo-be", team="backend-team")
    old, new = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    for name in ("develop", "qa", "staging"):
        ran(new, environments[name])
    ran(old, environments["production"])
    rolled_back = ran(new, environments["production"], state=PromotionState.ROLLED_BACK)
    ran(old, environments["production"], kind=PromotionKind.ROLLBACK, rolls_back=rolled_back)
    cell = cell_html(page_as(client, rita), "nexo-be", "production")
    promote = action_link(cell, "request")
    assert "Promote 2026.02.2 again" in promote
    assert "primary" not in promote
    assert "2026.02.2 was rolled back just now here" in promote
    assert "2026.02.2</a> rolled back just now" in cell


def test_a_new_release_stays_the_primary_promotion(client, environments, rita):
    service = make_service("nexo-be", team="backend-team")
    release = make_release(service, "2026.02.1")
    ran(release, environments["develop"])
    promote = action_link(cell_html(page_as(client, rita), "nexo-be", "qa"), "request")
    assert promote.startswith('<a class="button small primary"')
    assert ">Promote 2026.02.1</a>" in promote
