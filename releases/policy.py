"""Who may do what to a promotion. Every entry point (pages, admin, API, jobs) asks here.

Each `why_not_*` function returns None when the action is allowed, or the sentence that
explains the refusal to the person who tried; `transitions` raises it as a PromotionError,
and pages show it next to a disabled button.

The rules:
- request (and rollback) into an environment: the service's owning team, the environment's
  approver groups and its extra requester groups, superusers, and CI tokens with the
  `promote` scope for their services;
- approve or reject: a person (never a CI token) in one of the environment's approver groups,
  who did not request the promotion and has not decided on it already; superusers are not
  approvers by right — approvals are about people, not permissions. A request made with a CI
  token counts as requested by the person who created that token (`accountable_person`), so
  nobody approves their own request by routing it through CI;
- request during a change freeze of the environment: only a break-glass promotion (where the
  environment allows it) or a rollback; the refusal says which would pass, or to wait for its end;
- approve during a change freeze of the environment: nobody, unless the promotion is a break-glass
  one or a rollback; a request made before the freeze waits for its end, or is rejected or cancelled;
- cancel: whoever requested it, an approver of the environment, or a superuser, before the
  GitOps commit starts;
- supersede (a newer request replaces one awaiting approval): anyone who may request, while it has
  no approval; once someone approved it, only whoever may cancel it (the approvers are told);
- break-glass: only where the environment allows it, by someone who may request there, with
  a reason; approvals are still required;
- stop a soak (it fails, and the environment's rollback rule applies): whoever may roll back
  there, people only, with a comment, while the promotion is deployed or verifying;
- a rollback needs the environment's rollback approvals (none when the pipeline rolls back by
  policy), and is refused when fewer people than that could ever approve it;
- which release may enter (`why_not_enter`): a promotion goes forwards, after its release was verified
  in the previous environment and while the newest result of each check required there still passes
  (`why_not_go_on`: a check that fails after the verdict holds it back until a passing rerun); a
  rollback goes to a release that ran there before. A late hotfix — a hotfix of the release running
  there, numbered below newer builds — goes in as a promotion under the normal approvals although it
  is numbered below what runs there, and without passing an earlier environment that already runs a
  newer build (it could only get there by a rollback); a rollback of it may go back to the release it
  fixed.
"""

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.utils import timezone

from nexo_portal.lib.errors import Refused
from nexo_portal.lib.words import listed

from . import verification
from .models import ApprovalDecision, Deployment, DeploymentSource, Promotion, PromotionKind, PromotionState, Release


class PromotionError(Refused):
    """A promotion rule refused the action; the message is written for the person who asked."""


class Refusal(str):
    """The sentence explaining a refusal, remembering whether it is about who asked, or which input
    is at fault (`field`)."""

    forbidden = False
    field = None


def forbidden(text):
    refusal = Refusal(text)
    refusal.forbidden = True
    return refusal


def missing(field, text):
    """A refusal because an input the rule needs was not given, such as a rejection's comment."""
    refusal = Refusal(text)
    refusal.field = field
    return refusal


def is_ci_token(actor):
    return getattr(actor, "is_ci_token", False)


def is_person(actor):
    return actor is not None and not is_ci_token(actor) and getattr(actor, "is_authenticated", False)


def accountable_person_id(actor):
    """Whom a request by `actor` counts as for separation of duties (an id, or None for the pipeline):
    the person, or for a CI token the person who created it."""
    if is_person(actor):
        return actor.pk
    if is_ci_token(actor):
        return actor.token.created_by_id
    return None


def group_ids(user):
    """The ids of `user`'s groups, read once per user object."""
    if not hasattr(user, "_nexo_group_ids"):
        user._nexo_group_ids = set(user.groups.values_list("id", flat=True))
    return user._nexo_group_ids


def groups_of(environment, relation):
    """An environment's `approver_groups` or `requester_groups`."""
    # Prefetched (the board prefetches them for every cell): read without building a manager each time.
    prefetched = getattr(environment, "_prefetched_objects_cache", {}).get(relation)
    return list(prefetched if prefetched is not None else getattr(environment, relation).all())


def _approver_groups(environment):
    return groups_of(environment, "approver_groups")


