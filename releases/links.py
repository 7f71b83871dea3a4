"""Links out of the portal: Argo CD's application page, the GitOps commit, an environment's
dashboard and the source repository's comparison of two commits.

Each returns "" when the setting or template it needs is blank, or gives something other than
an http(s) address, so a page shows text instead of a broken or unsafe link.
"""

from urllib.parse import quote

from django.conf import settings

from environments.models import render_template
from nexo_portal.lib.inert import is_http_url


def _http(url):
    return url if url and is_http_url(url) else ""


def argocd_application(service, environment):
    """The application's page in Argo CD's web UI (ARGOCD_UI_URL)."""
    if not settings.ARGOCD_UI_URL:
        return ""
    return _http(f"{settings.ARGOCD_UI_URL.rstrip('/')}/applications/{quote(service.argocd_app(environment))}")


def gitops_commit(sha):
    """A GitOps commit on the forge (GITOPS_COMMIT_URL_TEMPLATE, `{sha}` filled in)."""
    if not sha or not settings.GITOPS_COMMIT_URL_TEMPLATE:
        return ""
    return _http(settings.GITOPS_COMMIT_URL_TEMPLATE.replace("{sha}", sha))


def dashboard(service, environment):
    """The environment's dashboard of the service (its `dashboard_url_template`)."""
    template = environment.dashboard_url_template
    if not template:
        return ""
    return _http(render_template(template, service=quote(service.name), environment=quote(environment.name)))


def compare(service, base_sha, head_sha):
    """The source repository's comparison of two commits, as GitHub (and Gitea, Forgejo) lay it out:
    <repository>/compare/<base>...<head>."""
    if not (service.source_repo_url and base_sha and head_sha) or base_sha == head_sha:
        return ""
    repository = service.source_repo_url.rstrip("/").removesuffix(".git")
    return _http(f"{repository}/compare/{base_sha}...{head_sha}")
