"""Pages for people: the promotion board, a promotion, a release, the actions on promotions.

Every page needs sign-in (PortalLoginRequiredMiddleware). State changes are POSTs (CSRF
protected) that call one `transitions` function, which checks `policy`; a refusal comes back
as a message. Each action's GET is its confirmation: a dialog fragment when htmx asks for it,
a full page otherwise, so the board works without JavaScript too.
"""

import itertools
import json
from datetime import timedelta
from itertools import pairwise
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpResponseBadRequest, HttpResponseNotModified, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from audit.forms import AuditFilterForm
from audit.models import AuditEvent
from environments.models import Environment
from nexo_portal.lib import inert

from . import (
    audit_export,
    confirmations,
    image_gate,
    links,
    policy,
    shipping,
    slo,
    state,
    steps,
    timeline,
    transitions,
    waiting,
)
from .actions import decision_actions, lift_action, promote_again, rollback_action, why_not_roll_back
from .board import build_board, short_age, stopped_label
from .forms import ApproveForm, CommentForm, RejectForm, RequestForm, RollbackForm, StopForm
from .models import CheckResult, Deployment, Hold, Promotion, PromotionKind, PromotionState, Release, RunStatus, Service
from .policy import PromotionError
from .soak_charts import soak_charts


def _is_htmx(request, target=None):
    return request.headers.get("HX-Request") == "true" and (
        target is None or request.headers.get("HX-Target") == target
    )


def _live(request, target, template, fragment, context_for, page=None):
    """A page with a live part that refreshes itself: the part alone when htmx asks for it.

    `page(context)` adds what only the whole page shows (not read again at each refresh).

    The part carries its entity tag (releases/state.py) and sends it back with each refresh; while
    nothing it shows has changed, the refresh is answered 304 without reading anything else.
    """
    live = _is_htmx(request, target)
    tag = state.etag(request, target)  # read before the data it stands for
    if live and state.not_modified(request, tag):
        response = HttpResponseNotModified()
        response["ETag"] = tag
        return response
    context = context_for()
    if page is not None and not live:
        context = page(context)
    response = render(
        request,
        fragment if live else template,
        {**context, "etag": tag, "live": live, "refresh_seconds": settings.LIVE_REFRESH_SECONDS},
        status=context.get("status", 200),
    )
    if live:
        response["ETag"] = tag
        response["Cache-Control"] = "private, no-cache"
    return response


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def board(request):
    """Any signed-in user: every service × environment; the actions shown depend on `policy`.

    ?todo=1 leaves out the services where the person has nothing to do. A team or service that does
    not exist is a 404 that names it, as in the API, not an empty board that looks like nothing runs.
    """
    team, service = request.GET.get("team", ""), request.GET.get("service", "")
    todo = request.GET.get("todo") == "1"
    return _live(
        request,
        "board",
        "releases/board.html",
        "releases/_board.html",
        lambda: _board_context(request.user, team, service, todo),
    )


def _board_context(user, team, service, todo):
    board = build_board(user, team=team, service=service, todo=todo)
    context = {"board": board}
    # The board lists every team and service for its filters already: knowing the name costs no query.
    if team and team not in board.teams:
        context.update(unknown_filter=f"No team owns a service under the name “{team}”.", status=404)
    elif service and service not in board.service_names:
        context.update(unknown_filter=f"There is no service called “{service}”.", status=404)
    if board.waiting_for_reader is not None:
        context["waiting"] = waiting.Waiting(user, board.waiting_for_reader)
    return context


@require_GET
def waiting_for_me(request):
    """Any signed-in user: the promotions they may approve or reject now (`policy.may_decide`), and
    those a freeze keeps them from approving until it ends (`policy.may_decide_once_unfrozen`)."""
    mine = waiting.Waiting(request.user)
    back = "?" + urlencode({"next": request.get_full_path()})
    now = timezone.now()

    def row(promotion):
        return {
            "promotion": promotion,
            "age": short_age(promotion.requested_at, now),
            "approvals_given": policy.approvals_given(promotion),
            "approvals_required": policy.approvals_required(promotion),
            "freeze": policy.freeze_holding(promotion),
            "actions": [
                action
                for action in decision_actions(
                    promotion, request.user, lambda kind, pk: reverse(f"releases:{kind}", args=[pk]) + back
                )
                if action.allowed and action.kind in ("approve", "reject")
            ],
        }

    rows = [row(promotion) for promotion in mine.promotions]
    frozen = [row(promotion) for promotion in waiting.held_by_freezes(request.user)]
    return render(request, "releases/waiting.html", {"waiting": mine, "rows": rows, "frozen": frozen})


