"""`?ordering=` as the schema says it: the fields a list offers, each optionally after `-`, separated by
commas. Anything else is a 400 naming the fields, where Django REST framework's OrderingFilter drops
what it does not know and answers in its default order as if it had been asked for it. A field may
stand for several columns (`ordering_columns`): a release's version sorts as CalVer, not as text."""

import re

from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter


def _pattern(offered):
    names = "|".join(re.escape(name) for name in offered)
    return f"^-?({names})(,-?({names}))*$"


def _offered(view):
    return ", ".join(view.ordering_fields)


class StrictOrderingFilter(OrderingFilter):
    """Orders by the view's `ordering_fields` only; views using it list them, and in `ordering_columns`
    the columns a field sorts by when they are not the field itself."""

    def get_ordering(self, request, queryset, view):
        given = request.query_params.get(self.ordering_param)
        if not given:
            return self.get_default_ordering(view)
        if not re.fullmatch(_pattern(view.ordering_fields), given):
            raise ValidationError(
                {
                    self.ordering_param: [
                        f"Order by {_offered(view)}: one or more, separated by commas without spaces, each "
                        f"preceded by - for the largest first (e.g. -{view.ordering_fields[0]})."
                    ]
                }
            )
        columns = getattr(view, "ordering_columns", {})
        ordering = []
        for term in given.split(","):
            name = term.removeprefix("-")
            sign = "-" if term != name else ""
            ordering += [sign + column for column in columns.get(name, [name])]
        return ordering

    def get_schema_operation_parameters(self, view):
        [parameter] = super().get_schema_operation_parameters(view)
        parameter["description"] = (
            f"Order by {_offered(view)}, separated by commas; - before a field puts the largest first."
        )
        parameter["schema"]["pattern"] = _pattern(view.ordering_fields)
        return [parameter]
