"""Every admin changelist, change page and add page renders for an operator; the actions do what they confirm."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from nexo_portal.models import ApiToken
from releases.models import Deployment, Promotion, PromotionKind
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db

# django-rq registers an unmanaged "Dashboard" model that only links to its own views.
MODELS = sorted((model for model in admin.site._registry if model._meta.managed), key=lambda model: model._meta.label)


@pytest.fixture
def operator(client, django_user_model, tmp_path, settings):
    settings.GITOPS_REPO_URL = str(tmp_path / "gitops.git")
    call_command("seed_demo", force=True, stdout=StringIO())
    user = django_user_model.objects.create_superuser("operator", "op@nexo.invalid", "pw-for-tests-only")
    client.force_login(user)
    return client


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_changelist_renders_with_its_rows(operator):
    failures = []
    for model in MODELS:
        response = operator.get(admin_url(model, "changelist"))
        if response.status_code != 200:
            failures.append(f"{model._meta.label}: HTTP {response.status_code}")
        elif model.objects.exists() and response.context["cl"].result_count == 0:
            failures.append(f"{model._meta.label}: rows exist but the changelist shows none")
    assert failures == []


def test_the_admin_index_names_every_section_in_words(operator):
    """Not an app's module name: NEXO_PORTAL said nothing of the tokens and trust policies under it."""
    sections = re.findall(
        r'<caption>\s*<a [^>]*class="section"[^>]*>([^<]+)</a>', operator.get(reverse("admin:index")).content.decode()
    )
    assert "API access" in sections
    assert not [section for section in sections if "_" in section]


def test_every_change_page_renders(operator):
    from datetime import timedelta

    from django.utils import timezone

    from environments.models import ChangeFreeze, Environment
    from releases.models import BuildCounter, Service

    ChangeFreeze.objects.create(
        environment=Environment.objects.get(name="production"),
        starts_at=timezone.now(),
        ends_at=timezone.now() + timedelta(days=1),
        reason="Black Friday",
    )
    BuildCounter.allocate(Service.objects.first(), 2026, 11)
    failures, checked = [], 0
    for model in MODELS:
        obj = model.objects.order_by("pk").first()
        if obj is None:
            continue
        checked += 1
        response = operator.get(admin_url(model, "change", obj.pk))
        if response.status_code != 200:
            failures.append(f"{model._meta.label}: HTTP {response.status_code}")
    assert failures == []
    assert checked >= 11


# What only the portal itself writes: adding one by hand would forge history.
WRITTEN_BY_THE_PORTAL = {
    "audit.AuditEvent",
    "releases.Approval",
    "releases.ApprovalNotice",
    "releases.BuildCounter",
    "releases.CheckResult",
    "releases.Deployment",
    "releases.DeploymentEvent",
    "releases.Hold",
    "releases.Notice",
    "releases.Promotion",
    "releases.VerificationSample",
    "axes.AccessAttempt",
    "axes.AccessFailureLog",
    "axes.AccessLog",  # sign-in attempts (django-axes)
}


def test_every_add_page_renders_or_is_refused_for_records_the_portal_writes(operator):
    failures = []
    for model in MODELS:
        response = operator.get(admin_url(model, "add"))
        expected = 403 if model._meta.label in WRITTEN_BY_THE_PORTAL else 200
        if response.status_code != expected:
            failures.append(f"{model._meta.label}: HTTP {response.status_code}, expected {expected}")
    assert failures == []
    assert {model._meta.label for model in MODELS} >= WRITTEN_BY_THE_PORTAL


def test_help_texts_show_their_placeholders_whole(operator):
    # The admin renders help texts as HTML: "api-token:<name>" would reach the reader as "api-token:".
    token = operator.get(admin_url(ApiToken, "add")).content.decode()
    event = operator.get(admin_url(AuditEvent, "change", AuditEvent.objects.order_by("pk").first().pk))
    for page in (token, event.content.decode()):
        assert re.search(r"api-token:<[a-z]+>", page) is None
    assert "api-token:github-actions-nexo-be" in token
    assert "api-token:NAME" in event.content.decode()