@require_GET
def release_detail(request, service, version):
    """Any signed-in user: one release, its journey through the environments, changelog and identity."""
    release = get_object_or_404(
        Release.objects.select_related("service", "fixes"), service__name=service, version=version
    )
    environments = list(Environment.objects.in_pipeline_order())
    promotions = list(release.promotions.select_related("requested_by").order_by("-requested_at", "-id"))
    running = set(Deployment.objects.current().filter(release=release).values_list("environment_id", flat=True))
    checks = sorted(
        CheckResult.objects.filter(release=release).select_related("environment").newest_per_check(),
        key=lambda check: (check.environment.position, check.name),
    )
    journey = [
        {
            "environment": environment,
            "promotions": [p for p in promotions if p.environment_id == environment.pk],
            "running": environment.pk in running,
            "checks": [c for c in checks if c.environment_id == environment.pk],
        }
        for environment in environments
    ]
    for before, stop in pairwise(journey):
        stop["went_instead"] = _went_instead(release, before, stop)
    return render(
        request,
        "releases/release_detail.html",
        {"release": release, "journey": journey, "fixed_by": list(release.fixed_by.select_related("service"))},
    )


def _went_instead(release, before, stop):
    """Where a release verified in the environment before never went on by itself: the newer build
    that went instead, once that environment was free (only the newest waiting build goes)."""
    environment = stop["environment"]
    verified = [p for p in before["promotions"] if p.state == PromotionState.VERIFIED]
    if not environment.auto_promote or stop["promotions"] or not verified:
        return None
    return (
        Promotion.objects.filter(environment=environment, requested_at__gte=verified[0].finished_at)
        .filter(release__in=Release.objects.newer_than(release))
        .select_related("release")
        .order_by("requested_at")
        .first()
    )


