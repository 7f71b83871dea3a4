"""Read and change the image tag in a Helm values file without touching anything else.

ruamel.yaml's round-trip loader finds the tag's node, its exact position and its quoting
style; the new value is spliced into the original text at that position. Re-dumping the
whole document would re-indent files that mix indentation styles, so the rest of the file
is never re-emitted: comments, key order, quoting and indentation stay byte-for-byte.
"""

import io

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)


class ValuesFileError(Exception):
    """The values file cannot be read or changed; the message names the file and key."""


def _round_trip_yaml():
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def _load(text, path):
    try:
        return _round_trip_yaml().load(io.StringIO(text))
    except YAMLError as error:
        raise ValuesFileError(f"{path} is not valid YAML: {error}") from error


def _locate(document, key_path, path):
    """Return (mapping, key) holding the value at the dotted key path."""
    keys = key_path.split(".")
    node = document
    for depth, key in enumerate(keys):
        if not isinstance(node, CommentedMap) or key not in node:
            found = ".".join(keys[:depth]) or "the top level"
            raise ValuesFileError(f"{path} has no key '{key_path}' (nothing called '{key}' under {found}).")
        if depth == len(keys) - 1:
            return node, key
        node = node[key]
    raise ValuesFileError(f"{path}: empty key path.")


def _kind(value):
    return "a mapping" if isinstance(value, dict) else "a list"


def read_value(text, key_path, path="values file"):
    mapping, key = _locate(_load(text, path), key_path, path)
    value = mapping[key]
    if isinstance(value, (dict, list)):
        raise ValuesFileError(f"{path}: '{key_path}' is {_kind(value)}, not a single value.")
    return None if value is None else str(value)


def _scalar_end(line, start, quote, in_flow):
    """Index just past the scalar that starts at `start` on this line."""
    if quote == '"':
        index = start + 1
        while index < len(line):
            if line[index] == "\\":
                index += 2
                continue
            if line[index] == '"':
                return index + 1
            index += 1
    elif quote == "'":
        index = start + 1
        while index < len(line):
            if line[index] == "'":
                if line[index + 1 : index + 2] == "'":
                    index += 2
                    continue
                return index + 1
            index += 1
    else:
        stops = [line.find(" #", start)] + ([line.find(mark, start) for mark in ",}]"] if in_flow else [])
        end = min([stop for stop in stops if stop != -1], default=len(line))
        return len(line[:end].rstrip())
    return -1


def _has_null_token(line, column):
    token = line[column:].split("#")[0].strip()
    return token in ("~", "null", "Null", "NULL")


def _is_plain_string(text):
    """True when `text` written without quotes reads back as exactly that string."""
    try:
        return YAML(typ="safe").load(f"k: {text}\n") == {"k": text}
    except YAMLError:
        return False


def _render(value, old):
    if isinstance(old, SingleQuotedScalarString):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(old, DoubleQuotedScalarString) or not _is_plain_string(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def set_value(text, key_path, value, path="values file"):
    """Return `text` with the scalar at `key_path` replaced by `value`, all else untouched."""
    document = _load(text, path)
    mapping, key = _locate(document, key_path, path)
    old = mapping[key]
    if isinstance(old, (dict, list)):
        raise ValuesFileError(f"{path}: '{key_path}' is {_kind(old)}, not a single value.")
    if isinstance(old, (FoldedScalarString, LiteralScalarString)):
        raise ValuesFileError(f"{path}: the value of '{key_path}' spans several lines; write it on one line.")
    line_number, column = mapping.lc.value(key)
    key_line, key_column = mapping.lc.key(key)
    lines = text.splitlines(keepends=True)
    if old is None and not _has_null_token(lines[line_number], column):
        # `tag:` with nothing after it: write the value right after the key's colon.
        line_number = key_line
        column = lines[key_line].index(":", key_column + len(key)) + 1
        prefix = " "
    else:
        prefix = ""
    line = lines[line_number]
    content = line.rstrip("\r\n")
    quote = content[column] if column < len(content) and content[column] in "\"'" else ""
    in_flow = mapping.fa.flow_style()
    end = column if prefix else _scalar_end(content, column, quote, in_flow)
    if end == -1:
        raise ValuesFileError(f"{path}: the value of '{key_path}' spans several lines; write it on one line.")
    lines[line_number] = content[:column] + prefix + _render(value, old) + content[end:] + line[len(content) :]
    new_text = "".join(lines)
    rest = content[end:].strip()
    if old is not None and not in_flow and (not rest or rest.startswith("#")):
        # A whole block-style scalar replaced by a correctly quoted one, with only a comment
        # after it: nothing else in the document can have changed.
        return new_text
    _verify(document, new_text, key_path, value, old, path)
    return new_text


def _verify(document, new_text, key_path, value, old, path):
    """Re-read the spliced text: the key must hold the new value and every other key stay the same."""
    changed = _load(new_text, path)
    changed_mapping, changed_key = _locate(changed, key_path, path)
    if str(changed_mapping[changed_key]) != value:
        raise ValuesFileError(f"{path}: could not write '{value}' at '{key_path}' safely; the file was left unchanged.")
    changed_mapping[changed_key] = old
    if changed != document:
        raise ValuesFileError(f"{path}: changing '{key_path}' would change other keys; the file was left unchanged.")