def describe_groups(groups):
    """The groups' names in words ("qa-approvers or sre"); "" when there are none, so that each
    sentence says what that means instead of naming a group that does not exist."""
    return describe_groups_by_name(sorted(group.name for group in groups), nobody="")


def no_approver_group(environment):
    return f"{environment.name} has no approver group yet; an administrator must set one in the admin"


def from_approvers(environment):
    """ " from qa-approvers or sre", to end a phrase such as "one approval"; or, where the environment
    has no approver group, what must be done about it."""
    groups = describe_groups(_approver_groups(environment))
    return f" from {groups}" if groups else f" ({no_approver_group(environment)})"


def another_approver(environment, verb):
    """Who else must decide, in words: the real groups, or why nobody can yet."""
    groups = describe_groups(_approver_groups(environment))
    if not groups:
        return f"nobody can {verb} it until then: {no_approver_group(environment)}"
    return f"another approver from {groups} must {verb} it"


def is_approver(user, environment):
    if not is_person(user):
        return False
    return bool(group_ids(user) & {group.pk for group in _approver_groups(environment)})


def why_not_request(actor, service, environment, *, kind=PromotionKind.MANUAL, is_emergency=False, reason=""):
    if actor is None:
        return None  # the pipeline itself
    if is_ci_token(actor):
        token = actor.token
        if not token.allows_service(service):
            return forbidden(f"The API token '{token.name}' is not allowed to act on {service.name}.")
    elif not is_person(actor):
        return forbidden("Sign in to request a promotion.")
    elif not actor.is_superuser:
        allowed_groups = {group.pk for group in _approver_groups(environment)}
        # .all() rather than values_list so a page that prefetched the groups asks nothing more.
        allowed_groups |= {group.pk for group in groups_of(environment, "requester_groups")}
        if service.team_id:
            allowed_groups.add(service.team_id)
        if not group_ids(actor) & allowed_groups:
            return forbidden(
                f"Only {who_may_request(service, environment)} may request promotions of "
                f"{service.name} into {environment.name}."
            )
    if is_emergency:
        if not environment.allows_break_glass:
            return Refusal(f"Break-glass promotions are not allowed into {environment.name}.")
        if not reason.strip():
            return Refusal("A break-glass promotion needs a reason: say which incident it is for.")
        if is_ci_token(actor):
            return forbidden("Break-glass promotions are requested by people, not API tokens.")
    return None


def is_hotfix_of(release, running):
    """`release` is a hotfix of `running` (a release, or None): it may replace it whatever its number."""
    return running is not None and release.is_hotfix and release.fixes_id == running.pk


def why_not_roll_back_what_runs(service, environment, running):
    """Why what runs in the place (`running`: Deployment.objects.running) may not be rolled back (None: it may).

    A rollback takes out the promotion that put the release there. A release recorded running without
    one (set by hand and imported from the GitOps history) was not the portal's to put there, nor is it
    the portal's to take out; rolling back the promotion before it instead would take out a release
    that no longer runs.
    """
    if running is None:
        return Refusal(f"Nothing runs in {environment.name} for {service.name} yet; there is nothing to roll back.")
    if running.promotion_id is None:
        how = "imported from the GitOps history" if running.source == DeploymentSource.IMPORT else "recorded"
        return Refusal(
            f"{service.name} {running.release.version} runs in {environment.name}, {how} rather than deployed by "
            "a portal promotion; the portal rolls back only what it deployed there."
        )
    return None


