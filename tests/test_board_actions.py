"""The actions of the board through HTML: confirmation pages and dialogs, the POST that acts,
refusals as messages, forms that need fixing, CSRF, and where the person is sent back to."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze
from releases import policy, transitions
from releases.models import Approval, CheckResult, Promotion, PromotionKind, PromotionState
from tests.factories import make_release
from tests.history import ran, verified_up_to_staging

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(environments, rita, sam, lead, viewer, paulo):
    # paulo approves staging: without an approver there, a staging rollback could never be approved.
    return {
        **verified_up_to_staging(environments),
        "rita": rita,
        "sam": sam,
        "lead": lead,
        "viewer": viewer,
        "paulo": paulo,
    }


def as_user(client, user):
    """A fresh browser session for `user`, so messages of one person never show up for another."""
    session = Client()
    session.force_login(user)
    return session


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


REQUEST_URL = "/services/nexo-be/environments/production/promote/2026.02.1/"


def waiting_promotion(world):
    return transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])


def pinned(promotion):
    """What an approval's confirmation posts back of where the approvals stand, as they stand now."""
    return {"expected": policy.approvals_standing(promotion)}


# --- confirmations -----------------------------------------------------------------------------


def test_the_request_confirmation_says_exactly_what_will_happen(client, world):
    response = as_user(client, world["rita"]).get(REQUEST_URL, {"next": "/?team=backend-team"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" in page  # without JavaScript: a full page
    assert "nexo-be 2026.02.1 → production" in page
    assert "production runs" not in page
    assert "Nothing runs in production for nexo-be yet." in page
    assert "It waits for 2 distinct approvers from platform-leads or sre-team" in page
    assert "sets image.tag to 2026.02.1 in helm/nexo-be/values-prod.yaml" in page
    assert "“promote(nexo-be): production → 2026.02.1”" in page
    assert 'name="next" value="/?team=backend-team"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert 'type="submit" class="button primary">Request promotion</button>' in page


def test_htmx_gets_the_confirmation_as_a_dialog_fragment(client, world):
    response = as_user(client, world["rita"]).get(
        REQUEST_URL, headers={"HX-Request": "true", "HX-Target": "dialog-body"}
    )
    page = response.content.decode()
    assert "<html" not in page
    assert page.lstrip().startswith('<h2 id="confirm-title"')
    assert "data-close-dialog" in page


def test_a_confirmation_for_someone_not_allowed_explains_why_and_offers_no_button(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["rita"]).get(f"/promotions/{promotion.pk}/approve/")
    page = response.content.decode()
    assert "You cannot do this:" in page
    assert "You requested this promotion; another approver from platform-leads or sre-team must approve it." in page
    assert '<form method="post"' not in page


def test_the_approval_confirmation_says_whether_it_is_the_last_one_needed(client, world):
    promotion = waiting_promotion(world)
    first = as_user(client, world["sam"]).get(f"/promotions/{promotion.pk}/approve/").content.decode()
    assert "Yours is approval 1 of 2: 1 more from platform-leads or sre-team will be needed" in first
    transitions.approve(promotion, world["sam"])
    last = as_user(client, world["lead"]).get(f"/promotions/{promotion.pk}/approve/").content.decode()
    assert "Already approved by sam." in last
    assert "Yours is approval 2 of 2: the GitOps commit starts as soon as you approve." in last


def test_the_rollback_confirmation_names_the_release_it_goes_back_to(client, world):
    newer = make_release(world["service"], "2026.02.2")
    ran(newer, world["env"]["staging"])
    response = as_user(client, world["rita"]).get("/services/nexo-be/environments/staging/rollback/")
    page = response.content.decode()
    assert "nexo-be in staging: 2026.02.2 → 2026.02.1" in page
    assert '<option value="2026.02.1" selected>2026.02.1</option>' in page


def test_choosing_another_rollback_target_in_the_dialog_describes_that_one(client, world):
    older = make_release(world["service"], "2026.01.7")
    ran(older, world["env"]["staging"], at=timezone.now() - timedelta(days=3))
    ran(make_release(world["service"], "2026.02.2"), world["env"]["staging"], at=timezone.now() + timedelta(minutes=1))
    url = "/services/nexo-be/environments/staging/rollback/"
    rita = as_user(client, world["rita"])
    dialog = rita.get(url, headers={"HX-Request": "true", "HX-Target": "dialog-body"}).content.decode()
    assert "nexo-be in staging: 2026.02.2 → 2026.02.1" in dialog
    assert f'hx-get="{url}"' in dialog
    assert 'hx-trigger="change"' in dialog
    chosen = rita.get(
        url, {"release": "2026.01.7", "next": "/"}, headers={"HX-Request": "true", "HX-Target": "dialog-body"}
    )
    page = chosen.content.decode()
    assert chosen.status_code == 200, (chosen.status_code, chosen.get("Location"))
    assert "nexo-be in staging: 2026.02.2 → 2026.01.7" in page
    assert "staging goes back from 2026.02.2 to 2026.01.7." in page
    assert '<option value="2026.01.7" selected>2026.01.7</option>' in page


def test_without_javascript_the_rollback_page_asks_for_the_target_whose_consequences_it_shows(client, world):
    older = make_release(world["service"], "2026.01.7")
    ran(older, world["env"]["staging"], at=timezone.now() - timedelta(days=3))
    ran(make_release(world["service"], "2026.02.2"), world["env"]["staging"], at=timezone.now() + timedelta(minutes=1))
    url = "/services/nexo-be/environments/staging/rollback/"
    rita = as_user(client, world["rita"])

    def asked_for(page):
        """What the page's POST form would request, and whether it offers another target itself."""
        form = page[page.index('<form method="post"') : page.index("</form>", page.index('<form method="post"'))]
        hidden = re.search(r'<input type="hidden" name="release" value="([^"]*)"', form)
        return hidden and hidden.group(1), "<select" in form

    page = rita.get(url, {"next": "/"}).content.decode()
    assert "staging goes back from 2026.02.2 to 2026.02.1." in page
    assert asked_for(page) == ("2026.02.1", False)
    chooser = page[page.index('<form method="get"') : page.index("</form>", page.index('<form method="get"'))]
    assert '<option value="2026.01.7">2026.01.7</option>' in chooser
    assert '<option value="2026.02.1" selected>2026.02.1</option>' in chooser

    page = rita.get(url, {"release": "2026.01.7", "next": "/"}).content.decode()
    assert "staging goes back from 2026.02.2 to 2026.01.7." in page
    assert asked_for(page) == ("2026.01.7", False)
    response = rita.post(url, {"release": "2026.01.7", "running": "2026.02.2", "next": "/"})
    assert response.status_code == 302
    assert Promotion.objects.get(kind=PromotionKind.ROLLBACK).release == older


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "dialog"])
def test_a_rollback_target_that_never_ran_there_is_refused_by_name_not_replaced(client, world, htmx):
    ran(make_release(world["service"], "2026.02.2"), world["env"]["staging"], at=timezone.now() + timedelta(minutes=1))
    headers = {"HX-Request": "true", "HX-Target": "dialog-body"} if htmx else {}
    response = as_user(client, world["rita"]).get(
        "/services/nexo-be/environments/staging/rollback/", {"release": "2026.99.1"}, headers=headers
    )
    page = response.content.decode()
    assert response.status_code == 404
    assert "nexo-be 2026.99.1 is not a release staging can go back to: it may go back to 2026.02.1." in page
    assert "goes back from" not in page  # no other target described in its place
    assert '<form method="post"' not in page


