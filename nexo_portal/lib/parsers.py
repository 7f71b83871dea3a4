"""Django REST framework's parsers, refusing control characters and over-deep JSON (`text`).

A module of their own: DRF reads DEFAULT_PARSER_CLASSES while `rest_framework.views` is imported,
so they may import nothing that imports it.
"""

from rest_framework import parsers

from . import text


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # Python's own parser gives up near a thousand levels; say so in the same words as below.
            raise text.Unreadable(f"The JSON is nested more than {text.MAX_JSON_DEPTH} levels deep.") from None
        text.check_json(data)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        text.check_pairs(data.lists(), multiline=True)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        text.check_pairs(result.data.lists(), multiline=True)
        return result
