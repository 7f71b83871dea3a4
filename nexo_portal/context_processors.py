from django.conf import settings

from releases.waiting import Waiting

from .auth import github_sign_in_enabled


def sign_in(request):
    """Tell templates whether GitHub sign-in is configured, and for which organization."""
    return {"github_enabled": github_sign_in_enabled(), "github_org": settings.SOCIAL_AUTH_GITHUB_ORG_NAME}


def waiting(request):
    """What waits for the signed-in person (releases/waiting.py), counted only by pages that show it."""
    user = getattr(request, "user", None)
    return {"waiting": Waiting(user)} if user is not None and user.is_authenticated else {}