def why_not_enter(release, environment, kind, is_emergency, rolls_back, current, expected=None):
    """Why `release` may not enter `environment` as a promotion of `kind` (None: it may).

    `current` is the deployment running there (or None); `rolls_back` the promotion a rollback takes out.
    `expected`: the version the requester of a rollback saw running there. A rollback is decided on
    what runs, and that may change between the confirmation and the click (a colleague's hotfix goes
    out): it takes out only the release its requester confirmed.
    """
    service = release.service
    if kind == PromotionKind.ROLLBACK:
        taken_out = rolls_back.release if rolls_back else (current.release if current else None)
        if taken_out is None:
            return Refusal(f"Nothing runs in {environment.name} for {service.name} yet; there is nothing to roll back.")
        if expected is not None and expected != taken_out.version:
            return Refusal(
                f"{environment.name} now runs {service.name} {taken_out.version}, not {expected} as the rollback "
                f"you confirmed said; nothing was requested. Look again at what runs there, and roll back "
                f"{taken_out.version} if that is what you mean."
            )
        if not (release.calver < taken_out.calver or is_hotfix_of(taken_out, release)):
            return Refusal(
                f"A rollback goes to an older release than {taken_out.version}; {release.version} is not older."
            )
        if not Release.objects.rollback_targets(environment, taken_out).filter(pk=release.pk).exists():
            return Refusal(
                f"{service.name} {release.version} never ran in {environment.name}, so it cannot be rolled back to."
            )
        return None
    running = current.release if current else None
    if running is not None and running.pk == release.pk:
        return Refusal(f"{service.name} {release.version} already runs in {environment.name}.")
    late_hotfix = is_hotfix_of(release, running)
    if running is not None and release.calver < running.calver and not late_hotfix:
        return Refusal(
            f"{environment.name} runs {service.name} {running.version}, which is newer than {release.version}: "
            "request a rollback to go back."
        )
    previous = environment.previous()
    if previous is None or is_emergency:
        return None
    if Promotion.objects.filter(release=release, environment=previous, state=PromotionState.VERIFIED).exists():
        return why_not_go_on(release, environment, previous=previous)
    if late_hotfix:
        earlier = (
            Deployment.objects.current().filter(service=service, environment=previous).select_related("release").first()
        )
        if (
            earlier is not None
            and earlier.release.calver > release.calver
            and not is_hotfix_of(release, earlier.release)
        ):
            return None  # the earlier environment already runs a newer build: it could only go back there
    return Refusal(
        f"{service.name} {release.version} has not been verified in {previous.name}; "
        f"it must pass there before it can enter {environment.name}."
    )


def why_not_go_on(release, environment, *, previous=None, failing=None):
    """Why `release`, verified in the environment before `environment` (`previous`), may not go on into it
    now (None: it may): a check required there failed after the verdict. The newest result of a check
    counts (verification.failing_checks); a break-glass promotion does not ask, as it asks for no
    verification at all. `failing`: those results, where the caller read them already (the board)."""
    previous = previous or environment.previous()
    if previous is None:
        return None
    if failing is None:
        failing = verification.failing_checks(release, previous)
        verified = Promotion.objects.filter(release=release, environment=previous, state=PromotionState.VERIFIED)
        if failing and not verified.exists():
            return None  # never verified there: why_not_enter says so
    if not failing:
        return None
    names, details = verification.describe_failed(failing)
    return Refusal(
        f"{release.service.name} {release.version} was verified in {previous.name}, then {names} failed there"
        + (f" ({details})" if details else "")
        + f": it may not go on to {environment.name}. Fix it and register a new build, or have CI report a "
        f"passing rerun of {names} in {previous.name}."
    )


def why_not_report(actor, service):
    """Who may register builds of `service` and report their CI results: its team's CI.

    An API token (scoped and possibly limited to services) is how CI does it; a person may
    do it for the services their team owns, an administrator for any.
    """
    if is_ci_token(actor):
        token = actor.token
        if not token.allows_service(service):
            return forbidden(f"The API token '{token.name}' is not allowed to act on {service.name}.")
        return None
    if not is_person(actor):
        return forbidden("Sign in or use an API token to register builds and report CI results.")
    if actor.is_superuser or (service.team_id and service.team_id in group_ids(actor)):
        return None
    owners = f"members of {service.team.name}" if service.team_id else "its owning team (none is set)"
    return forbidden(
        f"Only {owners} may register builds of {service.name} or report their CI results; "
        "CI does it with an API token that has the register or report scope."
    )


def approvals_required(promotion):
    """A rollback follows its environment's rollback policy; the rollbacks the pipeline makes by
    policy need none: the policy itself is the approval."""
    if promotion.kind != PromotionKind.ROLLBACK:
        return promotion.environment.required_approvals
    if promotion.requested_by_id is None and not promotion.requested_via.startswith("api-token:"):
        return 0
    return promotion.environment.rollback_required_approvals