def test_rollback_confirmations_say_the_freeze_is_there_and_that_a_rollback_goes_through_it(client, world):
    ran(make_release(world["service"], "2026.02.2"), world["env"]["staging"])
    ends_at = timezone.now() + timedelta(hours=5)
    ChangeFreeze.objects.create(
        environment=world["env"]["staging"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=ends_at,
        reason="quarter close",
    )
    frozen = (
        f"staging is frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: quarter close. "
        "A rollback goes through the freeze."
    )

    request_page = as_user(client, world["rita"]).get("/services/nexo-be/environments/staging/rollback/")
    assert frozen in consequences(request_page.content.decode())

    rollback = transitions.request_rollback(world["service"], world["env"]["staging"], world["rita"])
    approve_page = as_user(client, world["paulo"]).get(f"/promotions/{rollback.pk}/approve/")
    assert frozen in consequences(approve_page.content.decode())
    assert "You cannot do this" not in approve_page.content.decode()


def test_the_approval_of_a_break_glass_promotion_says_it_goes_through_the_freeze(client, world):
    promotion = transitions.request_promotion(
        world["release"], world["env"]["production"], world["rita"], is_emergency=True, reason="INC-7"
    )
    ends_at = timezone.now() + timedelta(hours=5)
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    page = as_user(client, world["sam"]).get(f"/promotions/{promotion.pk}/approve/").content.decode()
    assert (
        f"production is frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: Year-end freeze. "
        "A break-glass promotion goes through the freeze."
    ) in consequences(page)


def test_a_rollback_with_nothing_older_explains_there_is_nothing_to_go_back_to(client, world):
    page = as_user(client, world["rita"]).get("/services/nexo-be/environments/staging/rollback/").content.decode()
    assert "No release older than 2026.02.1 ever ran in staging; there is nothing to go back to." in page


def consequences(page):
    """The lines of a confirmation's "What will happen", as the person reads them."""
    listed = page[
        page.index('<ul class="consequences">') : page.index("</ul>", page.index('<ul class="consequences">'))
    ]
    return [html.unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in listed.split("<li>")[1:]]


def test_the_qa_confirmation_says_which_ci_results_it_waits_for_and_what_a_missing_one_does(client, world, settings):
    settings.PROMETHEUS_URL = "http://127.0.0.1:9"  # configured; nothing is asked
    qa = world["env"]["qa"]
    release = make_release(world["service"], "2026.02.2")
    ran(release, world["env"]["develop"])
    for name, passed in (("e2e", True), ("security", True), ("security", False)):  # the newest counts
        CheckResult.objects.create(release=release, environment=qa, name=name, passed=passed, reported_by="ci")

    page = as_user(client, world["rita"]).get("/services/nexo-be/environments/qa/promote/2026.02.2/").content.decode()

    lines = consequences(page)
    assert (
        "qa requires the CI results e2e, performance and security of 2026.02.2, reported before its soak ends; "
        "so far e2e passed, performance has not been reported and security failed."
    ) in lines, lines
    assert (
        "If the soak finds it failing (a required CI result reported failing, or a sample past qa's limits), "
        "it is rolled back to the last verified release automatically."
    ) in lines, lines
    assert (
        "If it fails only for want of measurements (a required CI result not reported by the end of the soak, "
        "a check that could not be measured, too few samples), it is not rolled back: 2026.02.2 stays in qa, "
        "the promotion is marked failed and a hold stops automatic promotions of nexo-be there until someone "
        "lifts it or a later release is verified there."
    ) in lines, lines
    assert "If verification fails, it is rolled back to the last verified release automatically." not in lines


def test_with_argo_cd_the_confirmation_says_another_revision_running_is_held_not_rolled_back(client, world, settings):
    """jobs._fail_soak has a third way out: Argo CD found running a revision without this release's commit,
    or with it but another tag in its values file (a revert pushed to the branch)."""
    settings.ARGOCD_URL, settings.ARGOCD_TOKEN = "http://127.0.0.1:9", "argocd-token"  # configured; nothing is asked
    release = make_release(world["service"], "2026.02.2")
    ran(release, world["env"]["develop"])

    page = as_user(client, world["rita"]).get("/services/nexo-be/environments/qa/promote/2026.02.2/").content.decode()

    lines = consequences(page)
    assert any("while the portal watches that Argo CD runs this release, Healthy" in line for line in lines), lines
    assert (
        "If Argo CD is found running a revision without this release's commit, or one whose values file names "
        "another tag (an argocd app rollback, a sync made outside the portal, a revert pushed to the branch), the "
        "soak fails at once and it is not rolled back either: whoever changed what runs is at work, and a hold on "
        "nexo-be there says so."
    ) in lines, lines


def test_without_ci_results_to_wait_for_the_confirmation_promises_no_hold_for_them(client, world):
    release = make_release(world["service"], "2026.02.2")
    ran(release, world["env"]["develop"])

    page = as_user(client, world["rita"]).get("/services/nexo-be/environments/develop/promote/2026.02.2/")

    assert "CI result" not in page.content.decode()


# --- acting ----------------------------------------------------------------------------------


def test_requesting_creates_the_promotion_and_goes_back_to_the_board_with_a_message(client, world):
    response = as_user(client, world["rita"]).post(REQUEST_URL, {"next": "/?team=backend-team"})
    assert response.status_code == 302
    assert response["Location"] == "/?team=backend-team"
    promotion = Promotion.objects.get(environment=world["env"]["production"])
    assert (promotion.state, promotion.requested_by) == (PromotionState.AWAITING_APPROVAL, world["rita"])
    assert messages_of(response) == [
        f"Requested nexo-be 2026.02.1 → production (promotion #{promotion.pk}): it waits for 2 approvals from "
        "platform-leads or sre-team."
    ]


def test_a_request_the_rules_refuse_changes_nothing_and_says_why(client, world):
    unverified = make_release(world["service"], "2026.02.2")
    response = as_user(client, world["rita"]).post(
        "/services/nexo-be/environments/production/promote/2026.02.2/", {"next": "/"}
    )
    assert response.status_code == 302
    assert messages_of(response) == [
        "nexo-be 2026.02.2 has not been verified in staging; it must pass there before it can enter production."
    ]
    assert not Promotion.objects.filter(release=unverified).exists()


def test_someone_outside_the_groups_is_refused_with_the_policy_reason(client, world):
    response = as_user(client, world["viewer"]).post(REQUEST_URL)
    assert "may request promotions of nexo-be into production" in messages_of(response)[0]
    assert not Promotion.objects.filter(environment=world["env"]["production"]).exists()


def test_break_glass_without_a_reason_is_sent_back_to_the_form(client, world):
    response = as_user(client, world["rita"]).post(REQUEST_URL, {"emergency": "on", "reason": "  "})
    assert response.status_code == 400
    assert "A break-glass promotion needs a reason: say which incident it is for." in response.content.decode()
    assert not Promotion.objects.filter(environment=world["env"]["production"]).exists()


def test_during_a_freeze_the_request_shows_its_break_glass_fields_unfolded(client, world):
    rita = as_user(client, world["rita"])
    assert '<details class="break-glass">' in rita.get(REQUEST_URL).content.decode()
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=5),
        reason="Year-end freeze",
    )
    page = rita.get(REQUEST_URL).content.decode()
    assert "Only a break-glass promotion may enter now." in page
    assert '<details class="break-glass" open>' in page


