"""The database itself refuses bad data, whatever path it comes by."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone

from environments.models import ChangeFreeze
from releases.models import Approval, ApprovalDecision, Deployment, Promotion, PromotionState, Release, Service
from tests.factories import hex_for, make_release, make_service, make_user

pytestmark = pytest.mark.django_db


def refused(create):
    with pytest.raises(DatabaseError), transaction.atomic():
        create()


@pytest.mark.parametrize("name", ["../etc", "Nexo-BE", "nexo_be", "-nexo", "nexo-", "nexo be", "a/b", ""])
def test_database_refuses_a_service_name_that_is_not_a_slug(name):
    refused(lambda: Service.objects.create(name=name, image_repository="ghcr.io/x"))


def test_database_accepts_a_slug_service_name():
    assert Service.objects.create(name="nexo-be2", image_repository="ghcr.io/x").pk


def test_database_refuses_a_tag_key_path_with_tricks():
    refused(lambda: make_service(image_tag_key="image..tag"))


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "sha256:" + "G" * 64, "md5:" + "a" * 64, "sha256:" + "A" * 64, "sha256:" + "a" * 65]
)
def test_database_refuses_a_bad_image_digest(digest):
    service = make_service()
    refused(lambda: make_release(service, "2026.02.1", image_digest=digest))


@pytest.mark.parametrize("sha", ["abc123", "z" * 40, "A" * 40, "a" * 41])
def test_database_refuses_a_bad_commit_sha(sha):
    service = make_service()
    refused(lambda: make_release(service, "2026.02.1", commit_sha=sha))


def test_database_refuses_a_duplicate_version():
    service = make_service()
    make_release(service, "2026.02.1")
    refused(lambda: make_release(service, "2026.02.1", commit_sha=hex_for("other")))


def test_database_refuses_a_reused_build_number_with_other_metadata():
    service = make_service()
    make_release(service, "2026.02.1")
    refused(lambda: make_release(service, "2026.02.1-hotfix"))


def test_same_version_is_fine_for_two_services():
    make_release(make_service(), "2026.02.1")
    assert make_release(make_service(), "2026.02.1").pk


def test_database_refuses_a_second_active_promotion_for_one_service_and_environment(environments):
    service = make_service()
    first, second = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    Promotion.objects.create(release=first, environment=environments["staging"])
    refused(lambda: Promotion.objects.create(release=second, environment=environments["staging"]))


def test_finished_promotions_do_not_block_a_new_one(environments):
    service = make_service()
    first, second = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    Promotion.objects.create(release=first, environment=environments["staging"], state=PromotionState.VERIFIED)
    assert Promotion.objects.create(release=second, environment=environments["staging"]).pk


def test_database_refuses_a_break_glass_promotion_without_reason(environments):
    release = make_release(make_service(), "2026.02.1")
    refused(
        lambda: Promotion.objects.create(release=release, environment=environments["production"], is_emergency=True)
    )


def test_database_refuses_a_rejection_without_comment(environments):
    promotion = Promotion.objects.create(
        release=make_release(make_service(), "2026.02.1"), environment=environments["staging"]
    )
    refused(lambda: Approval.objects.create(promotion=promotion, user=make_user(), decision=ApprovalDecision.REJECT))


def test_database_refuses_two_decisions_by_one_user(environments):
    promotion = Promotion.objects.create(
        release=make_release(make_service(), "2026.02.1"), environment=environments["staging"]
    )
    user = make_user()
    Approval.objects.create(promotion=promotion, user=user, decision=ApprovalDecision.APPROVE)
    refused(lambda: Approval.objects.create(promotion=promotion, user=user, decision=ApprovalDecision.APPROVE))


def test_database_refuses_a_freeze_that_ends_before_it_starts(environments):
    now = timezone.now()
    refused(
        lambda: ChangeFreeze.objects.create(
            environment=environments["production"], starts_at=now, ends_at=now - timedelta(hours=1), reason="x"
        )
    )


@pytest.mark.parametrize("field", ["verification_window", "rollback_verification_window"])
def test_a_soak_longer_than_a_year_is_refused_by_the_form_and_the_database(environments, field):
    from django.core.exceptions import ValidationError

    from environments.models import Environment

    staging = environments["staging"]
    setattr(staging, field, timedelta(days=3_000_000))  # what the admin's duration field accepts
    with pytest.raises(ValidationError) as refusal:
        staging.full_clean()
    assert "at most 366 days" in " ".join(refusal.value.message_dict[field])
    refused(lambda: Environment.objects.filter(pk=staging.pk).update(**{field: timedelta(days=367)}))
    staging.refresh_from_db()
    setattr(staging, field, timedelta(days=366))
    staging.promotion_slo_minutes = 366 * 24 * 60 + 60  # the target counts the soak
    staging.full_clean()


def test_database_refuses_two_current_deployments_in_one_place(environments):
    service = make_service()
    now = timezone.now()
    first, second = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    Deployment.objects.create(service=service, environment=environments["qa"], release=first, deployed_at=now)
    refused(
        lambda: Deployment.objects.create(
            service=service, environment=environments["qa"], release=second, deployed_at=now
        )
    )


def test_release_version_is_validated_before_saving():
    from releases.calver import InvalidVersion

    with pytest.raises(InvalidVersion):
        make_release(make_service(), "2026.13.1")
    assert not Release.objects.exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "carrier_pigeon"},
        {"sent_at": timezone.now(), "given_up_at": timezone.now(), "last_error": "refused"},
        {"given_up_at": timezone.now()},
    ],
    ids=["unknown kind", "sent and given up", "given up without a reason"],
)
def test_database_refuses_a_notice_that_contradicts_itself(fields):
    from releases.models import Notice, NoticeKind

    refused(lambda: Notice.objects.create(**{"kind": NoticeKind.FAILURE_ALERT, "args": [1], **fields}))