def rollback_approvers(actor, environments):
    """{environment id: the names of who could approve a rollback `actor` asked for there}, for every
    environment in one query: the active members of its approver groups other than the requester
    (superusers are not approvers by right)."""
    groups = {environment.pk: {group.pk for group in _approver_groups(environment)} for environment in environments}
    members = defaultdict(set)
    if any(groups.values()):
        requester = accountable_person_id(actor)
        memberships = get_user_model().groups.through.objects.filter(
            group_id__in=set().union(*groups.values()), user__is_active=True
        )
        for group_id, user_id, name in memberships.values_list("group_id", "user_id", "user__username"):
            if user_id != requester:
                members[group_id].add(name)
    return {pk: sorted(set().union(*(members[group] for group in ids))) for pk, ids in groups.items()}


def why_not_unapprovable_rollback(actor, environment, *, approvers=None):
    """A rollback nobody could ever approve is refused before it is made: in an incident, a request
    that waits for approvals that cannot come is worse than a refusal that says what to fix.

    Who could approve: `rollback_approvers()`, read here unless a page that asks for several
    environments read them for all at once (`approvers`).
    """
    required = environment.rollback_required_approvals
    if actor is None or required == 0:
        return None
    groups = _approver_groups(environment)
    names = rollback_approvers(actor, [environment])[environment.pk] if approvers is None else approvers
    if len(names) >= required:
        return None
    others = ""
    if is_person(actor):
        others = " other than you"
    elif accountable_person_id(actor) is not None:
        others = " other than the token's creator"
    who = f"only {len(names)} {'person' if len(names) == 1 else 'people'}{others} ({', '.join(names)}) can"
    if not names:
        who = f"nobody{others} can"
    needs = "one approval" if required == 1 else f"{required} distinct approvals"
    if not groups:
        return Refusal(
            f"A rollback in {environment.name} needs {needs}, and {no_approver_group(environment)} "
            f"(or lower the rollback approvals of {environment.name}): it could never be approved."
        )
    return Refusal(
        f"A rollback in {environment.name} needs {needs} from {describe_groups(groups)}, "
        f"and {who} give one: it could never be approved. Ask an administrator to lower the rollback approvals "
        f"of {environment.name} or to add approvers."
    )


# Where a page that reads many promotions prefetches their approvals as a plain list
# (Prefetch(..., to_attr=PREFETCHED_APPROVALS)): Django's own prefetch cache filters a queryset for
# each promotion, ~35 µs apiece, which the board paid for every promotion it shows.
PREFETCHED_APPROVALS = "prefetched_approvals"


def approvals_of(promotion):
    """The promotion's approvals and rejections, prefetched into a list or not."""
    prefetched = getattr(promotion, PREFETCHED_APPROVALS, None)
    return promotion.approvals.all() if prefetched is None else prefetched


def approvals_given(promotion):
    return sum(1 for approval in approvals_of(promotion) if approval.decision == ApprovalDecision.APPROVE)


def approvals_standing(promotion):
    """Where the approvals of `promotion` stand, as its approval's confirmation shows them: "2:sam,sara",
    how many it requires and who gave one. An approval confirmed there is held to it (why_not_approve's
    `expected`)."""
    approvers = [
        approval.user.get_username()
        for approval in approvals_of(promotion)
        if approval.decision == ApprovalDecision.APPROVE
    ]
    return f"{approvals_required(promotion)}:{','.join(approvers)}"


def _read_standing(standing):
    required, _, approvers = standing.partition(":")
    return (int(required) if required.isdigit() else None), [name for name in approvers.split(",") if name]


def _why_not_as_shown(promotion, expected):
    """An approval confirmed on a page that showed its approvals standing otherwise (`expected`, in the words
    of approvals_standing): another approval since may have made it the last one needed, so that it starts
    the GitOps commit its approver was told waits for others, or the reverse. Refused, saying what changed
    and what it does now."""
    if expected is None:
        return None
    required_then, approvers_then = _read_standing(expected)
    required, approvers = _read_standing(approvals_standing(promotion))
    if required_then == required and set(approvers_then) == set(approvers):
        return None
    changes = []
    if came := [name for name in approvers if name not in approvers_then]:
        changes.append(f"{listed(came)} approved")
    if gone := [name for name in approvers_then if name not in approvers]:
        changes.append(
            f"the approval of {gone[0]} no longer counts"
            if len(gone) == 1
            else f"the approvals of {listed(gone)} no longer count"
        )
    environment = promotion.environment
    if required_then != required:
        changes.append(f"{environment.name} now requires {required} approval{'s' if required != 1 else ''}")
    given = len(approvers)
    if given + 1 >= required:
        now = f"yours is now the last approval needed and starts the GitOps commit to {environment.name}"
    else:
        now = (
            f"yours is now approval {given + 1} of {required}: {required - given - 1} more will be needed before "
            "anything changes"
        )
    return missing(
        "expected",
        f"Since you opened this, {'; '.join(changes)}: {now}. Your approval is not given yet; approve again if "
        "you still mean to.",
    )