def test_during_a_freeze_a_request_without_break_glass_comes_back_saying_what_lets_it_through(client, world):
    ends_at = timezone.now() + timedelta(hours=5)
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )

    response = as_user(client, world["rita"]).post(REQUEST_URL, {"next": "/"})

    assert response.status_code == 400  # the form again, not a redirect to a banner
    assert messages_of(response) == []
    page = html.unescape(response.content.decode())
    form = page[page.index('<form method="post"') : page.index("</form>", page.index('<form method="post"'))]
    assert '<details class="break-glass" open>' in form
    checkbox = re.search(r"<input[^>]*id=\"id_emergency\"[^>]*>", form).group(0)
    assert "autofocus" in checkbox  # the field to put right has the keyboard
    ends = f"{timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}"
    refusal = (
        f'<p class="error" role="alert">production is frozen until {ends}: Year-end freeze. Only a break-glass '
        "promotion may enter now: mark this one break-glass and name the incident it is for, or wait until the "
        "freeze ends.</p>"
    )
    assert form.index(checkbox) < form.index(refusal) < form.index('id="id_reason"')  # under the box to tick
    assert not Promotion.objects.filter(environment=world["env"]["production"]).exists()


def test_break_glass_without_a_reason_puts_the_keyboard_on_the_reason(client, world):
    response = as_user(client, world["rita"]).post(REQUEST_URL, {"emergency": "on", "reason": ""})
    page = response.content.decode()
    assert re.search(r"<textarea[^>]*autofocus[^>]*id=\"id_reason\"|<textarea[^>]*id=\"id_reason\"[^>]*autofocus", page)
    assert not re.search(r"<input[^>]*id=\"id_emergency\"[^>]*autofocus", page)


