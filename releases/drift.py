"""Where a place stands against the others and against its GitOps file, in the words the board,
the promotion page, the audit log and Slack share.

How far one place is behind another: `builds_behind`.

What a place's GitOps values file holds where it differs from what runs there, said once for the
board, the promotion page and the audit log. The reconciler's drift check reads the file and writes
what it found on the place's deployment (`drifted_tag`, and `drifted_tag_committed_by` when the portal
wrote it).

A tag the portal's own last commit there wrote is not drift: a promotion whose sync failed, or a
rollback that did not finish, left it. That is said with the promotion, so that whoever reads it knows
what runs, what the branch Argo CD follows holds, and where to look.
"""

from .models import PromotionKind, PromotionState

OUTSIDE = "The GitOps repository was changed outside the portal"


def builds(count: int) -> str:
    """A count of builds: "1 build", "29 builds"."""
    return f"{count} build{'' if count == 1 else 's'}"


def builds_behind(count: int, place: str) -> str:
    """The sentence the board, the audit log and Slack share: "1 build behind develop"."""
    return f"{builds(count)} behind {place}"


def portal_commit(path, tag, running, promotion):
    """The sentence for a values file at `path` that holds `tag` as the portal committed it for
    `promotion`, which did not finish, where the portal deployed `running`.

    `promotion`: a Promotion, or any object with its pk, kind, state, failed_step and applied_health
    (the board reads them as a row)."""
    kind = "rollback" if promotion.kind == PromotionKind.ROLLBACK else "promotion"
    ended = PromotionState(promotion.state).label.lower()
    if promotion.failed_step:
        ended += f" at {promotion.failed_step}"
    if promotion.applied_health:
        # Its manifests run there, unhealthy: what the deployment names is not what runs.
        now = f"Argo CD applied it, and it came up {promotion.applied_health}"
    else:
        now = f"{running} still runs, and a sync of the branch would apply {tag}"
    return f"{path} says {tag}, committed by the portal for {kind} #{promotion.pk}, which {ended}: {now}."