def _why_not_decide(promotion, user, verb, token_creator_id=None):
    """`token_creator_id`: who created the personal token `user` decides through (a superuser may make
    one for someone else), who must not be able to decide twice or on their own request through it."""
    environment = promotion.environment
    # The groups are named only in a refusal: most answers (the board asks 60 times) need none.
    if is_ci_token(user):
        groups = describe_groups(_approver_groups(environment))
        who = f"a person from {groups} must" if groups else f"a person must, and {no_approver_group(environment)}"
        return forbidden(f"API tokens of CI never {verb} promotions; {who}.")
    if not is_person(user):
        return forbidden(f"Sign in to {verb} promotions.")
    if promotion.state != PromotionState.AWAITING_APPROVAL:
        return Refusal(
            f"This promotion is {promotion.get_state_display().lower()}; only a promotion awaiting "
            f"approval can be {verb}d."
        )
    if promotion.requested_by_id == user.pk:
        return forbidden(f"You requested this promotion; {another_approver(environment, verb)}.")
    if promotion.accountable_requester_id == user.pk:
        return forbidden(
            f"This promotion was requested through the API token {promotion.requested_via.removeprefix('api-token:')}, "
            f"which you created, so it counts as your request; {another_approver(environment, verb)}."
        )
    # Every decision on a promotion awaiting approval is an approval (a rejection ends it). Rejecting it
    # supersedes one's own approval, as a later review does on GitHub: whoever finds a bug after
    # approving has a way back (transitions.reject withdraws the approval).
    if verb == "approve" and any(approval.user_id == user.pk for approval in approvals_of(promotion)):
        return Refusal(f"You have already decided on this promotion; {another_approver(environment, verb)}.")
    if token_creator_id is not None and token_creator_id != user.pk:
        if token_creator_id in (promotion.requested_by_id, promotion.accountable_requester_id):
            return forbidden(
                "This personal token was created by the person who requested this promotion, so deciding "
                f"through it counts as theirs; {another_approver(environment, verb)}."
            )
        if any(approval.user_id == token_creator_id for approval in approvals_of(promotion)):
            return forbidden(
                "This personal token was created by someone who has already decided on this promotion; "
                f"{another_approver(environment, verb)}."
            )
    if not is_approver(user, environment):
        groups = describe_groups(_approver_groups(environment))
        if not groups:
            return forbidden(
                f"Nobody may {verb} promotions into {environment.name} yet: {no_approver_group(environment)}."
            )
        return forbidden(f"Only members of {groups} may {verb} promotions into {environment.name}.")
    return None


def why_not_approve(promotion, user, token_creator_id=None, expected=None):
    """`expected`: where the approvals stood on the page the approval was confirmed on (approvals_standing)."""
    return (
        _why_not_decide(promotion, user, "approve", token_creator_id)
        or why_not_reach_quorum(promotion)
        or _why_not_as_shown(promotion, expected)
    )


def why_not_reach_quorum(promotion):
    """What keeps a promotion with enough approvals from being approved now, whoever approves: a
    freeze. The reconciler's approval at a lowered quorum (transitions.approve_where_quorum_is_met)
    follows it as a person's approval does."""
    return _why_not_during_freeze(promotion)


def freeze_holding(promotion):
    """The freeze that keeps `promotion` out of its environment now, or None.

    A freeze refuses what would enter the environment while it lasts, whenever it was requested
    or approved: approvals wait for its end, and so does the GitOps commit of a promotion approved
    before it began (jobs.commit_promotion). Break-glass promotions and rollbacks pass."""
    if promotion.is_emergency or promotion.kind == PromotionKind.ROLLBACK:
        return None
    return promotion.environment.active_freeze()


