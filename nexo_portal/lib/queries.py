"""Small helpers for querysets."""


def one_or_none(queryset):
    """The row of `queryset`, or None, where a unique constraint allows at most one.

    Unlike first(), it asks for no ORDER BY, which on the registration's hot path costs more to
    build than the query itself; more than one row raises MultipleObjectsReturned, as get() does.
    """
    try:
        return queryset.get()
    except queryset.model.DoesNotExist:
        return None