def _promotion_context(request, pk):
    promotion = get_object_or_404(
        Promotion.objects.with_details()
        .select_related("previous_release", "deployment")
        .prefetch_related("approvals__user", "environment__approver_groups", "environment__requester_groups"),
        pk=pk,
    )
    user, now = request.user, timezone.now()
    back = "?" + urlencode({"next": promotion.get_absolute_url()})
    actions = decision_actions(promotion, user, lambda kind, pk: reverse(f"releases:{kind}", args=[pk]) + back)
    # What this promotion deployed and still runs can be rolled back from here too.
    deployment = getattr(promotion, "deployment", None)
    if deployment and deployment.replaced_at is None and not promotion.is_active:
        url = reverse("releases:rollback", args=[promotion.service.name, promotion.environment.name]) + back
        actions.append(
            rollback_action(deployment, url, why_not_roll_back(user, promotion.service, promotion.environment))
        )
    # Failed before its release ran: the next step is to ask for it again, as the board's cell offers.
    url = reverse(
        "releases:request", args=[promotion.service.name, promotion.environment.name, promotion.release.version]
    )
    again = promote_again(promotion, user, url + back, lambda: stopped_label(promotion, now))
    if again:
        actions.append(again)
    hold = (
        Hold.objects.active()
        .filter(service=promotion.service, environment=promotion.environment)
        .select_related("service", "environment")
        .first()
    )
    if hold:
        url = reverse("releases:lift-hold", args=[hold.pk]) + back
        actions.insert(0, lift_action(url, policy.why_not_lift_hold(hold, user)))
    samples = list(promotion.samples.all())
    runs = list(promotion.runs.order_by("created_at", "id"))
    # Approved before a freeze began (or its push failed before): the GitOps commit waits for its end
    # (jobs.commit_promotion).
    held = promotion.state in (PromotionState.APPROVED, PromotionState.COMMITTING)
    held_by_freeze = policy.freeze_holding(promotion) if held else None
    held_up = steps.held_up(promotion, runs, now)
    return {
        "hold": hold,
        "held_by_freeze": held_by_freeze,
        "hold_liftable_by": policy.who_may_request(promotion.service, promotion.environment) if hold else "",
        "runs": runs,
        "held_up": held_up,
        # And a run that says what holds it up now (Argo CD out of reach while the sync waits).
        "troubled_runs": [
            run
            for run in runs
            if run.status in (RunStatus.CRASHED, RunStatus.RETRY) or (run.status == RunStatus.RUNNING and run.error)
        ],
        "next_try": next(
            (run.run_after for run in runs if run.status == RunStatus.QUEUED and run.run_after > now), None
        ),
        "max_crashes": settings.PIPELINE_MAX_CRASHES,
        "retry_minutes": round(settings.PIPELINE_RETRY_SECONDS / 60),
        "promotion": promotion,
        "steps": timeline.steps(promotion, now, held_by_freeze, held_up=held_up.why),
        "written_to_gitops": timeline.written_to_gitops(
            promotion, settings.GITOPS_BRANCH, holding=Deployment.objects.holding_commit_of(promotion)
        ),
        "soak": timeline.soak(promotion, now),
        "samples": samples,
        "sample_summary": timeline.sample_summary(samples),
        "soak_charts": soak_charts(promotion, samples),
        "events": list(AuditEvent.objects.for_promotion(promotion).order_by("id")),
        "actions": actions,
        "approvals_required": policy.approvals_required(promotion),
        "from_approvers": policy.from_approvers(promotion.environment),
        "values_path": promotion.service.values_path(promotion.environment),
        "image_requirements": image_gate.requirements(promotion.environment),
        "argocd_app": promotion.service.argocd_app(promotion.environment),
        "argocd_url": links.argocd_application(promotion.service, promotion.environment),
        "gitops_commit_url": links.gitops_commit(promotion.gitops_commit_sha),
        "dashboard_url": links.dashboard(promotion.service, promotion.environment),
        "page_title": f"Promotion #{promotion.pk}: {promotion}",
    }


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def promotion_detail(request, pk):
    """Any signed-in user: one promotion as a live timeline, its approvals, samples and audit events."""
    return _live(
        request,
        "promotion-live",
        "releases/promotion_detail.html",
        "releases/_promotion_live.html",
        lambda: _promotion_context(request, pk),
        # Outside the part that refreshes: the values diff fetches the GitOps branch, once per page view.
        page=lambda context: {**context, "ships": shipping.what_ships(context["promotion"])},
    )


# --- actions ----------------------------------------------------------------------------------


def _next_url(request, default):
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _posted(request):
    # Bound on every POST, even an empty one: a form posted without fields is still a submission.
    return request.POST if request.method == "POST" else None


def _confirm(request, confirmation, form, *, back, status=200, choose=None):
    """`choose`: the versions to pick from, and the one shown, where the page picks what it confirms."""
    template = "releases/_confirm_dialog.html" if _is_htmx(request) else "releases/confirm.html"
    if form is not None and form.errors:
        # Sent back to be put right: the keyboard starts on the first field at fault, without JavaScript too.
        at_fault = next((form[name] for name in form.fields if name in form.errors and not form[name].is_hidden), None)
        if at_fault is not None:
            at_fault.field.widget.attrs["autofocus"] = True
    return render(
        request,
        template,
        {"confirmation": confirmation, "form": form, "back": back, "action_url": request.path, "choose": choose},
        status=status,
    )


def _act(request, back, do, success, *, form=None, confirmation=None):
    """Run one transition; say what happened, or why it was refused, on the page we go back to. A
    refusal about one of the `form`'s fields sends the form back with it instead, to be put right."""
    try:
        result = do()
    except PromotionError as refusal:
        if form is not None and refusal.field in form.fields:
            form.add_error(refusal.field, str(refusal))
            return _confirm(request, confirmation, form, back=back, status=400)
        messages.error(request, str(refusal))
    else:
        messages.success(request, success(result))
    return redirect(back)