def held_committing(promotion):
    """Committing, and its GitOps commit held by a freeze: the push failed before the freeze began (its
    commit is not on the branch: the retry looked for it there first), and the retry waits for the
    freeze's end. It may be cancelled (transitions.cancel withdraws the retry unless a worker runs it),
    or nothing else, a rollback or a break-glass fix included, could enter the place until then."""
    return promotion.state == PromotionState.COMMITTING and freeze_holding(promotion) is not None


class HeldByFreeze(Exception):
    """Raised by a step about to write a promotion into the environment a freeze keeps it out of."""

    def __init__(self, freeze):
        super().__init__(f"frozen until {freeze.ends_at.isoformat()}: {freeze.reason}")
        self.freeze = freeze


def raise_if_frozen(promotion):
    """HeldByFreeze when a freeze keeps `promotion` out of its environment now (freeze_holding)."""
    freeze = freeze_holding(promotion)
    if freeze is not None:
        raise HeldByFreeze(freeze)


def frozen_until(environment, ends_at, reason):
    """That `environment` is frozen, until when and why: how every word about a freeze begins."""
    return f"{environment.name} is frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: {reason}."


def why_not_request_while_frozen(actor, service, environment, freeze):
    """Why a request that is neither break-glass nor a rollback may not enter `environment` while
    `freeze` lasts, and what would let it through: break-glass with the incident named, for whoever
    may break glass there (the refusal lands on the form's break-glass box), or the freeze's end."""
    frozen = frozen_until(environment, freeze.ends_at, freeze.reason)
    if is_person(actor) and why_not_request(actor, service, environment, is_emergency=True, reason="x") is None:
        return missing(
            "emergency",
            f"{frozen} Only a break-glass promotion may enter now: mark this one break-glass and name the incident "
            "it is for, or wait until the freeze ends.",
        )
    return Refusal(f"{frozen} It may be requested once the freeze ends.")


def _why_not_during_freeze(promotion):
    """An approval starts the commit, so a promotion requested before the freeze began waits for its
    end like a new request."""
    freeze = freeze_holding(promotion)
    if freeze is None:
        return None
    frozen = frozen_until(promotion.environment, freeze.ends_at, freeze.reason)
    return Refusal(f"{frozen} It may be approved once the freeze ends.")


def may_decide(promotion, user):
    """Whether `promotion` waits for `user`: they may approve or reject it now (one rule for the
    waiting count, the page of what waits for you, and the buttons)."""
    return why_not_approve(promotion, user) is None


def may_decide_once_unfrozen(promotion, user):
    """Whether `promotion` would wait for `user` but for a freeze of its environment: they may reject
    it now and approve it once the freeze ends."""
    return _why_not_decide(promotion, user, "approve") is None and freeze_holding(promotion) is not None


def why_not_reject(promotion, user, comment="x", token_creator_id=None):
    reason = _why_not_decide(promotion, user, "reject", token_creator_id)
    if reason is None and not comment.strip():
        return missing("comment", "Say why you reject it: a comment is required.")
    return reason


def why_not_cancel(promotion, actor):
    if promotion.state not in (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED) and not held_committing(
        promotion
    ):
        return Refusal(
            f"This promotion is {promotion.get_state_display().lower()}; it can only be cancelled before the "
            "GitOps commit starts, or while a change freeze holds it. Roll back instead."
        )
    if is_ci_token(actor):
        if promotion.requested_via == actor.audit_name():
            return None
        return forbidden("An API token may only cancel the promotions it requested.")
    if not is_person(actor):
        return forbidden("Sign in to cancel promotions.")
    if actor.is_superuser or promotion.requested_by_id == actor.pk or is_approver(actor, promotion.environment):
        return None
    return forbidden(
        "Only the requester, an approver of this environment or an administrator may cancel this promotion."
    )


