"""The promotion rules, enforced by the one module that changes promotion states."""

import re
from datetime import timedelta

import django_rq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze, Environment
from releases import policy, transitions
from releases.models import Deployment, Hold, Promotion, PromotionKind, PromotionState, StepRun
from releases.policy import PromotionError
from releases.reconciler import reconcile
from tests.factories import hex_for, make_release, make_service

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(environments, redis_connection, rita, paulo, sam, lead):
    service = make_service("nexo-be", team="backend-team")
    return {"service": service, "env": environments, "rita": rita, "paulo": paulo, "sam": sam, "lead": lead}


def verified_in(release, *environment_names, environments):
    """History: the release went through these environments and was verified there."""
    now = timezone.now()
    for name in environment_names:
        environment = environments[name]
        Deployment.objects.current().filter(service=release.service, environment=environment).update(replaced_at=now)
        promotion = Promotion.objects.create(
            release=release, environment=environment, state=PromotionState.VERIFIED, finished_at=now, deployed_at=now
        )
        Deployment.objects.create(
            service=release.service, environment=environment, release=release, promotion=promotion, deployed_at=now
        )


def queued_steps():
    """The steps RQ holds, as the step runs it delivers name them."""
    return [StepRun.objects.get(pk=job.args[0]).step for job in django_rq.get_queue("default").jobs]


def test_develop_takes_any_registered_release_and_enqueues_the_commit_after_commit(
    world, django_capture_on_commit_callbacks
):
    release = make_release(world["service"], "2026.02.1")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        promotion = transitions.request_promotion(release, world["env"]["develop"], world["rita"])
        assert queued_steps() == []  # nothing is enqueued before the transaction commits
    for callback in callbacks:
        callback()
    assert promotion.state == PromotionState.APPROVED
    assert queued_steps() == ["commit"]
    event = AuditEvent.objects.get(action=AuditAction.PROMOTION_REQUESTED)
    assert (event.actor, event.service, event.environment, event.version) == ("rita", "nexo-be", "develop", "2026.02.1")


def test_a_release_enters_an_environment_only_after_being_verified_in_the_one_before(world):
    release = make_release(world["service"], "2026.02.1")
    with pytest.raises(PromotionError, match=re.escape("nexo-be 2026.02.1 has not been verified in develop")):
        transitions.request_promotion(release, world["env"]["qa"], world["rita"])
    verified_in(release, "develop", environments=world["env"])
    assert transitions.request_promotion(release, world["env"]["qa"], world["rita"]).state == PromotionState.APPROVED


