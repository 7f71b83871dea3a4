from django.conf import settings

from .auth import github_sign_in_enabled


def sign_in(request):
    """Tell templates whether GitHub sign-in is configured, and for which organization."""
    return {"github_enabled": github_sign_in_enabled(), "github_org": settings.SOCIAL_AUTH_GITHUB_ORG_NAME}