def why_not_supersede(promotion, actor):
    """A newer request replaces the one awaiting approval. Approvals already given are not thrown away
    by just anyone: only whoever may cancel the promotion may replace it then (the pipeline may not)."""
    given = approvals_given(promotion)
    if given == 0 or (actor is not None and why_not_cancel(promotion, actor) is None):
        return None
    approvers = ", ".join(
        approval.user.get_username()
        for approval in approvals_of(promotion)
        if approval.decision == ApprovalDecision.APPROVE
    )
    return forbidden(
        f"Promotion #{promotion.pk} ({promotion.service.name} {promotion.release.version} → "
        f"{promotion.environment.name}) already has {given}/{approvals_required(promotion)} approvals "
        f"({approvers}); only its requester, an approver of {promotion.environment.name} or an administrator "
        "may replace it. Ask one of them to cancel it, or wait for its decision."
    )


def why_not_lift_hold(hold, user):
    """Who may lift a hold on automatic promotions: a person who may request promotions there."""
    if hold.lifted_at:
        return Refusal("This hold was already lifted.")
    if not is_person(user) or why_not_request(user, hold.service, hold.environment):
        return forbidden(
            f"Only people who may promote {hold.service.name} into {hold.environment.name} may lift its hold: "
            f"{who_may_request(hold.service, hold.environment)}."
        )
    return None


def describe_requesters(service, environment):
    """The groups whose members may request promotions of the service into the environment, in
    words; "" when there are none (then only administrators may)."""
    groups = {group.name for group in _approver_groups(environment)}
    groups |= {group.name for group in environment.requester_groups.all()}
    if service.team_id:
        groups.add(service.team.name)
    return describe_groups_by_name(sorted(groups), nobody="")


def who_may_request(service, environment):
    """ "members of backend-team or sre", or "administrators (... no group is set)" — for a sentence."""
    groups = describe_requesters(service, environment)
    if groups:
        return f"members of {groups}"
    return f"administrators (no team owns {service.name}, and {environment.name} has no approver or requester group)"


def describe_groups_by_name(names, nobody):
    if not names:
        return nobody
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def why_not_stop(promotion, actor, comment="x"):
    """Stopping a soak: a person who may roll back the service there, with a comment, while it soaks.

    The soak fails at once and the environment's rollback rule applies, as for any failed soak.
    """
    if promotion.state not in (PromotionState.DEPLOYED, PromotionState.VERIFYING):
        return Refusal(
            f"This promotion is {promotion.get_state_display().lower()}; only a promotion that is soaking "
            "(deployed or verifying) can be stopped."
        )
    if is_ci_token(actor):
        return forbidden("API tokens of CI never stop a soak; a person who may roll back must.")
    if not is_person(actor):
        return forbidden("Sign in to stop a soak.")
    refusal = why_not_request(actor, promotion.service, promotion.environment, kind=PromotionKind.ROLLBACK)
    if refusal:
        return refusal
    if not comment.strip():
        return missing("comment", "Say why you stop it: a comment is required.")
    return None


def until_it_finishes(promotion):
    """What to do while a promotion is on its way: a soak may be stopped, anything else finishes first."""
    if promotion.state in (PromotionState.DEPLOYED, PromotionState.VERIFYING):
        stop = "Stop soak" if promotion.is_rollback else "Stop and roll back"
        return f"stop its soak ({stop}, on the promotion's page) or wait for it to finish"
    if promotion.state in (PromotionState.APPROVED, PromotionState.COMMITTING) and (
        freeze := freeze_holding(promotion)
    ):
        ends = timezone.localtime(freeze.ends_at)
        return f"its GitOps commit waits for the change freeze until {ends:%Y-%m-%d %H:%M}: cancel it first"
    return "wait for it to finish"


def offered_decisions(promotion, user):
    """The decisions a promotion offers in its state, each with why `user` may not take it (None: may).

    Deciding and cancelling only mean something before the GitOps commit starts; stopping, while it soaks.
    """
    if promotion.state == PromotionState.AWAITING_APPROVAL:
        return [
            ("approve", why_not_approve(promotion, user)),
            ("reject", why_not_reject(promotion, user)),
            ("cancel", why_not_cancel(promotion, user)),
        ]
    if promotion.state == PromotionState.APPROVED or held_committing(promotion):
        return [("cancel", why_not_cancel(promotion, user))]
    if promotion.state in (PromotionState.DEPLOYED, PromotionState.VERIFYING):
        return [("stop", why_not_stop(promotion, user))]
    return []


def ensure(reason):
    if reason:
        raise PromotionError(
            str(reason), forbidden=getattr(reason, "forbidden", False), field=getattr(reason, "field", None)
        )
