"""GitHub sign-in: the organization backend, and the pipeline steps that decide who gets in
and which Django groups their GitHub teams give them."""

import logging
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth.models import Group
from social_core.backends.github_enterprise import GithubEnterpriseOrganizationOAuth2
from social_core.exceptions import AuthPolicyError, AuthResponseError

from audit import log as audit_log
from audit.models import AuditAction

from .lib import metrics

logger = logging.getLogger(__name__)


class GitHubOrganizationOAuth2(GithubEnterpriseOrganizationOAuth2):
    """social-core's organization backend (members of SOCIAL_AUTH_GITHUB_ORG_NAME only).

    The Enterprise variant reads the web and API addresses from settings
    (SOCIAL_AUTH_GITHUB_ORG_URL and _API_URL), so one backend serves github.com, GitHub
    Enterprise Server and the test suite's GitHub; the name keeps the usual `github-org`.
    """

    name = "github-org"
    title = "GitHub"


class SignInRefused(AuthPolicyError):
    """A sign-in the portal itself refuses; `reason` is written for the person signing in."""

    def __init__(self, backend, reason):
        super().__init__(backend, reason, stage="pipeline")
        self.reason = reason


def refuse_deactivated_account(backend, user=None, *args, **kwargs):
    """Pipeline step: a deactivated portal account stays out, with a message that says so."""
    if user is not None and not user.is_active:
        raise SignInRefused(
            backend,
            "Your portal account is deactivated, so GitHub sign-in cannot let you in. "
            "Ask a platform engineer to re-activate it.",
        )


def team_group_mapping():
    """GITHUB_TEAM_GROUPS as {(organization, team slug): group name}, lower-cased.

    A bare `slug` key means a team of the sign-in organization (GITHUB_ORG); `org/slug`
    names the organization explicitly. A same-named team in some other organization the
    person belongs to grants nothing.
    """
    mapping = {}
    for key, group_name in settings.GITHUB_TEAM_GROUPS.items():
        organization, _, slug = key.strip().rpartition("/")
        organization = organization or settings.SOCIAL_AUTH_GITHUB_ORG_NAME
        mapping[(organization.lower(), slug.lower())] = group_name.strip()
    return mapping


def fetch_teams(backend, access_token):
    """Every (organization, slug) the person is a member of, following GitHub's `Link` pages."""
    api_url = backend.api_url()
    url = urljoin(api_url, "user/teams?per_page=100")
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    teams = set()
    while url:
        with metrics.outgoing_call("github", "GET /user/teams"):
            response = backend.request(url, headers=headers, stage="pipeline")
        try:
            teams.update((team["organization"]["login"].lower(), team["slug"].lower()) for team in response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AuthResponseError(backend, "GET /user/teams", code="malformed_response", stage="pipeline") from error
        url = response.links.get("next", {}).get("url")
        # The access token goes only to the API it came from, whatever a Link header says.
        if url and not url.startswith(api_url):
            raise AuthResponseError(backend, "GET /user/teams pagination", code="malformed_response", stage="pipeline")
    return teams


def sync_team_groups(backend, user, response, *args, **kwargs):
    """Pipeline step, at every sign-in: the person's mapped groups follow their GitHub teams.

    Adds the groups of the teams they are in, removes the mapped groups of teams they
    left, and leaves every group that GITHUB_TEAM_GROUPS does not mention alone (groups an
    operator gave by hand). If the teams cannot be read, sign-in fails rather than keep
    rights the person may have lost. Groups decide who may approve, so a change is audited
    as the same change made in the admin is (each side's groups), with the change itself.
    """
    mapping = team_group_mapping()
    if not mapping:
        return
    teams = fetch_teams(backend, response["access_token"])
    wanted = {group_name for team, group_name in mapping.items() if team in teams}
    managed = set(mapping.values())
    with audit_log.chain_transaction():
        groups_before = sorted(user.groups.values_list("name", flat=True))
        current = managed.intersection(groups_before)
        added = sorted(wanted - current)
        removed = sorted(current - wanted)
        if not (added or removed):
            return
        if added:
            user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in added))
        if removed:
            user.groups.remove(*Group.objects.filter(name__in=removed))
        groups_after = sorted(set(groups_before).union(added).difference(removed))
        summary = f"added to {', '.join(added) or '—'}; removed from {', '.join(removed) or '—'}"
        audit_log.record(
            AuditAction.GROUPS_SYNCED,
            message=f"user {user.get_username()}'s GitHub teams changed their groups at sign-in: {summary}",
            data={"model": user._meta.label, "object": user.pk, "changes": {"groups": [groups_before, groups_after]}},
        )
    logger.info("GitHub teams of %s: %s", user.get_username(), summary)