def _approvals_note(promotion):
    if promotion.state != PromotionState.AWAITING_APPROVAL:
        return "no approval is needed, the GitOps commit is on its way."
    required = policy.approvals_required(promotion)
    return (
        f"it waits for {required} approval{'s' if required != 1 else ''}{policy.from_approvers(promotion.environment)}."
    )


@require_http_methods(["GET", "POST"])
def request_promotion(request, service, environment, version):
    """People who may request promotions of the service into the environment (`policy.why_not_request`)."""
    release = get_object_or_404(Release.objects.select_related("service__team"), service__name=service, version=version)
    environment = get_object_or_404(Environment, name=environment)
    back = _next_url(request, reverse("releases:board"))
    confirmation = confirmations.for_request(release, environment, request.user)
    form = RequestForm(_posted(request))
    if request.method == "POST":
        if not form.is_valid():
            return _confirm(request, confirmation, form, back=back, status=400)
        return _act(
            request,
            back,
            lambda: transitions.request_promotion(
                release,
                environment,
                request.user,
                is_emergency=form.cleaned_data["emergency"],
                reason=form.cleaned_data["reason"],
            ),
            lambda promotion: (
                f"Requested {confirmation.headline} (promotion #{promotion.pk}): {_approvals_note(promotion)}"
            ),
            form=form,
            confirmation=confirmation,
        )
    return _confirm(request, confirmation, form if environment.allows_break_glass else None, back=back)


@require_http_methods(["GET", "POST"])
def rollback(request, service, environment):
    """People who may request promotions of the service into the environment (`policy.why_not_request`)."""
    service = get_object_or_404(Service.objects.select_related("team"), name=service)
    environment = get_object_or_404(Environment, name=environment)
    back = _next_url(request, reverse("releases:board"))
    current = Deployment.objects.running(service, environment)
    targets = list(Release.objects.rollback_targets(environment, current.release)) if current else []
    versions = [release.version for release in targets]
    default = Release.objects.default_rollback_target(environment, current.release) if current else None
    target = default or (targets[0] if targets else None)
    # ?release= shows the confirmation for another target; choosing one in the dialog asks for it.
    target = next((release for release in targets if release.version == request.GET.get("release")), target)
    # Without JavaScript nothing redescribes the target picked in the form that asks for it: the page
    # picks it with a form of its own (a GET that shows its consequences), and asks for the one shown.
    choose = None if _is_htmx(request) or not targets else {"versions": versions, "selected": target.version}
    form = RollbackForm(
        _posted(request),
        versions=versions,
        environment=environment,
        chosen_on_the_page=choose is not None,
        initial={
            "release": target.version if target else None,
            "running": current.release.version if current else None,
        },
    )
    if _is_htmx(request):
        form.fields["release"].widget.attrs.update(
            {
                "hx-get": request.path,
                "hx-trigger": "change",
                "hx-target": "#dialog-body",
                "hx-vals": json.dumps({"next": back}),
            }
        )
    if request.method == "POST" and form.is_valid():
        target = next(release for release in targets if release.version == form.cleaned_data["release"])
    confirmation = confirmations.for_rollback(service, environment, request.user, current, target)
    asked = request.GET.get("release")
    if request.method == "GET" and asked and asked not in versions and not confirmation.why_not:
        # A version from a stale link or typed in the address: say so, rather than describe another one.
        choices = f": it may go back to {', '.join(versions)}." if versions else "."
        confirmation.why_not = (
            f"{service.name} {asked[:50]} is not a release {environment.name} can go back to{choices}"
        )
        return _confirm(request, confirmation, None, back=back, status=404)
    if request.method == "POST":
        if not form.is_valid():
            return _confirm(request, confirmation, form, back=back, status=400, choose=choose)
        return _act(
            request,
            back,
            lambda: transitions.request_rollback(
                service, environment, request.user, release=target, expected=form.cleaned_data["running"]
            ),
            lambda promotion: (
                f"Requested rollback of {service.name} in {environment.name} to {target.version} "
                f"(promotion #{promotion.pk}): {_approvals_note(promotion)}"
            ),
        )
    return _confirm(request, confirmation, form if targets else None, back=back, choose=choose)