def test_production_needs_the_release_verified_in_staging_not_only_qa(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", environments=world["env"])
    with pytest.raises(PromotionError, match="has not been verified in staging"):
        transitions.request_promotion(release, world["env"]["production"], world["rita"])


def test_an_older_release_than_what_runs_needs_a_rollback(world):
    old, new = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    verified_in(old, "develop", environments=world["env"])
    verified_in(new, "develop", environments=world["env"])
    with pytest.raises(
        PromotionError,
        match=re.escape("develop runs nexo-be 2026.02.2, which is newer than 2026.02.1: request a rollback"),
    ):
        transitions.request_promotion(old, world["env"]["develop"], world["rita"])
    rollback = transitions.request_promotion(old, world["env"]["develop"], world["rita"], kind=PromotionKind.ROLLBACK)
    assert rollback.kind == PromotionKind.ROLLBACK


def test_the_release_already_running_is_refused(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", environments=world["env"])
    with pytest.raises(PromotionError, match="already runs in develop"):
        transitions.request_promotion(release, world["env"]["develop"], world["rita"])


def test_a_new_request_supersedes_one_waiting_for_approval_and_says_so(world):
    first, second = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    verified_in(first, "develop", "qa", environments=world["env"])
    verified_in(second, "develop", "qa", environments=world["env"])
    waiting = transitions.request_promotion(first, world["env"]["staging"], world["rita"])
    assert waiting.state == PromotionState.AWAITING_APPROVAL
    newer = transitions.request_promotion(second, world["env"]["staging"], world["rita"])
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.SUPERSEDED
    assert waiting.superseded_by == newer
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_SUPERSEDED, promotion_id=waiting.pk).exists()


def test_asking_again_for_the_release_that_waits_keeps_it_and_its_approvals(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    waiting = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    transitions.approve(waiting, world["sam"])
    with pytest.raises(
        PromotionError, match=rf"already awaiting approval \(promotion #{waiting.pk}, 1/2\); approve or cancel it"
    ):
        transitions.request_promotion(release, world["env"]["production"], world["rita"])
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.AWAITING_APPROVAL
    assert Promotion.objects.filter(environment=world["env"]["production"]).count() == 1
    with pytest.raises(PromotionError, match="already awaiting approval"):  # automatic or by hand alike
        transitions.request_promotion(release, world["env"]["production"], world["lead"], kind=PromotionKind.AUTO)


def test_a_new_request_is_refused_while_one_is_committing(world):
    first, second = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    committing = transitions.request_promotion(first, world["env"]["develop"], world["rita"])
    transitions.start_commit(committing)
    with pytest.raises(
        PromotionError, match=rf"nexo-be 2026.02.1 → develop is already committing \(promotion #{committing.pk}\)"
    ):
        transitions.request_promotion(second, world["env"]["develop"], world["rita"])


def test_a_change_freeze_refuses_promotions_and_names_itself(world):
    release = make_release(world["service"], "2026.02.1")
    ChangeFreeze.objects.create(
        environment=world["env"]["develop"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Black Friday",
    )
    with pytest.raises(PromotionError, match=r"develop is frozen until .*: Black Friday"):
        transitions.request_promotion(release, world["env"]["develop"], world["rita"])
    assert not Promotion.objects.exists()


@pytest.mark.parametrize(
    ("place", "what_lets_it_through", "field"),
    [
        (
            "production",
            "Only a break-glass promotion may enter now: mark this one break-glass and name the incident it is "
            "for, or wait until the freeze ends.",
            "emergency",
        ),
        ("develop", "It may be requested once the freeze ends.", None),  # develop allows no break-glass
    ],
)
def test_a_freeze_refusal_says_what_would_let_the_request_through(world, place, what_lets_it_through, field):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    ends_at = timezone.now() + timedelta(hours=1)
    ChangeFreeze.objects.create(
        environment=world["env"][place], starts_at=timezone.now() - timedelta(hours=1), ends_at=ends_at, reason="Audit"
    )
    with pytest.raises(PromotionError) as refused:
        transitions.request_promotion(release, world["env"][place], world["rita"])
    assert str(refused.value) == (
        f"{place} is frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: Audit. {what_lets_it_through}"
    )
    assert refused.value.field == field


def test_a_freeze_that_starts_after_the_request_holds_its_approvals_until_it_ends(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    production = world["env"]["production"]
    promotion = transitions.request_promotion(release, production, world["rita"])
    transitions.approve(promotion, world["sam"])
    freeze = ChangeFreeze.objects.create(
        environment=production,
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Year-end freeze",
    )

    with pytest.raises(PromotionError, match=r"production is frozen until .*: Year-end freeze"):
        transitions.approve(promotion, world["lead"])
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert promotion.approvals.count() == 1
    transitions.reject(promotion, world["lead"], "not during the freeze")  # deciding against it still may

    freeze.ends_at = timezone.now()
    freeze.save()
    again = transitions.request_promotion(release, production, world["rita"])
    transitions.approve(again, world["sam"])
    assert transitions.approve(again, world["lead"]).state == PromotionState.APPROVED


def test_a_freeze_that_is_over_or_not_started_does_not_block(world):
    release = make_release(world["service"], "2026.02.1")
    now = timezone.now()
    ChangeFreeze.objects.create(
        environment=world["env"]["develop"],
        starts_at=now - timedelta(days=2),
        ends_at=now - timedelta(days=1),
        reason="past",
    )
    ChangeFreeze.objects.create(
        environment=world["env"]["develop"],
        starts_at=now + timedelta(days=1),
        ends_at=now + timedelta(days=2),
        reason="future",
    )
    assert transitions.request_promotion(release, world["env"]["develop"], world["rita"]).pk


def test_staging_waits_for_one_approval_then_enqueues_the_commit_once(world, django_capture_on_commit_callbacks):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["staging"], world["rita"])
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert queued_steps() == []
    with django_capture_on_commit_callbacks(execute=True):
        promotion = transitions.approve(promotion, world["paulo"], "ship it")
    assert promotion.state == PromotionState.APPROVED
    assert queued_steps() == ["commit"]


def test_production_needs_two_distinct_approvers(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    promotion = transitions.approve(promotion, world["sam"])
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    with pytest.raises(
        PromotionError,
        match=(
            "You have already decided on this promotion; another approver from platform-leads or "
            "sre-team must approve it"
        ),
    ):
        transitions.approve(promotion, world["sam"])
    promotion = transitions.approve(promotion, world["lead"])
    assert promotion.state == PromotionState.APPROVED


def lead_approved(promotion, world):
    transitions.approve(promotion, world["lead"])


def approvals_voided(promotion, world):
    promotion.approvals.all().delete()  # as a push to its pull request voids them


def production_requires_three(promotion, world):
    Environment.objects.filter(name="production").update(required_approvals=3)


@pytest.mark.parametrize(
    ("approved_before", "since", "refusal"),
    [
        (False, None, None),
        (
            False,
            lead_approved,
            "Since you opened this, lead approved: yours is now the last approval needed and starts the GitOps "
            "commit to production.",
        ),
        (
            True,
            approvals_voided,
            "Since you opened this, the approval of lead no longer counts: yours is now approval 1 of 2: 1 more "
            "will be needed before anything changes.",
        ),
        (
            False,
            production_requires_three,
            "Since you opened this, production now requires 3 approvals: yours is now approval 1 of 3: 2 more will "
            "be needed before anything changes.",
        ),
    ],
)
def test_an_approval_is_held_to_where_the_approvals_stood_on_its_confirmation(world, approved_before, since, refusal):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    if approved_before:
        lead_approved(promotion, world)
    shown = policy.approvals_standing(promotion)
    if since:
        since(promotion, world)

    if refusal is None:
        transitions.approve(promotion, world["sam"], expected=shown)
        assert promotion.approvals.filter(user=world["sam"]).exists()
        return
    with pytest.raises(PromotionError) as refused:
        transitions.approve(promotion, world["sam"], expected=shown)
    assert str(refused.value) == refusal + " Your approval is not given yet; approve again if you still mean to."
    assert refused.value.field == "expected"
    assert not promotion.approvals.filter(user=world["sam"]).exists()


def test_lowering_the_approvals_a_place_requires_approves_what_now_has_enough(
    world, django_capture_on_commit_callbacks
):
    """Production lowered to one approval mid-incident: the promotion sam approved (1 of 2) went on
    waiting at "1/1" for a surplus approval, out of sam's list. The reconciler approves it."""
    production = world["env"]["production"]
    waiting = []
    for version in ("2026.02.1", "2026.02.2"):
        release = make_release(make_service(f"svc-{version[-1]}", team="backend-team"), version)
        verified_in(release, "develop", "qa", "staging", environments=world["env"])
        waiting.append(transitions.request_promotion(release, production, world["rita"]))
    approved_once = transitions.approve(waiting[0], world["sam"])
    assert transitions.approve_where_quorum_is_met() == []  # 1 of 2: nothing to do

    production.required_approvals = 1
    production.save()
    with django_capture_on_commit_callbacks(execute=True):
        approved = reconcile()["approved_at_quorum"]

    assert approved == [approved_once.pk]
    approved_once.refresh_from_db()
    assert approved_once.state == PromotionState.APPROVED
    assert queued_steps() == ["commit"]
    event = (
        AuditEvent.objects.filter(promotion_id=approved_once.pk, action=AuditAction.PROMOTION_APPROVED)
        .order_by("pk")
        .last()
    )
    assert (event.actor, event.message) == (
        "pipeline",
        "svc-1 2026.02.1 → production approved (1/1): production now requires 1 approval",
    )
    waiting[1].refresh_from_db()
    assert waiting[1].state == PromotionState.AWAITING_APPROVAL  # no approval at all yet


def test_a_lowered_quorum_does_not_approve_through_a_freeze(world, django_capture_on_commit_callbacks):
    """The reconciler follows the freeze as a person's approval does: approved during it, the promotion's
    commit would wait behind it and keep a rollback or a break-glass fix out of the place."""
    production = world["env"]["production"]
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.approve(transitions.request_promotion(release, production, world["rita"]), world["sam"])
    frozen = ChangeFreeze.objects.create(
        environment=production,
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="Year-end freeze",
    )
    production.required_approvals = 1
    production.save()

    assert reconcile()["approved_at_quorum"] == []
    frozen.delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile()["approved_at_quorum"] == [promotion.pk]


def test_a_rejection_needs_a_comment_and_ends_the_promotion(world):
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["staging"], world["rita"])
    with pytest.raises(PromotionError, match="a comment is required"):
        transitions.reject(promotion, world["paulo"], "  ")
    promotion = transitions.reject(promotion, world["paulo"], "the migration is not reversible")
    assert promotion.state == PromotionState.REJECTED
    with pytest.raises(PromotionError, match="only a promotion awaiting approval can be approved"):
        transitions.approve(promotion, world["paulo"])


def test_an_approver_who_finds_a_bug_may_still_reject_what_they_approved(world):
    """Approving once refused both buttons for good: sam, having found a bug after approving, had no way
    back. His rejection supersedes his approval, which the audit log keeps; approving twice stays refused."""
    release = make_release(world["service"], "2026.02.1")
    verified_in(release, "develop", "qa", "staging", environments=world["env"])
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    promotion = transitions.approve(promotion, world["sam"], "looks good")
    offered = dict(policy.offered_decisions(promotion, world["sam"]))
    assert offered["reject"] is None
    assert "already decided" in str(offered["approve"])

    promotion = transitions.reject(promotion, world["sam"], "found a bug in the migration")

    assert promotion.state == PromotionState.REJECTED
    assert [(a.user, a.decision, a.comment) for a in promotion.approvals.all()] == [
        (world["sam"], "reject", "found a bug in the migration")
    ]
    rejected = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_REJECTED)
    assert rejected.message == (
        "nexo-be 2026.02.1 → production rejected by sam; this withdraws the approval they gave earlier"
    )
    assert rejected.data["withdrawn_approval"]["comment"] == "looks good"


def test_cancel_before_the_commit_and_not_after(world):
    release = make_release(world["service"], "2026.02.1")
    promotion = transitions.request_promotion(release, world["env"]["develop"], world["rita"])
    transitions.start_commit(promotion)
    with pytest.raises(PromotionError, match="can only be cancelled before the GitOps commit starts"):
        transitions.cancel(promotion, world["rita"])
    other = make_release(world["service"], "2026.02.2")
    verified_in(other, "develop", "qa", environments=world["env"])
    waiting = transitions.request_promotion(other, world["env"]["staging"], world["rita"])
    assert transitions.cancel(waiting, world["rita"]).state == PromotionState.CANCELLED


def test_a_state_cannot_be_skipped(world):
    promotion = transitions.request_promotion(
        make_release(world["service"], "2026.02.1"), world["env"]["develop"], world["rita"]
    )
    with pytest.raises(PromotionError, match="is approved, not committing"):
        transitions.mark_committed(promotion, "a" * 40, "msg")
    with pytest.raises(PromotionError, match="is approved, not syncing"):
        transitions.mark_deployed(promotion)


def test_deploying_replaces_the_current_deployment_and_a_rollback_places_a_hold(world):
    old, new = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    verified_in(old, "develop", environments=world["env"])
    promotion = transitions.request_promotion(new, world["env"]["develop"], world["rita"])
    promotion = transitions.start_commit(promotion)
    promotion = transitions.mark_committed(promotion, "b" * 40, "promote(nexo-be): develop → 2026.02.2")
    promotion = transitions.mark_syncing(promotion, configured=False)
    promotion = transitions.mark_deployed(promotion)
    current = Deployment.objects.current().get(service=world["service"], environment=world["env"]["develop"])
    assert current.release == new
    assert current.promotion == promotion
    assert Deployment.objects.get(release=old).replaced_at == current.deployed_at

    promotion = transitions.mark_verifying(promotion, configured=False)
    promotion = transitions.mark_verified(promotion)
    rollback = transitions.request_rollback(world["service"], world["env"]["develop"], world["rita"])
    assert (rollback.release, rollback.kind, rollback.rolls_back) == (old, PromotionKind.ROLLBACK, promotion)
    rollback = transitions.start_commit(rollback)
    rollback = transitions.mark_committed(rollback, "c" * 40, "rollback(nexo-be): develop → 2026.02.1")
    rollback = transitions.mark_deployed(transitions.mark_syncing(rollback, configured=False))
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.ROLLED_BACK
    assert Deployment.objects.current().get(service=world["service"], environment=world["env"]["develop"]).is_rollback
    assert Hold.objects.active().filter(service=world["service"], environment=world["env"]["develop"]).exists()


def test_a_rollback_where_nothing_is_promoted_automatically_places_no_hold(world):
    old, new = make_release(world["service"], "2026.02.1"), make_release(world["service"], "2026.02.2")
    verified_in(old, "develop", "qa", "staging", environments=world["env"])
    verified_in(new, "develop", "qa", "staging", environments=world["env"])
    staging = world["env"]["staging"]
    rollback = transitions.request_rollback(world["service"], staging, world["rita"], release=old)
    rollback = transitions.approve(rollback, world["paulo"])
    rollback = transitions.start_commit(rollback)
    rollback = transitions.mark_committed(rollback, "e" * 40, "rollback(nexo-be): staging → 2026.02.1")
    rollback = transitions.mark_deployed(transitions.mark_syncing(rollback, configured=False))

    assert Deployment.objects.current().get(service=world["service"], environment=staging).release == old
    assert not Hold.objects.filter(service=world["service"], environment=staging).exists()


def test_auto_promotion_to_qa_waits_while_qa_is_on_hold_and_goes_when_it_is_lifted(world):
    release = make_release(world["service"], "2026.02.1")
    promotion = transitions.request_promotion(release, world["env"]["develop"], None, kind=PromotionKind.AUTO)
    for step in (transitions.start_commit, lambda p: transitions.mark_committed(p, "d" * 40, "m")):
        promotion = step(promotion)
    promotion = transitions.mark_deployed(transitions.mark_syncing(promotion, configured=False))
    Hold.objects.create(
        service=world["service"], environment=world["env"]["qa"], reason="rolled back", placed_by="pipeline"
    )
    transitions.mark_verified(transitions.mark_verifying(promotion, configured=False))
    assert not Promotion.objects.filter(environment=world["env"]["qa"]).exists()
    waits = AuditEvent.objects.get(action=AuditAction.PROMOTION_DEFERRED)
    assert waits.message == (
        "nexo-be 2026.02.1 waits to enter qa: Automatic promotions of nexo-be into qa are on hold (rolled back). "
        "Lift the hold to resume them; a person may still request a promotion."
    )

    hold = transitions.lift_hold(Hold.objects.get(), world["rita"])
    auto = Promotion.objects.get(environment=world["env"]["qa"])
    assert hold.promoted == auto
    assert (auto.release, auto.kind, auto.state, auto.requested_via) == (
        release,
        PromotionKind.AUTO,
        PromotionState.APPROVED,
        "pipeline",
    )


def test_a_build_verified_while_qa_is_busy_goes_to_qa_when_it_frees_up_and_only_the_newest(world):
    in_qa = make_release(world["service"], "2026.02.1")
    verified_in(in_qa, "develop", environments=world["env"])
    busy = transitions.request_promotion(in_qa, world["env"]["qa"], world["rita"])
    older, newest = make_release(world["service"], "2026.02.2"), make_release(world["service"], "2026.02.3")
    for release in (older, newest):
        promotion = transitions.request_promotion(release, world["env"]["develop"], None, kind=PromotionKind.AUTO)
        promotion = transitions.mark_committed(transitions.start_commit(promotion), "e" * 40, "m")
        promotion = transitions.mark_deployed(transitions.mark_syncing(promotion, configured=False))
        transitions.mark_verified(transitions.mark_verifying(promotion, configured=False))
    assert list(Promotion.objects.filter(environment=world["env"]["qa"]).values_list("release", flat=True)) == [
        in_qa.pk
    ]
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_DEFERRED).count() == 2

    busy = transitions.mark_committed(transitions.start_commit(busy), "f" * 40, "m")
    busy = transitions.mark_deployed(transitions.mark_syncing(busy, configured=False))
    transitions.mark_verified(transitions.mark_verifying(busy, configured=False))
    went = Promotion.objects.filter(environment=world["env"]["qa"]).exclude(pk=busy.pk).get()
    assert (went.release, went.kind) == (newest, PromotionKind.AUTO)


def test_rollback_defaults_to_the_last_verified_release(world):
    releases = [make_release(world["service"], f"2026.02.{n}") for n in (1, 2, 3)]
    for release in releases:
        verified_in(release, "develop", environments=world["env"])
    Promotion.objects.filter(release=releases[1]).update(state=PromotionState.FAILED)
    rollback = transitions.request_rollback(world["service"], world["env"]["develop"], world["rita"])
    assert rollback.release == releases[0]


def test_a_rollback_must_go_to_an_older_release_that_ran_there(world):
    one, two, three = (make_release(world["service"], f"2026.02.{n}") for n in (1, 2, 3))
    verified_in(two, "develop", environments=world["env"])
    with pytest.raises(PromotionError, match=re.escape("2026.02.3 is not older")):
        transitions.request_promotion(three, world["env"]["develop"], world["rita"], kind=PromotionKind.ROLLBACK)
    with pytest.raises(PromotionError, match=re.escape("nexo-be 2026.02.1 never ran in develop")):
        transitions.request_promotion(one, world["env"]["develop"], world["rita"], kind=PromotionKind.ROLLBACK)


def test_a_hold_on_the_first_environment_stops_deploys_on_registration_but_not_people(world):
    from releases.registration import register_build

    Hold.objects.create(
        service=world["service"], environment=world["env"]["develop"], reason="rolled back", placed_by="pipeline"
    )
    registered = register_build(
        world["service"], commit_sha=hex_for("held"), image_digest="sha256:" + "e" * 64, actor=world["rita"]
    )
    assert registered.release.pk
    assert registered.promotion is None
    assert not Promotion.objects.filter(environment=world["env"]["develop"]).exists()
    with pytest.raises(PromotionError, match=r"on hold \(rolled back\)\. Lift the hold"):
        transitions.request_promotion(registered.release, world["env"]["develop"], None, kind=PromotionKind.AUTO)
    asked = transitions.request_promotion(registered.release, world["env"]["develop"], world["rita"])
    assert asked.kind == PromotionKind.MANUAL


def test_starting_the_commit_of_a_loaded_promotion_locks_its_row_without_reading_what_never_changes(world):
    release = make_release(world["service"], "2026.02.1")
    promotion = transitions.request_promotion(release, world["env"]["develop"], world["rita"])
    loaded = Promotion.objects.select_related(*transitions.FIXED_RELATIONS).get(pk=promotion.pk)
    with CaptureQueriesContext(connection) as queries:
        started = transitions.start_commit(loaded)
    statements = [query["sql"] for query in queries.captured_queries]
    row_lock = next(sql for sql in statements if "FOR UPDATE" in sql)
    assert "JOIN" not in row_lock
    assert not [
        sql
        for sql in statements
        if any(table in sql for table in ('"releases_release"', '"releases_service"', '"environments_environment"'))
    ]
    assert (started.state, started.service.name, started.release.version) == (
        PromotionState.COMMITTING,
        "nexo-be",
        "2026.02.1",
    )
    assert loaded.state == PromotionState.APPROVED, "the caller's instance is left as it was"


def test_approvals_are_counted_afresh_even_from_a_promotion_with_stale_approvals_loaded(world):
    verified_in(make_release(world["service"], "2026.02.1"), "develop", "qa", "staging", environments=world["env"])
    release = world["service"].releases.get(version="2026.02.1")
    promotion = transitions.request_promotion(release, world["env"]["production"], world["rita"])
    stale = (
        Promotion.objects.select_related(*transitions.FIXED_RELATIONS)
        .prefetch_related("approvals")
        .get(pk=promotion.pk)
    )
    assert list(stale.approvals.all()) == []
    transitions.approve(promotion, world["sam"])
    after = transitions.approve(stale, world["lead"])  # the loaded list still says nobody approved
    assert after.state == PromotionState.APPROVED
    assert after.approvals.count() == 2


def test_a_step_follows_the_environment_as_it_is_now_not_as_the_caller_loaded_it(world):
    release = make_release(world["service"], "2026.02.1")
    deployed = Promotion.objects.create(
        release=release, environment=world["env"]["develop"], state=PromotionState.DEPLOYED
    )
    loaded = Promotion.objects.select_related(*transitions.FIXED_RELATIONS).get(pk=deployed.pk)
    world["env"]["develop"].verification_window = timedelta(minutes=42)  # changed in the admin meanwhile
    world["env"]["develop"].save()
    verifying = transitions.mark_verifying(loaded, configured=True)
    assert verifying.verdict_at - verifying.verification_started_at == timedelta(minutes=42)


def test_a_build_a_newer_one_overtook_says_so_on_its_page(world, client):
    in_qa = make_release(world["service"], "2026.02.1")
    verified_in(in_qa, "develop", environments=world["env"])
    busy = transitions.request_promotion(in_qa, world["env"]["qa"], world["rita"])
    older, newest = make_release(world["service"], "2026.02.2"), make_release(world["service"], "2026.02.3")
    for release in (older, newest):
        promotion = transitions.request_promotion(release, world["env"]["develop"], None, kind=PromotionKind.AUTO)
        promotion = transitions.mark_committed(transitions.start_commit(promotion), "e" * 40, "m")
        promotion = transitions.mark_deployed(transitions.mark_syncing(promotion, configured=False))
        transitions.mark_verified(transitions.mark_verifying(promotion, configured=False))
    busy = transitions.mark_committed(transitions.start_commit(busy), "f" * 40, "m")
    busy = transitions.mark_deployed(transitions.mark_syncing(busy, configured=False))
    transitions.mark_verified(transitions.mark_verifying(busy, configured=False))
    client.force_login(world["rita"])
    page = client.get(older.get_absolute_url()).content.decode()
    went = Promotion.objects.get(environment=world["env"]["qa"], release=newest)
    assert "Not promoted here: a newer build," in page
    assert f'<a href="{went.get_absolute_url()}">2026.02.3</a>, went instead once qa was free.' in page


def soaked(promotion):
    """Through commit and sync to its soak, as the jobs take it (no Argo CD, no checker configured)."""
    promotion = transitions.mark_committed(transitions.start_commit(promotion), "a" * 40, "m")
    promotion = transitions.mark_deployed(transitions.mark_syncing(promotion, configured=False))
    return transitions.mark_verifying(promotion, configured=False)


UNMEASURED = "as the soak could not measure it, which says nothing against it"


def test_a_later_release_verified_where_the_portal_held_an_earlier_one_lifts_the_hold_saying_so(world):
    service, qa = world["service"], world["env"]["qa"]
    failed, later, next_build = (make_release(service, f"2026.12.{n}") for n in (2, 3, 4))
    verified_in(failed, "develop", environments=world["env"])
    held = soaked(transitions.request_promotion(failed, qa, None, kind=PromotionKind.AUTO))
    transitions.fail(held, "verification", "no e2e result was reported by CI", roll_back=False, kept_because=UNMEASURED)
    hold = Hold.objects.active().get(service=service, environment=qa)
    verified_in(later, "develop", environments=world["env"])

    transitions.mark_verified(soaked(transitions.request_promotion(later, qa, world["rita"])))

    hold.refresh_from_db()
    assert hold.lifted_at is not None
    assert hold.lifted_by is None  # the pipeline lifted it
    lifted = AuditEvent.objects.get(action=AuditAction.HOLD_LIFTED)
    assert (lifted.actor, lifted.service, lifted.environment, lifted.version) == (
        "pipeline",
        "nexo-be",
        "qa",
        "2026.12.3",
    )
    assert lifted.message == (
        "Automatic promotions of nexo-be into qa resumed: 2026.12.3 was verified there, after 2026.12.2, "
        "whose failure had put them on hold"
    )
    assert lifted.data["reason"] == hold.reason
    develop = transitions.request_promotion(next_build, world["env"]["develop"], None, kind=PromotionKind.AUTO)
    transitions.mark_verified(soaked(develop))
    assert Promotion.objects.filter(release=next_build, environment=qa, kind=PromotionKind.AUTO).exists()
    assert not AuditEvent.objects.filter(action=AuditAction.PROMOTION_DEFERRED).exists()


def test_a_hotfix_of_the_release_the_portal_held_verified_there_lifts_the_hold(world):
    service, qa = world["service"], world["env"]["qa"]
    failed = make_release(service, "2026.12.2")
    hotfix = make_release(service, "2026.12.1-hotfix-auth", is_hotfix=True, fixes=failed)  # numbered below it
    verified_in(failed, "develop", environments=world["env"])
    transitions.fail(
        soaked(transitions.request_promotion(failed, qa, None, kind=PromotionKind.AUTO)),
        "verification",
        "no e2e result was reported by CI",
        roll_back=False,
        kept_because=UNMEASURED,
    )
    verified_in(hotfix, "develop", environments=world["env"])

    transitions.mark_verified(soaked(transitions.request_promotion(hotfix, qa, world["rita"])))

    assert not Hold.objects.active().exists()


def test_the_automatic_rollback_verified_keeps_its_hold_and_a_later_release_lifts_it(world):
    service, qa = world["service"], world["env"]["qa"]
    good, bad, later = (make_release(service, f"2026.12.{n}") for n in (1, 2, 3))
    verified_in(good, "develop", "qa", environments=world["env"])
    verified_in(bad, "develop", environments=world["env"])
    failing = soaked(transitions.request_promotion(bad, qa, None, kind=PromotionKind.AUTO))
    transitions.fail(failing, "verification", "error rate 7 % above 1 %")
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)

    transitions.mark_verified(soaked(rollback))

    hold = Hold.objects.active().get(service=service, environment=qa)
    assert hold.reason == f"Rolled back to 2026.12.1 by promotion #{rollback.pk}"
    verified_in(later, "develop", environments=world["env"])
    transitions.mark_verified(soaked(transitions.request_promotion(later, qa, world["rita"])))
    assert not Hold.objects.active().exists()


