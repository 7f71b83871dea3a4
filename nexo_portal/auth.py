"""Who is signed in: the login requirement for every page, API excepted (DRF checks its own)."""

from django.contrib.auth.middleware import LoginRequiredMiddleware
from rest_framework.views import APIView


class PortalLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs a signed-in user, except those marked `@login_not_required`.

    API views are left to Django REST framework, whose authentication classes answer
    401/403 with a JSON body instead of redirecting a CI pipeline to a login form.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        view_class = getattr(view_func, "cls", None)
        if view_class is not None and issubclass(view_class, APIView):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