def _promotion_for_action(pk):
    return get_object_or_404(
        Promotion.objects.with_details().prefetch_related("approvals__user", "environment__approver_groups"), pk=pk
    )


def _decide(request, pk, confirmation_for, form_class, transition, success, then=None):
    """The confirmation of one person's decision on a promotion (GET), and the decision itself (POST).

    `then(result, back)`: where to go once it is done, when not straight back. What the confirmation pins
    (`Confirmation.pin`) is posted back and given to the transition; when it refuses it, the confirmation
    comes back as things stand now, with what was typed, and a click confirms that.
    """
    promotion = _promotion_for_action(pk)
    back = _next_url(request, promotion.get_absolute_url())
    confirmation = confirmation_for(promotion, request.user)
    form = form_class(_posted(request), initial=confirmation.pin)
    if request.method == "POST":
        if form.is_valid():
            pinned = {name: form.cleaned_data[name] for name in confirmation.pin}
            try:
                with transaction.atomic():
                    result = transition(promotion, request.user, form.cleaned_data["comment"], **pinned)
            except PromotionError as refusal:
                if refusal.field not in form.fields:
                    messages.error(request, str(refusal))
                    return redirect(back)
                form.add_error(refusal.field, str(refusal))
            else:
                messages.success(request, success(confirmation, result))
                return redirect(then(result, back) if then else back)
        return _confirm(request, confirmation, form, back=back, status=400)
    return _confirm(request, confirmation, form, back=back)


def _approved_message(confirmation, approved):
    if approved.state == PromotionState.APPROVED:
        return f"You approved {confirmation.headline}: the GitOps commit is on its way."
    given, required = policy.approvals_given(approved), policy.approvals_required(approved)
    return f"You approved {confirmation.headline}: {given} of {required} approvals so far."


@require_http_methods(["GET", "POST"])
def approve(request, pk):
    """Members of the environment's approver groups, except the requester and those who decided already."""
    return _decide(request, pk, confirmations.for_approve, ApproveForm, transitions.approve, _approved_message)


@require_http_methods(["GET", "POST"])
def reject(request, pk):
    """Members of the environment's approver groups, except the requester; a comment is required."""
    return _decide(
        request,
        pk,
        confirmations.for_reject,
        RejectForm,
        transitions.reject,
        lambda confirmation, rejected: f"You rejected {confirmation.headline}.",
    )


@require_http_methods(["GET", "POST"])
def cancel(request, pk):
    """The requester, an approver of the environment or an administrator, before the GitOps commit starts."""
    return _decide(
        request,
        pk,
        confirmations.for_cancel,
        CommentForm,
        transitions.cancel,
        lambda confirmation, cancelled: f"You cancelled {confirmation.headline}.",
    )


@require_http_methods(["GET", "POST"])
def lift_hold(request, pk):
    """People who may request promotions of the service into the environment (`policy.why_not_lift_hold`)."""
    hold = get_object_or_404(
        Hold.objects.select_related("service__team", "environment").prefetch_related(
            "environment__approver_groups", "environment__requester_groups"
        ),
        pk=pk,
    )
    back = _next_url(request, reverse("releases:board"))
    confirmation = confirmations.for_lift_hold(hold, request.user)
    form = CommentForm(_posted(request))
    if request.method == "POST":
        if not form.is_valid():
            return _confirm(request, confirmation, form, back=back, status=400)

        def lifted(result):
            done = f"Automatic promotions of {confirmation.headline} resumed."
            if result.promoted:
                done += (
                    f" {result.promoted.release.version} waited and is on its way (promotion #{result.promoted.pk})."
                )
            return done

        return _act(
            request, back, lambda: transitions.lift_hold(hold, request.user, form.cleaned_data["comment"]), lifted
        )
    return _confirm(request, confirmation, form, back=back)


