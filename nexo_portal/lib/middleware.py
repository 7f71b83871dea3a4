"""Input no view should have to think about, refused before any view runs."""

from django.core.exceptions import BadRequest
from django.http import JsonResponse

from . import text
from .api import body, is_api

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class RefuseUnreadableInput:
    """Control characters in any query string or page form are a 400 (`text`); the API's bodies are its
    parsers' to check. Under /api/ an empty query parameter is a 400 too, as the schema says (minLength 1):
    `?team=` meaning "every team" to one endpoint and "no team" to another helped nobody.

    Answers in the API's error shape under /api/, with the 400 page elsewhere.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = is_api(request)
        try:
            text.check_pairs(request.GET.lists(), multiline=False)
            if api:
                empty = next((name for name, values in request.GET.lists() if "" in values), None)
                if empty is not None:
                    raise text.Unreadable("Give a value, or leave the parameter out.", empty)
            if not api and request.method == "POST" and request.content_type in FORM_TYPES:
                text.check_pairs(request.POST.lists(), multiline=True)
        except text.Unreadable as refusal:
            if api:
                return JsonResponse(body(400, "invalid", [(refusal.field, "invalid", str(refusal))]), status=400)
            raise BadRequest(f"{refusal.field}: {refusal}" if refusal.field else str(refusal)) from None
        return self.get_response(request)
