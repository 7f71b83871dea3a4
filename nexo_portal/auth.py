"""Who is signed in: the login requirement for every page (API excepted: DRF checks its own),
the local sign-in form, and readable messages when GitHub sign-in fails."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.core.exceptions import ValidationError
from rest_framework.views import APIView
from social_django.middleware import SocialAuthExceptionMiddleware

from .github import SignInRefused


def github_sign_in_enabled():
    return bool(settings.SOCIAL_AUTH_GITHUB_ORG_KEY and settings.SOCIAL_AUTH_GITHUB_ORG_NAME)


# The sign-in page after a form was sent by someone whose session had ended (an approval left open
# past SESSION_HOURS): the redirect to it looks like any other, and the form's action did not happen.
NOT_CARRIED_OUT = (
    "Your session had ended, so what you sent was not carried out: nothing was changed. Sign in, then do it again."
)


class PortalLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs a signed-in user, except those marked `@login_not_required`.

    API views are left to Django REST framework, whose authentication classes answer
    401/403 with a JSON body instead of redirecting a CI pipeline to a login form.
    A form sent without a session (it ended while the form was open; the CSRF cookie outlives
    it, so the check passes) is redirected to sign in like a page, with a message saying it
    was not carried out: `next` brings the person back to its page, where they send it again.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        view_class = getattr(view_func, "cls", None)
        if view_class is not None and issubclass(view_class, APIView):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    def handle_no_permission(self, request, view_func):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            messages.warning(request, NOT_CARRIED_OUT)
        return super().handle_no_permission(request, view_func)


def client_address(request):
    """The address a request came from: behind the TLS load balancer (BEHIND_TLS_PROXY), the one
    it appended to X-Forwarded-For, since the connection itself comes from the balancer."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.SECURE_PROXY_SSL_HEADER and forwarded:
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR")


class LocalSignInForm(AuthenticationForm):
    """User name and password: break-glass staff accounts once GitHub sign-in is configured,
    any active account when it is not (a first run, the demo)."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if github_sign_in_enabled() and not user.is_staff:
            raise ValidationError(
                "Please sign in with GitHub: local accounts are only for break-glass staff access "
                f"while GitHub sign-in for the {settings.SOCIAL_AUTH_GITHUB_ORG_NAME} organization is configured.",
                code="use_github",
            )


_RESTART = (
    "This GitHub sign-in does not belong to this browser session: it expired, was already used, "
    "or was started in another browser. Please sign in again."
)
_GITHUB_UNREACHABLE = "GitHub could not be reached or is busy. Please try again in a few minutes."
_MISCONFIGURED = (
    "GitHub sign-in is not set up correctly on the portal. Please tell a platform engineer; "
    "the details are in the portal's log."
)
# social-core's error codes (social_core.exceptions.REASONS) -> what the person reads.
SIGN_IN_ERROR_MESSAGES = {
    "membership_required": (
        "Your GitHub account is not a member of the {organization} organization, so it cannot sign in here. "
        "Ask an owner of {organization} to add you, then sign in again."
    ),
    "authorization_declined": (
        "GitHub sign-in was cancelled: the portal was not given access to your GitHub account. "
        "Sign in again and authorize it to continue."
    ),
    "authorization_code_rejected": (
        "GitHub did not accept the sign-in code (it expired or was already used). Please sign in again."
    ),
    **dict.fromkeys(["state_mismatch", "session_context_missing", "missing_parameter", "user_mismatch"], _RESTART),
    **dict.fromkeys(["connection_failed", "timeout", "unavailable", "rate_limited"], _GITHUB_UNREACHABLE),
    **dict.fromkeys(["missing_setting", "invalid_setting", "tls_error"], _MISCONFIGURED),
}


class SignInErrorMiddleware(SocialAuthExceptionMiddleware):
    """Every GitHub sign-in failure ends on the login page (SOCIAL_AUTH_LOGIN_ERROR_URL) with
    a message that says what happened and what to do, instead of social-core's terse one."""

    def get_message(self, request, exception):
        if isinstance(exception, SignInRefused):
            return exception.reason
        if exception.provider_code in {"incorrect_client_credentials", "redirect_uri_mismatch"}:
            return _MISCONFIGURED
        if exception.code in SIGN_IN_ERROR_MESSAGES:
            return SIGN_IN_ERROR_MESSAGES[exception.code].format(organization=settings.SOCIAL_AUTH_GITHUB_ORG_NAME)
        return f"GitHub sign-in failed: {exception} Please sign in again."
