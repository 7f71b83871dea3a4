from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """`?page=2&page_size=100`: 50 a page by default, at most 500; a page size that is not a number is an error."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        text = request.query_params.get(self.page_size_query_param)
        if text is not None and not (text.isdigit() and 1 <= int(text) <= self.max_page_size):
            raise ValidationError({"page_size": f"Give a whole number from 1 to {self.max_page_size}."})
        return super().get_page_size(request)