def test_filters_and_search_work_on_the_busy_changelists(operator):
    from releases.models import Promotion, Release, Service

    nexo_be = Service.objects.get(name="nexo-be")
    response = operator.get(admin_url(Release, "changelist"), {"q": "2026", "service__id__exact": nexo_be.pk})
    assert response.status_code == 200
    shown = response.context["cl"].result_count
    assert shown == Release.objects.filter(service=nexo_be, version__contains="2026").count() > 0
    assert shown < Release.objects.count(), "the filter left other services' releases out"
    response = operator.get(admin_url(Promotion, "changelist"), {"state__exact": "awaiting_approval"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_audit_log_is_read_only_in_the_admin(operator):
    event = AuditEvent.objects.first()
    response = operator.post(admin_url(AuditEvent, "change", event.pk), {"message": "edited"})
    assert response.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).message == event.message
    assert operator.post(admin_url(AuditEvent, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_rq_dashboard_is_for_staff_only(operator, client, django_user_model, redis_connection):
    assert operator.get("/admin/rq/").status_code == 200
    client.force_login(django_user_model.objects.create_user("visitor", password="pw-for-tests-only"))
    response = client.get("/admin/rq/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_freezes_made_changed_and_deleted_in_the_admin_are_audited(operator):
    from environments.models import ChangeFreeze, Environment

    production = Environment.objects.get(name="production")
    response = operator.post(
        admin_url(ChangeFreeze, "add"),
        {
            "environment": production.pk,
            "starts_at_0": "2026-11-27",
            "starts_at_1": "00:00:00",
            "ends_at_0": "2026-11-30",
            "ends_at_1": "23:59:00",
            "reason": "Black Friday",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    freeze = ChangeFreeze.objects.get()
    operator.post(admin_url(ChangeFreeze, "delete", freeze.pk), {"post": "yes"})
    assert not ChangeFreeze.objects.exists()
    events = list(
        AuditEvent.objects.filter(action__startswith="freeze.")
        .order_by("id")
        .values_list("action", "actor", "environment")
    )
    assert events == [("freeze.created", "operator", "production"), ("freeze.deleted", "operator", "production")]
    assert "Black Friday" in AuditEvent.objects.get(action="freeze.created").message


def post_data(form, **changes):
    """What the browser would post back for an unchanged admin form, with `changes` applied."""
    data = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form[name].value()
        if hasattr(field.widget, "widgets"):  # a split date + time widget
            for index, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{index}"] = "" if part is None else str(part)
        elif isinstance(value, (list, tuple)):
            data[name] = [getattr(item, "pk", item) for item in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    data.update(changes)
    return data


def change_page_data(operator, url, **changes):
    """What the browser would post back for the change page at `url`, inlines included, with `changes`."""
    response = operator.get(url)
    data = post_data(response.context["adminform"].form, **changes)
    for formset in response.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({management.add_prefix(name): value for name, value in management.initial.items()})
        for form in formset.formset.forms:
            data.update({form.add_prefix(name): value for name, value in post_data(form).items()})
    return data


def change(operator, model, obj, **changes):
    url = admin_url(model, "change", obj.pk)
    answer = operator.post(url, change_page_data(operator, url, **changes))
    assert answer.status_code == 302, answer.context["adminform"].form.errors if answer.context else answer
    return answer


def test_who_may_approve_changed_in_the_admin_is_audited_before_and_after(operator):
    from django.contrib.auth.models import Group

    from environments.models import Environment

    production = Environment.objects.get(name="production")
    platform = Group.objects.get(name="platform-team")
    groups = [group.pk for group in production.approver_groups.all()] + [platform.pk]
    change(operator, Environment, production, required_approvals=3, approver_groups=groups)
    event = AuditEvent.objects.filter(action="admin.changed").get()
    assert (event.actor, event.environment) == ("operator", "production")
    assert event.data["changes"]["required_approvals"] == ["2", "3"]
    before, after = event.data["changes"]["approver_groups"]
    assert "platform-team" not in before
    assert "platform-team" in after


def test_the_attestation_a_service_expects_is_edited_in_the_admin_and_audited(operator):
    from environments.models import Environment
    from releases.models import Service

    service = Service.objects.get(name="nexo-be")
    workflow = "https://github.com/nexo-org/nexo-be/.github/workflows/build.yml@refs/heads/main"
    change(operator, Service, service, attestation_identity=workflow)
    production = Environment.objects.get(name="production")
    change(operator, Environment, production, requires_attestation=True)

    service_event, environment_event = AuditEvent.objects.filter(action="admin.changed").order_by("id")
    assert service_event.data["changes"]["attestation_identity"] == ["", workflow]
    assert environment_event.data["changes"]["requires_attestation"] == ["False", "True"]


def test_the_admin_refuses_an_attestation_identity_github_never_signs_as(operator):
    from releases.models import Service

    service = Service.objects.get(name="nexo-be")
    url = admin_url(Service, "change", service.pk)
    form = operator.get(url).context["adminform"].form
    answer = operator.post(url, post_data(form, attestation_identity="https://github.com/nexo-org/nexo-be"))

    assert answer.status_code == 200
    assert "attestation_identity" in answer.context["adminform"].form.errors
    assert not AuditEvent.objects.filter(action="admin.changed").exists()


def test_the_admin_refuses_a_soak_too_short_for_a_services_own_query_and_changes_nothing(admin_client, environments):
    from environments.models import Environment

    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[2m]))")
    qa = environments["qa"]
    url = admin_url(Environment, "change", qa.pk)

    answer = admin_client.post(url, change_page_data(admin_client, url, verification_window="00:01:00"))

    assert answer.status_code == 200
    [error] = answer.context["adminform"].form.errors["verification_window"]
    assert error.startswith("nexo-be's own error-rate query: The query's 2m range is longer than the soak window (1m)")
    qa.refresh_from_db()
    assert qa.verification_window == timedelta(minutes=5)
    assert not AuditEvent.objects.filter(action="admin.changed").exists()


def test_the_admin_refuses_a_promotion_target_no_longer_than_the_soak_and_changes_nothing(admin_client, environments):
    from environments.models import Environment

    production = environments["production"]
    url = admin_url(Environment, "change", production.pk)

    answer = admin_client.post(url, change_page_data(admin_client, url, promotion_slo_minutes="30"))

    assert answer.status_code == 200
    [error] = answer.context["adminform"].form.errors["promotion_slo_minutes"]
    assert error.startswith("A target of 30 min is no longer than the soak window (30m)")
    production.refresh_from_db()
    assert production.promotion_slo_minutes == 60
    assert not AuditEvent.objects.filter(action="admin.changed").exists()


def test_the_admin_refuses_a_release_committed_before_git_existed(admin_client, environments):
    """The API refuses it too: a commit time of 0 (1970-01-01) made a lead time of 57 years."""
    from releases.models import Release

    service = make_service("nexo-be", team="backend-team")
    url = admin_url(Release, "add")
    form = admin_client.get(url).context["adminform"].form
    data = post_data(
        form,
        service=service.pk,
        version="2026.02.1",
        commit_sha="a" * 40,
        image_digest="sha256:" + "b" * 64,
        committed_at_0="1970-01-01",
        committed_at_1="00:00:00",
    )

    answer = admin_client.post(url, data)

    assert answer.status_code == 200
    [error] = answer.context["adminform"].form.errors["committed_at"]
    assert error.startswith("A commit dated 1970-01-01 is before Git existed (its first commit was made on 2005-04-07)")
    assert not Release.objects.exists()
    data.update(committed_at_0="2026-02-01")
    assert admin_client.post(url, data).status_code == 302, "a commit time since Git is taken"
    assert Release.objects.get().version == "2026.02.1"


def test_adding_someone_to_an_approver_group_is_audited_and_no_password_is_kept(operator, django_user_model):
    from django.contrib.auth.models import Group

    rita = django_user_model.objects.get(username="rita")
    sre = Group.objects.get(name="sre-team")
    change(operator, django_user_model, rita, groups=[*rita.groups.values_list("pk", flat=True), sre.pk])
    event = AuditEvent.objects.filter(action="admin.changed").get()
    assert "sre-team" in event.data["changes"]["groups"][1]
    assert "sre-team" not in event.data["changes"]["groups"][0]
    assert "password" not in str(event.data)
    assert "pbkdf2" not in event.message


def test_an_approvers_password_set_in_the_admin_is_audited_without_its_value(operator, django_user_model):
    sam = django_user_model.objects.get(username="sam")
    url = admin_url(django_user_model, "password_change", sam.pk)
    new_password = "Taken-Over-9876!"
    answer = operator.post(url, {"password1": new_password, "password2": new_password, "usable_password": "true"})

    assert answer.status_code == 302
    sam.refresh_from_db()
    assert sam.check_password(new_password)
    event = AuditEvent.objects.filter(action="admin.changed").get()
    assert (event.actor, event.data) == (
        "operator",
        {"model": "auth.User", "object": sam.pk, "changes": {"password": "set"}},
    )
    assert "sam" in event.message
    assert new_password not in event.message
    assert "pbkdf2" not in event.message


def test_a_password_form_refused_in_the_admin_records_nothing(operator, django_user_model):
    sam = django_user_model.objects.get(username="sam")
    url = admin_url(django_user_model, "password_change", sam.pk)
    answer = operator.post(
        url, {"password1": "Taken-Over-9876!", "password2": "Other-9876!", "usable_password": "true"}
    )

    assert answer.status_code == 200
    assert not AuditEvent.objects.filter(action="admin.changed").exists()


def test_deleting_an_incident_in_the_admin_is_audited(operator):
    from releases.models import Incident

    incident = Incident.objects.first()
    assert incident is not None, "the demo data has incidents"
    operator.post(admin_url(Incident, "delete", incident.pk), {"post": "yes"})
    assert not Incident.objects.filter(pk=incident.pk).exists()
    event = AuditEvent.objects.filter(action="admin.deleted").get()
    assert event.data == {"model": "releases.Incident", "object": incident.pk}


def test_a_changed_team_is_audited_by_name_on_both_sides(operator):
    from django.contrib.auth.models import Group

    from releases.models import Service

    service = Service.objects.get(name="nexo-fe")
    change(operator, Service, service, team=Group.objects.get(name="backend-team").pk)
    event = AuditEvent.objects.filter(action="admin.changed").get()
    assert event.data["changes"]["team"] == ["frontend-team", "backend-team"]
    assert event.service == "nexo-fe"


@pytest.fixture
def staging_ran_three(environments, paulo):
    """nexo-be 2026.02.1, .2 and .3 ran in staging one after another; paulo could approve a rollback there."""
    service, staging, start = make_service("nexo-be", team="backend-team"), environments["staging"], timezone.now()
    for day, version in enumerate(["2026.02.1", "2026.02.2", "2026.02.3"]):
        ran(make_release(service, version), staging, at=start + timedelta(days=day))
    return {"service": service, "staging": staging, "rows": Deployment.objects.filter(environment=staging)}


def rolled_back(action_response):
    messages = [str(message) for message in action_response.context["messages"]]
    return messages, [
        (rollback.rolls_back.release.version, rollback.release.version)
        for rollback in Promotion.objects.filter(kind=PromotionKind.ROLLBACK)
    ]


def test_the_admin_refuses_to_roll_back_a_replaced_deployment_and_says_what_runs_now(admin_client, staging_ran_three):
    old = staging_ran_three["rows"].get(release__version="2026.02.1")
    assert old.replaced_at is not None
    url = reverse("admin:releases_deployment_changelist")
    selected = {"action": "roll_back", "_selected_action": [old.pk]}
    refusal = (
        "nexo-be in staging: the deployment of 2026.02.1 you selected was replaced; 2026.02.3 runs there now. "
        "Select its current deployment (the row without “replaced at”) to roll it back."
    )

    confirmation = admin_client.post(url, selected, follow=True)
    assert "(running 2026.02.1)" not in confirmation.content.decode()
    assert rolled_back(confirmation) == ([refusal], [])

    applied = admin_client.post(url, selected | {"apply": "1"}, follow=True)
    assert rolled_back(applied) == ([refusal], [])


def test_an_admin_rollback_confirmed_before_a_hotfix_went_out_does_not_take_the_hotfix_out(
    admin_client, staging_ran_three
):
    current = staging_ran_three["rows"].get(release__version="2026.02.3")
    url = reverse("admin:releases_deployment_changelist")
    selected = {"action": "roll_back", "_selected_action": [current.pk]}
    confirmation = admin_client.post(url, selected).content.decode()
    assert "nexo-be in staging (running 2026.02.3) → the last verified release" in confirmation

    hotfix = make_release(staging_ran_three["service"], "2026.02.4")
    ran(hotfix, staging_ran_three["staging"], at=timezone.now() + timedelta(days=3))
    applied = admin_client.post(url, selected | {"apply": "1"}, follow=True)

    assert rolled_back(applied) == (
        [
            "nexo-be in staging: the deployment of 2026.02.3 you selected was replaced; 2026.02.4 runs there now. "
            "Select its current deployment (the row without “replaced at”) to roll it back."
        ],
        [],
    )


def test_the_admin_rolls_back_the_current_deployment_it_confirmed(admin_client, staging_ran_three):
    current = staging_ran_three["rows"].get(release__version="2026.02.3")
    url = reverse("admin:releases_deployment_changelist")
    applied = admin_client.post(
        url, {"action": "roll_back", "_selected_action": [current.pk], "apply": "1"}, follow=True
    )
    messages, rollbacks = rolled_back(applied)
    assert rollbacks == [("2026.02.3", "2026.02.2")]
    assert messages == ["Roll back: nexo-be in staging (running 2026.02.3) → the last verified release"]