def test_a_hold_a_persons_rollback_placed_stays_when_a_later_release_is_verified(world):
    service, qa = world["service"], world["env"]["qa"]
    good, doubtful, later = (make_release(service, f"2026.12.{n}") for n in (1, 2, 3))
    verified_in(good, "develop", "qa", environments=world["env"])
    verified_in(doubtful, "develop", "qa", environments=world["env"])
    rollback = transitions.request_rollback(service, qa, world["rita"], release=good)
    transitions.mark_verified(soaked(rollback))
    verified_in(later, "develop", environments=world["env"])

    transitions.mark_verified(soaked(transitions.request_promotion(later, qa, world["rita"])))

    hold = Hold.objects.active().get(service=service, environment=qa)
    assert hold.placed_by == "rita"
    assert not AuditEvent.objects.filter(action=AuditAction.HOLD_LIFTED).exists()


def test_a_persons_rollback_after_the_portals_hold_keeps_the_hold_a_later_release_is_verified(world):
    """The hold the portal placed took the person's rollback as its newer reason: theirs now, it stays."""
    service, qa = world["service"], world["env"]["qa"]
    good, failed, later = (make_release(service, f"2026.12.{n}") for n in (1, 2, 3))
    verified_in(good, "develop", "qa", environments=world["env"])
    verified_in(failed, "develop", environments=world["env"])
    transitions.fail(
        soaked(transitions.request_promotion(failed, qa, None, kind=PromotionKind.AUTO)),
        "verification",
        "no e2e result was reported by CI",
        roll_back=False,
        kept_because=UNMEASURED,
    )
    rollback = transitions.request_rollback(service, qa, world["rita"], release=good)
    transitions.mark_verified(soaked(rollback))
    verified_in(later, "develop", environments=world["env"])
    transitions.mark_verified(soaked(transitions.request_promotion(later, qa, world["rita"])))

    hold = Hold.objects.active().get(service=service, environment=qa)
    assert hold.reason == f"Rolled back to 2026.12.1 by promotion #{rollback.pk}"
