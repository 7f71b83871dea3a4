"""Django REST framework's parsers, refusing control characters and over-deep JSON (`text`), and
JSON objects that give a key twice.

A module of their own: DRF reads DEFAULT_PARSER_CLASSES while `rest_framework.views` is imported,
so they may import nothing that imports it.
"""

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from . import text


def _object_without_repeated_keys(pairs):
    """A JSON object as a dict, refusing a key given twice: JSON parsers disagree on which one wins
    (Python keeps the last), so whatever a client meant by it, the portal would be guessing."""
    data = dict(pairs)
    if len(data) < len(pairs):
        for position, (key, _) in enumerate(pairs):
            if any(key == earlier for earlier, _ in pairs[:position]):
                raise ValueError(f"the key {json.dumps(key)} appears twice in one object; send each key once")
    return data


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        # DRF's parse, with a hook for repeated keys (it passes json.load no more than parse_constant).
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(stream.read().decode(encoding), object_pairs_hook=_object_without_repeated_keys)
        except RecursionError:
            # Python's own parser gives up near a thousand levels; say so in the same words as below.
            raise text.Unreadable(f"The JSON is nested more than {text.MAX_JSON_DEPTH} levels deep.") from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
        text.check_json(data)
        return data


def _each_field_once(data):
    """As for JSON's repeated keys: a form giving a field twice (`environment=production&environment=develop`)
    would have DRF keep the last one, which the client may not have meant. No field of the API takes
    a list from a form."""
    for name, values in data.lists():
        if len(values) > 1:
            raise text.Unreadable(
                f"The field {json.dumps(name)} is given {len(values)} times; send each field once.", name
            )


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        text.check_pairs(data.lists(), multiline=True)
        _each_field_once(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        text.check_pairs(result.data.lists(), multiline=True)
        _each_field_once(result.data)
        return result
