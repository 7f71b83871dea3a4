from django.conf import settings


def sign_in(request):
    """Tell templates whether GitHub sign-in is configured, and for which organization."""
    return {
        "github_enabled": bool(settings.SOCIAL_AUTH_GITHUB_ORG_KEY and settings.SOCIAL_AUTH_GITHUB_ORG_NAME),
        "github_org": settings.SOCIAL_AUTH_GITHUB_ORG_NAME,
    }