def test_two_sres_approve_in_turn_and_the_second_approval_starts_the_commit(client, world):
    promotion = waiting_promotion(world)
    first = as_user(client, world["sam"]).post(
        f"/promotions/{promotion.pk}/approve/", {**pinned(promotion), "comment": "canary is clean"}
    )
    assert messages_of(first) == ["You approved nexo-be 2026.02.1 → production: 1 of 2 approvals so far."]
    second = as_user(client, world["lead"]).post(f"/promotions/{promotion.pk}/approve/", pinned(promotion))
    assert messages_of(second) == ["You approved nexo-be 2026.02.1 → production: the GitOps commit is on its way."]
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED
    assert list(promotion.approvals.values_list("user__username", "comment")) == [
        ("sam", "canary is clean"),
        ("lead", ""),
    ]
    assert second["Location"] == f"/promotions/{promotion.pk}/"  # no next: back to the promotion


def test_an_approval_that_became_the_last_one_needed_is_shown_again_not_given(client, world):
    """sam's dialog said "Yours is approval 1 of 2: 1 more … will be needed"; lead approved meanwhile, and
    sam's click started the production commit at once. The approval is held to what the dialog showed: it
    comes back saying what changed, as things stand now, with sam's comment; one more click approves."""
    promotion = waiting_promotion(world)
    sam = as_user(client, world["sam"])
    url = f"/promotions/{promotion.pk}/approve/"
    page = sam.get(url, {"next": "/"}).content.decode()
    assert "Yours is approval 1 of 2: 1 more from platform-leads or sre-team will be needed" in page
    transitions.approve(promotion, world["lead"])

    refused = sam.post(url, {**posted_by(page), "comment": "canary is clean"})

    assert refused.status_code == 400
    again = html.unescape(refused.content.decode())
    assert (
        "Since you opened this, lead approved: yours is now the last approval needed and starts the GitOps "
        "commit to production. Your approval is not given yet; approve again if you still mean to."
    ) in again
    assert "Yours is approval 2 of 2: the GitOps commit starts as soon as you approve." in again
    assert "canary is clean</textarea>" in again
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert list(promotion.approvals.values_list("user__username", flat=True)) == ["lead"]

    confirmed = sam.post(url, {**posted_by(refused.content.decode()), "comment": "canary is clean"})

    assert messages_of(confirmed) == ["You approved nexo-be 2026.02.1 → production: the GitOps commit is on its way."]
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED
    assert promotion.approvals.get(user=world["sam"]).comment == "canary is clean"


