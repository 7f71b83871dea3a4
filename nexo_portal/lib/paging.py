"""Lists in pages (`?page=`): which page numbers there are, the same on the pages and in the API.

A page number is whole, written in ASCII digits (leading zeros allowed), from 1 to the last page.
Anything else names no page: the pages answer 404 and the API 400 (its schema says so) or 404
(past the last), each with a sentence that gives the pages there are. Django's `get_page()` would
show the last page for `?page=0` and the first for `?page=x`, a page the reader did not ask for.
"""

from django.core import paginator

# The schema's bound on `page` and `page_size` numbers: ten digits at most, so int() stays cheap.
MAX_PAGE = 2**31 - 1


def whole_number(text: str, highest: int) -> int | None:
    """`text` as a whole number from 1 to `highest`, or None."""
    digits = text.lstrip("0")  # int() of thousands of digits is slow, and past 4,300 an error
    if text.isascii() and text.isdigit() and 0 < len(digits) <= 10 and int(digits) <= highest:
        return int(digits)
    return None


class Paginator(paginator.Paginator):
    """Django's, refusing what names no page with a sentence that says which pages there are."""

    def validate_number(self, number):
        text = str(number)
        found = whole_number(text, MAX_PAGE)
        if found is None or found > self.num_pages:
            shown = text if len(text) <= 20 else f"{text[:20]}…"
            raise paginator.EmptyPage(f"There is no page {shown}: {self._pages_there_are()}.")
        return found

    def _pages_there_are(self):
        if self.num_pages == 1:
            return "this list has only page 1"
        return f"give a page number from 1 to {self.num_pages}"


def page_of(object_list, per_page, asked):
    """The page `asked` (`?page=` as given; absent or empty: the first) of `object_list`. Raises
    `InvalidPage`, whose message is the sentence to show, when there is no such page."""
    return Paginator(object_list, per_page).page(asked or 1)