def _rolled_back_by_itself(promotion):
    return Promotion.objects.filter(rolls_back=promotion, kind=PromotionKind.ROLLBACK).exists()


def _stopped_message(confirmation, stopped):
    if _rolled_back_by_itself(stopped):
        return f"You stopped {confirmation.headline}: {stopped.environment.name} rolls back by itself."
    return f"You stopped {confirmation.headline}."


def _offer_rollback(stopped, back):
    """Where the environment does not roll back by itself, the rollback's confirmation comes next."""
    if stopped.is_rollback or _rolled_back_by_itself(stopped):
        return back
    url = reverse("releases:rollback", args=[stopped.service.name, stopped.environment.name])
    return url + "?" + urlencode({"next": back})


@require_http_methods(["GET", "POST"])
def stop(request, pk):
    """People who may roll back the service in the environment, while the promotion soaks; a comment
    is required (`policy.why_not_stop`)."""
    return _decide(
        request, pk, confirmations.for_stop, StopForm, transitions.stop, _stopped_message, then=_offer_rollback
    )


# --- the audit log in the reference docs' shape -------------------------------------------------------


@require_GET
def audit_log_export(request):
    """Any signed-in user: the filtered log as a JSON array in the reference docs' shape, oldest first:
    one record per completed promotion (filters that select events only are refused), or with
    `per=step` one per event."""
    form = AuditFilterForm(request.GET)
    per = request.GET.get("per") or audit_export.Per.PROMOTION
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    if per not in audit_export.Per.CHOICES:
        refusal = {"message": audit_export.Per.REFUSAL, "code": "invalid_choice"}
        return JsonResponse({"errors": {"per": [refusal]}}, status=400)
    if per == audit_export.Per.PROMOTION and (why_not := form.why_not_per_promotion()):
        # As the API answers it: each parameter is valid, together they contradict each other.
        return JsonResponse({"errors": {"per": [{"message": why_not, "code": "conflict"}]}}, status=409)
    events = form.filter(AuditEvent.objects.order_by("id"))
    response = StreamingHttpResponse(audit_export.export_json(events, per), content_type="application/json")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="nexo-audit-{stamp}.json"'
    return response


def window_days(value):
    """The SLO window asked for, in days: a whole number from 1 to slo.MAX_DAYS (default slo.DEFAULT_DAYS)."""
    if value in (None, ""):
        return slo.DEFAULT_DAYS
    # isdigit() alone takes "²", which int() refuses, and int() refuses more than 4,300 digits.
    if not (value.isdigit() and value.isascii() and len(value) <= 10) or not 1 <= int(value) <= slo.MAX_DAYS:
        raise ValueError(f"days must be a whole number of days from 1 to {slo.MAX_DAYS}, not {value[:20]!r}.")
    return int(value)


@require_GET
def slo_report(request):
    """Any signed-in user: each environment's promotion SLOs over the last `days` days, with the time per stage."""
    try:
        days = window_days(request.GET.get("days"))
    except ValueError as error:
        return render(request, "releases/slo.html", {"error": str(error), "days": slo.DEFAULT_DAYS}, status=400)
    report = slo.report(days)
    return render(request, "releases/slo.html", {"report": report, "days": days, "stages": slo.STAGE_NAMES})


@require_GET
def slo_export_csv(request):
    """Any signed-in user: the window's promotions, one row each, with the minutes of each stage."""
    try:
        days = window_days(request.GET.get("days"))
    except ValueError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain")
    now = timezone.now()
    buffer = _CsvLine()
    writer = inert.csv_writer(buffer)
    lines = (
        buffer.line(writer, row)
        for row in itertools.chain([slo.CSV_HEADER], slo.csv_rows(now - timedelta(days=days), now))
    )
    response = StreamingHttpResponse(lines, content_type="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="promotion-slo-{days}d.csv"'
    return response


class _CsvLine:
    """csv.writer writes to this; each row comes back as its line, for a streamed response."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text = text

    def line(self, writer, row):
        writer.writerow(row)
        return self.text