def test_an_approval_posted_without_what_its_page_showed_is_sent_back(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["sam"]).post(f"/promotions/{promotion.pk}/approve/", {"comment": "ok"})
    assert response.status_code == 400
    assert "did not say where the approvals stood" in html.unescape(response.content.decode())
    assert not Approval.objects.exists()


def test_the_requester_cannot_approve_their_own_request(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["rita"]).post(f"/promotions/{promotion.pk}/approve/", pinned(promotion))
    assert messages_of(response) == [
        "You requested this promotion; another approver from platform-leads or sre-team must approve it."
    ]
    assert not Approval.objects.exists()


def test_rejecting_needs_a_comment(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["sam"]).post(f"/promotions/{promotion.pk}/reject/", {"comment": "   "})
    assert response.status_code == 400
    assert "Say why you reject it: a comment is required." in response.content.decode()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.AWAITING_APPROVAL


def test_rejecting_with_a_comment_stops_the_promotion(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["sam"]).post(
        f"/promotions/{promotion.pk}/reject/", {"comment": "error budget spent", "next": "/"}
    )
    assert messages_of(response) == ["You rejected nexo-be 2026.02.1 → production."]
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.REJECTED
    assert AuditEvent.objects.get(action=AuditAction.PROMOTION_REJECTED).data["comment"] == "error budget spent"


def test_the_requester_cancels_and_a_stranger_cannot(client, world):
    promotion = waiting_promotion(world)
    refused = as_user(client, world["viewer"]).post(f"/promotions/{promotion.pk}/cancel/")
    assert messages_of(refused) == [
        "Only the requester, an approver of this environment or an administrator may cancel this promotion."
    ]
    done = as_user(client, world["rita"]).post(f"/promotions/{promotion.pk}/cancel/")
    assert messages_of(done) == ["You cancelled nexo-be 2026.02.1 → production."]
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.CANCELLED


