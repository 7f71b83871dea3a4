"""The default pipeline of versioning-and-promotion.md, as data: used by seed_demo and the tests."""

from datetime import timedelta

from django.contrib.auth.models import Group

from .models import Environment

# {range}: the time the deployment being verified has been healthy, up to 5 minutes (see the
# field's help text), so that a rollback's soak never measures the release it took out.
ERROR_RATE_QUERY = (
    'sum(rate(http_requests_total{service="{service}",environment="{environment}",status=~"5.."}[{range}]))'
    ' / sum(rate(http_requests_total{service="{service}",environment="{environment}"}[{range}]))'
)

DEFAULT_ENVIRONMENTS = [
    {
        "name": "develop",
        "position": 1,
        "auto_promote": True,
        "required_approvals": 0,
        "verification_window": timedelta(minutes=5),
        "rollback_on_failed_verification": True,
        "promotion_slo_minutes": 10,
        "promotion_slo_success_percent": 99,
    },
    {
        "name": "qa",
        "position": 2,
        "auto_promote": True,
        "required_approvals": 0,
        "verification_window": timedelta(minutes=5),
        "required_checks": ["e2e", "performance", "security"],
        "rollback_on_failed_verification": True,
        "promotion_slo_minutes": 15,
        "promotion_slo_success_percent": 98,
    },
    {
        "name": "staging",
        "position": 3,
        "auto_promote": False,
        "required_approvals": 1,
        "rollback_required_approvals": 1,
        "verification_window": timedelta(minutes=30),
        "rollback_on_failed_verification": False,
        # The reference docs give staging 30 minutes and a 30-minute soak, and say "soak included"
        # of production's 60 only: the portal's target counts the soak, so staging's 30 minutes come on
        # top of it, as production's do. 30 with the soak in it would be missed by every promotion.
        "promotion_slo_minutes": 60,
        "promotion_slo_success_percent": 98,
        "pull_request_reviewer_teams": ["platform-team"],
    },
    {
        "name": "production",
        "position": 4,
        "auto_promote": False,
        "required_approvals": 2,
        "rollback_required_approvals": 1,
        "verification_window": timedelta(minutes=30),
        "rollback_on_failed_verification": False,
        "promotion_slo_minutes": 60,
        "promotion_slo_success_percent": "99.9",
        "promotion_slo_rollback_percent": 5,
        "allows_break_glass": True,
        # The reference docs name production's file values-prod.yaml.
        "values_path_template": "helm/{service}/values-prod.yaml",
        # Used when production is delivered by pull request (docs/pull-requests.md): the reference
        # docs' branch promote/nexo-be-prod-2026.02.1, label and CODEOWNERS teams.
        "branch_name": "prod",
        "pull_request_labels": ["production-deploy"],
        "pull_request_reviewer_teams": ["sre-team", "platform-leads"],
    },
]

DEFAULT_APPROVER_GROUPS = {"staging": ["platform-team"], "production": ["sre-team", "platform-leads"]}


def ensure_default_environments(**overrides):
    """Create the four environments with the default policy where they do not exist yet.

    `overrides` are applied to every environment created (tests shorten the soak this way).
    Returns the environments by name.
    """
    environments = {}
    for definition in DEFAULT_ENVIRONMENTS:
        fields = {"prometheus_query_template": ERROR_RATE_QUERY, **definition, **overrides}
        name = fields.pop("name")
        environment, created = Environment.objects.get_or_create(name=name, defaults=fields)
        if created:
            for group_name in DEFAULT_APPROVER_GROUPS.get(name, []):
                environment.approver_groups.add(Group.objects.get_or_create(name=group_name)[0])
        environments[name] = environment
    return environments
