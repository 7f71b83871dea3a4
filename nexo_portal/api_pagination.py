from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

from .lib import paging


class Pagination(PageNumberPagination):
    """`?page=2&page_size=100`: 50 a page by default, at most 500.

    Both are whole numbers in the ranges the schema states; anything else is a 400 naming the
    parameter. A page past the last one is a 404 naming `page` and saying which pages there are.
    """

    page_size_query_param = "page_size"
    max_page_size = 500
    last_page_strings = ()  # the schema says page is an integer: no "last"
    django_paginator_class = paging.Paginator
    invalid_page_message = "{message}"

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound as past_the_last:
            raise NotFound({self.page_query_param: past_the_last.detail}) from None

    def get_page_size(self, request):
        self._check(request, self.page_size_query_param, self.max_page_size, "Give a whole number from 1 to 500.")
        return super().get_page_size(request)

    def get_page_number(self, request, paginator):
        self._check(request, self.page_query_param, paging.MAX_PAGE, "Give a page number from 1.")
        return super().get_page_number(request, paginator)

    @staticmethod
    def _check(request, name, highest, message):
        text = request.query_params.get(name)
        if text is not None and paging.whole_number(text, highest) is None:
            raise ValidationError({name: message})

    def get_schema_operation_parameters(self, view):
        page, page_size = super().get_schema_operation_parameters(view)
        page["schema"].update(minimum=1, maximum=paging.MAX_PAGE)
        page_size["schema"].update(minimum=1, maximum=self.max_page_size)
        page_size["description"] = f"Results per page: 1 to {self.max_page_size}, 50 when left out."
        return [page, page_size]