def test_rolling_back_requests_the_chosen_older_release(client, world):
    newer = make_release(world["service"], "2026.02.2")
    ran(newer, world["env"]["staging"])
    response = as_user(client, world["rita"]).post(
        "/services/nexo-be/environments/staging/rollback/",
        {"release": "2026.02.1", "running": "2026.02.2", "next": "/"},
    )
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.release.version, rollback.environment.name) == ("2026.02.1", "staging")
    assert rollback.state == PromotionState.AWAITING_APPROVAL  # staging needs one approval, a rollback too
    assert messages_of(response)[0].startswith("Requested rollback of nexo-be in staging to 2026.02.1")


def posted_by(page):
    """What the page's POST form sends: its hidden fields (and no CSRF token: the test client skips it)."""
    start = page.index('<form method="post"')
    form = page[start : page.index("</form>", start)]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    fields.pop("csrfmiddlewaretoken", None)
    return fields


def test_a_rollback_confirmed_before_a_hotfix_went_out_does_not_take_the_hotfix_out(client, world):
    service, staging = world["service"], world["env"]["staging"]
    ran(make_release(service, "2026.02.2"), staging, at=timezone.now() + timedelta(minutes=1))
    ran(make_release(service, "2026.02.3"), staging, at=timezone.now() + timedelta(minutes=2))
    url = "/services/nexo-be/environments/staging/rollback/"
    rita = as_user(client, world["rita"])
    page = rita.get(url, {"release": "2026.02.2", "next": "/"}).content.decode()
    assert "nexo-be in staging: 2026.02.3 → 2026.02.2" in page
    confirmed = posted_by(page)
    assert confirmed["release"] == "2026.02.2"

    ran(make_release(service, "2026.02.4"), staging, at=timezone.now() + timedelta(minutes=3))  # a colleague's hotfix
    response = rita.post(url, confirmed)

    assert response.status_code == 302
    assert messages_of(response) == [
        "staging now runs nexo-be 2026.02.4, not 2026.02.3 as the rollback you confirmed said; nothing was "
        "requested. Look again at what runs there, and roll back 2026.02.4 if that is what you mean."
    ]
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


def test_a_rollback_posted_without_what_its_page_showed_running_is_sent_back(client, world):
    ran(make_release(world["service"], "2026.02.2"), world["env"]["staging"], at=timezone.now() + timedelta(minutes=1))
    response = as_user(client, world["rita"]).post(
        "/services/nexo-be/environments/staging/rollback/", {"release": "2026.02.1", "next": "/"}
    )
    assert response.status_code == 400
    assert "open the rollback again to see what runs in staging now" in response.content.decode()
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


def test_a_rollback_to_a_release_that_never_ran_there_is_a_form_error(client, world):
    make_release(world["service"], "2026.01.9")
    newer = make_release(world["service"], "2026.02.2")
    ran(newer, world["env"]["staging"])
    response = as_user(client, world["rita"]).post(
        "/services/nexo-be/environments/staging/rollback/", {"release": "2026.01.9"}
    )
    assert response.status_code == 400
    assert "Select a valid choice." in response.content.decode()
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


# --- safety ------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(world):
    promotion = waiting_promotion(world)
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["sam"])
    assert client.post(f"/promotions/{promotion.pk}/approve/").status_code == 403
    assert not Approval.objects.exists()


