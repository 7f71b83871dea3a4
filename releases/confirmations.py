"""What an action on the board will do, said before it is done.

Each function returns a `Confirmation`: the one-line headline ("nexo-be 2026.02.1 → production"),
the consequences in plain sentences, and — when the rules refuse the person asking — why not,
in the words of `policy`. The confirmation pages and dialogs render it; nothing here changes state.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from nexo_portal.lib.words import listed

from . import policy, pull_requests, shipping, timeline, verification
from .actions import busy_refusal
from .board import short_duration
from .gitops import message as gitops_message
from .models import ApprovalDecision, Deployment, Promotion, PromotionKind, PromotionState, Release


@dataclass
class Confirmation:
    title: str
    headline: str
    submit: str
    tone: str = "primary"
    consequences: list = field(default_factory=list)
    why_not: str = ""
    # What the promotion ships (`shipping.WhatShips`), worked out only when a page shows it.
    ships: object = None
    # Only a break-glass request may go now (a freeze): its fields are shown unfolded.
    break_glass_only: bool = False
    # What the action is held to, as shown here: the form's hidden fields, posted back with it, which
    # the transition refuses once things stand otherwise (an approval: where the approvals stood).
    pin: dict = field(default_factory=dict)


def _pipeline_steps(service, environment, release, kind=PromotionKind.MANUAL, promotion=None):
    """What the pipeline does; `promotion`, when it exists already (its pull request, if it has one)."""
    # An unsaved promotion, to ask the GitOps message and the verification what they would do.
    probe = Promotion(service=service, environment=environment, release=release, kind=kind)
    steps = [_delivery(service, environment, release, probe, promotion)]
    if settings.ARGOCD_URL:
        steps.append(f"Argo CD syncs {service.argocd_app(environment)} and the portal waits until it is Healthy.")
    else:
        steps.append("Argo CD is not configured: the sync is not watched, the commit counts as deployed.")
    checks = verification.configured_checks(probe)
    names = {
        "error_rate": "the error rate",
        "health_urls": "the health URLs",
        "argocd": "that Argo CD runs this release, Healthy",
        "ci_checks": "the CI checks",
    }
    checked = [names[key] for key, configured in checks.items() if configured]
    window = short_duration(probe.verification_window)
    if probe.is_rollback and not probe.verification_window:
        steps.append(f"Rollbacks into {environment.name} do not soak: one round of samples decides at once.")
    elif probe.is_rollback and checked:
        steps.append(
            f"It then soaks for {window}, the rollback soak of {environment.name}, while the portal watches "
            f"{', '.join(checked)} of {release.version} alone, from the moment it is healthy."
        )
    elif checked:
        steps.append(f"It then soaks for {window} while the portal watches {', '.join(checked)}.")
    else:
        steps.append(f"It then soaks for {window}; nothing is configured to check, so the soak is only a timer.")
    required = verification.required_results(release, environment)
    if required:
        so_far = [
            f"{name} {'has not been reported' if result is None else 'passed' if result.passed else 'failed'}"
            for name, result in required.items()
        ]
        steps.append(
            f"{environment.name} requires the CI results {listed(required)} of {release.version}, reported before "
            f"its soak ends; so far {listed(so_far)}."
        )
    steps += _if_it_fails(environment, release, probe.is_rollback, checks)
    return steps


def _delivery(service, environment, release, probe, promotion):
    """How the change reaches the branch Argo CD follows: one commit pushed, or a pull request merged."""
    change = f"{service.image_tag_key} to {release.version} in {service.values_path(environment)}"
    if not environment.delivers_by_pull_request:
        return f"The portal sets {change} and pushes one commit, “{gitops_message.subject(probe)}”."
    if promotion is not None and promotion.pr_number:
        return (
            f"Pull request #{promotion.pr_number} ({promotion.pr_branch}) sets {change}; the portal merges it once "
            "approved, and only while it carries that change alone."
        )
    return (
        f"The portal sets {change} on the branch {pull_requests.branch_name(probe)} and opens a pull request, "
        f"“{gitops_message.subject(probe)}”; it merges it once approved, and only while it carries that change alone."
    )


def _if_it_fails(environment, release, is_rollback, checks):
    """What a failed soak leads to, as `jobs._fail_soak` and `transitions.fail` decide it: rolled back, or
    held when nothing was found against it or another revision runs."""
    if is_rollback:
        return [
            f"If its verification fails, the rollback is marked failed and {release.version} stays in "
            f"{environment.name}: a rollback is never rolled back by itself, so what comes next is yours to decide."
        ]
    if not environment.rollback_on_failed_verification:
        return [
            f"If verification fails, the promotion is marked failed and {release.version} stays in "
            f"{environment.name}, which does not roll back by itself: whether to roll back is yours to decide."
        ]
    sampled = any(checks[name] for name in verification.SAMPLED)
    found, unmeasured = [], []
    if checks["ci_checks"]:
        found.append("a required CI result reported failing")
        unmeasured.append("a required CI result not reported by the end of the soak")
    if sampled:
        found.append(f"a sample past {environment.name}'s limits")
        unmeasured += ["a check that could not be measured", "too few samples"]
    if not found:  # the soak is only a timer: a person stopping it is all that fails it
        return ["If verification fails, it is rolled back to the last verified release automatically."]
    # verification.found_nothing_against: only a failure found says something against the release.
    outcomes = [
        f"If the soak finds it failing ({', or '.join(found)}), it is rolled back to the last verified release "
        "automatically.",
        f"If it fails only for want of measurements ({', '.join(unmeasured)}), it is not rolled back: "
        f"{release.version} stays in {environment.name}, the promotion is marked failed and a hold stops automatic "
        f"promotions of {release.service.name} there until someone lifts it or a later release is verified there.",
    ]
    if checks["argocd"]:  # verification.found_another_revision
        outcomes.append(
            "If Argo CD is found running a revision without this release's commit, or one whose values file names "
            "another tag (an argocd app rollback, a sync made outside the portal, a revert pushed to the branch), "
            "the soak fails at once and it is not rolled back either: whoever changed what runs is at work, and a "
            f"hold on {release.service.name} there says so."
        )
    return outcomes


def _active(service, environment):
    return Promotion.objects.active().filter(service=service, environment=environment).select_related("release").first()


def _through_the_freeze(environment, what):
    """A rollback or a break-glass promotion enters a frozen environment (policy.freeze_holding): said,
    so that nobody holds one back for the freeze, or is surprised that it went in."""
    freeze = environment.active_freeze()
    if freeze is None:
        return []
    return [f"{policy.frozen_until(environment, freeze.ends_at, freeze.reason)} {what} goes through the freeze."]


def _approval_sentence(environment, required):
    if required == 0 and environment.delivers_by_pull_request:
        return f"No approval is needed in {environment.name}: its pull request is opened and merged right away."
    if required == 0:
        return f"No approval is needed in {environment.name}: the GitOps commit starts right away."
    people = "one approver" if required == 1 else f"{required} distinct approvers"
    return f"It waits for {people}{policy.from_approvers(environment)}; the requester cannot approve it."


def for_request(release, environment, user):
    service = release.service
    why_not = policy.why_not_request(user, service, environment) or ""
    lines = []
    current = Deployment.objects.running(service, environment)
    if current:
        lines.append(
            f"{environment.name} runs {current.release.version} now (deployed "
            f"{timezone.localtime(current.deployed_at):%Y-%m-%d %H:%M}); {release.version} replaces it."
        )
    else:
        lines.append(f"Nothing runs in {environment.name} for {service.name} yet.")
    active = _active(service, environment)
    if active and active.state == PromotionState.AWAITING_APPROVAL:
        why_not = why_not or policy.why_not_supersede(active, user) or ""
        lines.append(
            f"The request for {active.release.version} waiting for approval (promotion #{active.pk}) "
            "is superseded by this one."
        )
    elif active:
        why_not = why_not or busy_refusal(active)
    freeze = environment.active_freeze()
    if freeze:
        if environment.allows_break_glass:
            lines.append(
                f"{policy.frozen_until(environment, freeze.ends_at, freeze.reason)} "
                "Only a break-glass promotion may enter now."
            )
        else:
            why_not = why_not or policy.why_not_request_while_frozen(user, service, environment, freeze)
    held_back = policy.why_not_go_on(release, environment)
    if held_back and environment.allows_break_glass:
        lines.append(f"{held_back} Only a break-glass promotion may enter now.")
    elif held_back:
        why_not = why_not or held_back
    lines.append(_approval_sentence(environment, environment.required_approvals))
    lines += _pipeline_steps(service, environment, release)
    return Confirmation(
        title="Request a promotion",
        headline=f"{service.name} {release.version} → {environment.name}",
        submit="Request promotion",
        consequences=lines,
        why_not=why_not,
        break_glass_only=bool((freeze or held_back) and environment.allows_break_glass),
    )


def for_approve(promotion, user):
    given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
    lines = [
        f"Requested by {promotion.requester_name()} on {timezone.localtime(promotion.requested_at):%Y-%m-%d %H:%M}."
    ]
    approvers = [a.user.get_username() for a in promotion.approvals.all() if a.decision == ApprovalDecision.APPROVE]
    if approvers:
        lines.append(f"Already approved by {', '.join(approvers)}.")
    if promotion.is_rollback:
        lines += _through_the_freeze(promotion.environment, "A rollback")
    elif promotion.is_emergency:
        lines += _through_the_freeze(promotion.environment, "A break-glass promotion")
    if given + 1 >= required:
        starts = (
            f"the portal merges pull request #{promotion.pr_number}"
            if promotion.pr_number
            else "the GitOps commit starts"
        )
        lines.append(f"Yours is approval {given + 1} of {required}: {starts} as soon as you approve.")
        lines += _pipeline_steps(
            promotion.service, promotion.environment, promotion.release, promotion.kind, promotion=promotion
        )
    else:
        lines.append(
            f"Yours is approval {given + 1} of {required}: {required - given - 1} more"
            f"{policy.from_approvers(promotion.environment)} will be needed before anything changes."
        )
    return Confirmation(
        title="Approve the promotion",
        headline=_headline(promotion),
        submit="Approve",
        consequences=lines,
        why_not=policy.why_not_approve(promotion, user) or "",
        # Lazy: reading the values file fetches the GitOps branch, which the POST never needs.
        ships=SimpleLazyObject(lambda: shipping.what_ships(promotion)),
        pin={"expected": policy.approvals_standing(promotion)},
    )


def for_reject(promotion, user):
    lines = [
        f"The promotion stops here and nothing changes in {promotion.environment.name}.",
        f"{promotion.requester_name()} sees your comment on the promotion page and in the audit log; "
        "trying again takes a new request.",
    ]
    return Confirmation(
        title="Reject the promotion",
        headline=_headline(promotion),
        submit="Reject",
        tone="danger",
        consequences=lines,
        why_not=policy.why_not_reject(promotion, user) or "",
    )


def for_cancel(promotion, user):
    lines = [
        f"The request is withdrawn before anything is committed: nothing changes in {promotion.environment.name}.",
        "Approvals already given are kept in the audit log.",
    ]
    return Confirmation(
        title="Cancel the request",
        headline=_headline(promotion),
        submit="Cancel request",
        tone="danger",
        consequences=lines,
        why_not=policy.why_not_cancel(promotion, user) or "",
    )


def for_lift_hold(hold, user):
    service, environment = hold.service, hold.environment
    lines = [
        f"Automatic promotions of {service.name} into {environment.name} resume. The hold said: {hold.reason}",
    ]
    previous = environment.previous()
    if environment.auto_promote and previous:
        lines.append(
            f"The newest build verified in {previous.name} that waited, if any, is promoted into "
            f"{environment.name} at once."
        )
    else:
        lines.append("Nothing is promoted by itself now; the board offers the newest build again.")
    return Confirmation(
        title="Lift the hold",
        headline=f"{service.name} in {environment.name}",
        submit="Lift hold",
        consequences=lines,
        why_not=policy.why_not_lift_hold(hold, user) or "",
    )


def for_stop(promotion, user):
    environment, release = promotion.environment, promotion.release
    lines = [
        f"The soak stops now: {release.version} fails its verification in {environment.name}, "
        "stopped by you, with your comment as the reason."
    ]
    samples = list(promotion.samples.all())
    if samples:
        lines.append(f"{len(samples)} samples were taken so far: {timeline.sample_summary(samples)}.")
    target = Release.objects.default_rollback_target(environment, release)
    if promotion.is_rollback:
        lines.append(f"This is a rollback: stopping it does not roll back again; {release.version} keeps running.")
    elif target is None:
        lines.append(
            f"No release older than {release.version} was verified in {environment.name}: there is nothing to "
            f"roll back to, and {release.version} keeps running until a fix is promoted."
        )
    elif environment.rollback_on_failed_verification:
        lines.append(
            f"{environment.name} rolls back by itself: {promotion.service.name} goes back to {target.version}, "
            "the last release verified there, without approval."
        )
    elif unapprovable := policy.why_not_unapprovable_rollback(user, environment):
        lines.append(
            f"{environment.name} does not roll back by itself, and you could not request the rollback to "
            f"{target.version} next: {unapprovable}"
        )
    else:
        lines.append(
            f"{environment.name} does not roll back by itself: the rollback to {target.version} is offered to you "
            f"next, to confirm. {_approval_sentence(environment, environment.rollback_required_approvals)}"
        )
    return Confirmation(
        title="Stop the soak" if promotion.is_rollback else "Stop the soak and roll back",
        headline=_headline(promotion),
        submit="Stop the soak",
        tone="danger",
        consequences=lines,
        why_not=policy.why_not_stop(promotion, user) or "",
    )


def for_rollback(service, environment, user, current, target):
    lines = []
    why_not = policy.why_not_request(user, service, environment, kind=PromotionKind.ROLLBACK) or ""
    not_to_roll_back = policy.why_not_roll_back_what_runs(service, environment, current)
    if not_to_roll_back:
        why_not = why_not or not_to_roll_back
        headline = f"{service.name} in {environment.name}"
    elif target is None:
        why_not = why_not or (
            f"No release older than {current.release.version} ever ran in {environment.name}; there "
            "is nothing to go back to."
        )
        headline = f"{service.name} in {environment.name}: {current.release.version} → ?"
    else:
        headline = f"{service.name} in {environment.name}: {current.release.version} → {target.version}"
        lines.append(f"{environment.name} goes back from {current.release.version} to {target.version}.")
        lines += _through_the_freeze(environment, "A rollback")
        active = _active(service, environment)
        if active and active.state != PromotionState.AWAITING_APPROVAL:
            why_not = why_not or busy_refusal(active)
        elif active:
            why_not = why_not or policy.why_not_supersede(active, user) or ""
            lines.append(
                f"The request for {active.release.version} waiting for approval (promotion #{active.pk}) is superseded."
            )
        why_not = why_not or policy.why_not_unapprovable_rollback(user, environment) or ""
        lines.append(_approval_sentence(environment, environment.rollback_required_approvals))
        lines += _pipeline_steps(service, environment, target, PromotionKind.ROLLBACK)
        if environment.auto_promote:
            lines.append(
                f"Automatic promotions of {service.name} into {environment.name} stop until someone lifts the hold."
            )
    return Confirmation(
        title="Roll back",
        headline=headline,
        submit="Request rollback",
        tone="danger",
        consequences=lines,
        why_not=why_not,
    )


def _headline(promotion):
    arrow = f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"
    return f"Rollback: {arrow}" if promotion.kind == PromotionKind.ROLLBACK else arrow