def test_a_post_with_the_token_of_the_confirmation_page_works(world):
    promotion = waiting_promotion(world)
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["sam"])
    page = client.get(f"/promotions/{promotion.pk}/approve/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    sent = {**posted_by(page), "csrfmiddlewaretoken": token}
    assert client.post(f"/promotions/{promotion.pk}/approve/", sent).status_code == 302
    assert Approval.objects.filter(user=world["sam"]).exists()


def test_next_never_leads_off_the_portal(client, world):
    promotion = waiting_promotion(world)
    response = as_user(client, world["sam"]).post(
        f"/promotions/{promotion.pk}/approve/", {**pinned(promotion), "next": "https://evil.example/"}
    )
    assert response["Location"] == f"/promotions/{promotion.pk}/"


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_actions_answer_only_get_and_post(client, world, method):
    promotion = waiting_promotion(world)
    assert getattr(as_user(client, world["sam"]), method)(f"/promotions/{promotion.pk}/approve/").status_code == 405


@pytest.mark.parametrize(
    "url",
    [
        "/services/nexo-be/environments/production/promote/2026.09.9/",
        "/services/nexo-be/environments/nowhere/promote/2026.02.1/",
        "/services/nexo-be/environments/nowhere/rollback/",
        "/promotions/999999/approve/",
    ],
)
def test_unknown_things_are_404(client, world, url):
    assert as_user(client, world["sam"]).get(url).status_code == 404


def test_actions_need_sign_in(client, world):
    promotion = waiting_promotion(world)
    response = client.post(f"/promotions/{promotion.pk}/approve/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Approval.objects.exists()


# --- holds ---------------------------------------------------------------------------------------------


def held_qa_with_a_build_waiting(world):
    """qa on hold after a rollback, and 2026.02.2 verified in develop meanwhile, waiting for qa."""
    from releases.models import Hold

    hold = Hold.objects.create(
        service=world["service"], environment=world["env"]["qa"], reason="Rolled back to 2026.02.1", placed_by="sam"
    )
    waiting = make_release(world["service"], "2026.02.2")
    ran(waiting, world["env"]["develop"])
    return hold, waiting


def test_the_board_shows_a_hold_with_its_reason_and_offers_to_lift_it_to_who_may(client, world):
    hold, _ = held_qa_with_a_build_waiting(world)
    page = as_user(client, world["rita"]).get("/").content.decode()
    assert "automatic promotions on hold: Rolled back to 2026.02.1" in page
    assert f'href="/holds/{hold.pk}/lift/?next=%2F" data-confirm data-action="lift"' in page
    stranger = as_user(client, world["viewer"]).get("/").content.decode()
    assert 'data-action="lift" title="Only people who may promote here may lift its hold."' in stranger


def test_lifting_a_hold_says_what_follows_then_promotes_the_build_that_waited(client, world):
    hold, waiting = held_qa_with_a_build_waiting(world)
    session = as_user(client, world["rita"])
    confirmation = session.get(f"/holds/{hold.pk}/lift/").content.decode()
    assert "Automatic promotions of nexo-be into qa resume. The hold said: Rolled back to 2026.02.1" in confirmation
    assert "The newest build verified in develop that waited, if any, is promoted into qa at once." in confirmation
    response = session.post(f"/holds/{hold.pk}/lift/", {"comment": "fixed the config", "next": "/"})
    hold.refresh_from_db()
    assert hold.lifted_by == world["rita"]
    promotion = Promotion.objects.get(environment=world["env"]["qa"], release=waiting)
    assert promotion.kind == PromotionKind.AUTO
    [message] = messages_of(response)
    assert message == (
        f"Automatic promotions of nexo-be in qa resumed. 2026.02.2 waited and is on its way "
        f"(promotion #{promotion.pk})."
    )
    lifted = AuditEvent.objects.get(action=AuditAction.HOLD_LIFTED)
    assert (lifted.actor, lifted.data["comment"]) == ("rita", "fixed the config")


def test_someone_who_may_not_promote_there_may_not_lift_the_hold(client, world):
    hold, _ = held_qa_with_a_build_waiting(world)
    response = as_user(client, world["viewer"]).post(f"/holds/{hold.pk}/lift/", {"next": "/"})
    assert "may lift its hold" in messages_of(response)[0]
    hold.refresh_from_db()
    assert hold.lifted_at is None


def test_the_promotion_page_shows_the_places_hold_and_who_may_lift_it(client, world):
    hold, _ = held_qa_with_a_build_waiting(world)
    promotion = Promotion.objects.get(environment=world["env"]["qa"], release=world["release"])
    page = as_user(client, world["rita"]).get(promotion.get_absolute_url()).content.decode()
    assert f'data-hold="{hold.pk}"' in page
    assert "Members of backend-team may lift it" in page
    assert f'href="/holds/{hold.pk}/lift/?next=' in page
