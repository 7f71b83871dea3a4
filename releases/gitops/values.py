"""Read and change the image tag in a Helm values file without touching anything else.

The YAML parser's nodes give the tag's exact place in the text (where it starts and ends) and
its quoting style; the new value is spliced into the original text at that place. Re-dumping the
whole document would re-indent files that mix indentation styles, so the rest of the file is
never re-emitted: comments, key order, quoting and indentation stay byte-for-byte.

Composing nodes is a tenth of the cost of ruamel.yaml's round-trip load when its C parser
(ruamel.yaml.clib) is installed, and still cheaper with the pure-Python one; the GitOps commit
waits for it on every promotion.
"""

import difflib
import re

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

_BOM = "\ufeff"
# The only ways to mark a scalar as text that every YAML reader takes the same way.
_STR_MARKERS = ("!!str", "!<tag:yaml.org,2002:str>")
_NULL_TOKENS = ("~", "null", "Null", "NULL")
_MERGE_KEY = "<<"
# An anchor (&name) or a tag (!!str) written before a scalar, and the blanks after it.
_PROPERTY = re.compile(r"[&!]\S*[ \t]*")
# What follows a key whose value is an alias (`: *name`), and a key's colon.
_ALIAS_AFTER_KEY = re.compile(r"\s*:\s*(\*\S+)")
_COLON = re.compile(r"[ \t]*:")


class ValuesFileError(Exception):
    """The values file cannot be read or changed; the message names the file and key."""


def _parser(version=None):
    parser = YAML(typ="safe", pure=False)
    if version:
        parser.version = version
    return parser


def _body(text):
    """The text without leading byte-order marks, which the C parser leaves out of its positions."""
    return text.lstrip(_BOM)


def _compose(text, path):
    try:
        root = _parser().compose(_body(text))
    except YAMLError as error:
        raise ValuesFileError(f"{path} is not valid YAML: {error}") from error
    _refuse_duplicate_keys(root, path)
    return root


def _refuse_duplicate_keys(root, path):
    """A key written twice in one mapping is invalid YAML, and Helm refuses it too."""
    pending, seen_nodes = [root], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen_nodes:  # an alias is the same node again
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            lines: dict[tuple[str | None, str], int] = {}  # (tag, key) → line
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value != _MERGE_KEY:
                    if (key.tag, key.value) in lines:  # 1 and "1" are two keys
                        raise ValuesFileError(
                            f"{path} is not valid YAML: the key '{key.value}' is written twice in one mapping "
                            f"(lines {lines[key.tag, key.value]} and {key.start_mark.line + 1})."
                        )
                    lines[key.tag, key.value] = key.start_mark.line + 1
                pending += [key, value]
        elif isinstance(node, SequenceNode):
            pending += node.value


def _find(mapping, key, *, merged):
    """(key node, value node) of `key` in `mapping`; with `merged`, also in mappings merged into it (<<)."""
    pairs = mapping.value if isinstance(mapping, MappingNode) else []
    for key_node, value in pairs:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value
    if not merged:
        return None
    for key_node, value in pairs:
        if isinstance(key_node, ScalarNode) and key_node.value == _MERGE_KEY:
            for source in value.value if isinstance(value, SequenceNode) else [value]:
                found = _find(source, key, merged=True)
                if found:
                    return found
    return None


def _path(root, key_path, path, *, merged=False):
    """The (key node, value node) of each key along the dotted key path, the last one the value's."""
    keys, steps = key_path.split("."), []
    node = root
    for depth, key in enumerate(keys):
        found = ".".join(keys[:depth]) or "the top level"
        step = _find(node, key, merged=merged)
        if step is None:
            if not merged and _find(node, key, merged=True):
                raise ValuesFileError(
                    f"{path}: '{key_path}' is not written under {found} itself (it comes from a merge key, <<); "
                    f"write '{key}' there."
                )
            raise ValuesFileError(f"{path} has no key '{key_path}' (nothing called '{key}' under {found}).")
        steps.append(step)
        node = step[1]
    return steps


def _scalar(node, key_path, path):
    if isinstance(node, (MappingNode, SequenceNode)):
        kind = "a mapping" if isinstance(node, MappingNode) else "a list"
        raise ValuesFileError(f"{path}: '{key_path}' is {kind}, not a single value.")
    return node


def _is_null(node):
    return node.tag.endswith(":null")


def read_value(text, key_path, path="values file"):
    """The value at `key_path` as written (`2026.10`, not the number 2026.1), or None for a null."""
    _key, node = _path(_compose(text, path), key_path, path, merged=True)[-1]
    node = _scalar(node, key_path, path)
    return None if _is_null(node) else node.value


def _is_plain_string(text):
    """True when `text` written without quotes reads back as exactly that string, in YAML 1.2 and
    in the YAML 1.1 that Helm's parser speaks (where yes, on and 0x1f are not strings)."""
    for version in (None, (1, 1)):
        try:
            if _parser(version).load(f"k: {text}\n") != {"k": text}:
                return False
        except YAMLError:
            return False
    return True


def _render(value, style):
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or not _is_plain_string(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def set_value(text, key_path, value, path="values file"):
    """Return `text` with the scalar at `key_path` replaced by `value`, all else untouched."""
    if not value.isprintable():
        raise ValuesFileError(
            f"{path}: {value!r} cannot be written at '{key_path}': a tag is one line of printable text."
        )
    root = _compose(text, path)
    steps = _path(root, key_path, path)
    offset = len(text) - len(_body(text))
    _refuse_aliases(text, offset, steps, key_path, path)
    key, node = steps[-1]
    node = _scalar(node, key_path, path)
    start, end, replacement = _splice(text, offset, key, node, value, key_path, path)
    new_text = text[:start] + replacement + text[end:]

    holder = steps[-2][1] if len(steps) > 1 else root
    rest = text[end:].split("\n", 1)[0].strip()
    if not _is_null(node) and not holder.flow_style and (not rest or rest.startswith("#")):
        # A whole block-style scalar replaced by a correctly quoted one, with only a comment
        # after it: nothing else in the document can have changed.
        return new_text
    _verify(text, new_text, key_path, value, path)
    return new_text


def diff(text: str, key_path: str, value: str, path: str = "values file") -> str:
    """The unified diff `set_value` makes to the file ("" when it holds `value` already): what a
    promotion's GitOps commit will change, shown before it is made."""
    new_text = set_value(text, key_path, value, path)
    return "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), new_text.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )


def _refuse_aliases(text, offset, steps, key_path, path):
    """A node written earlier in the file than its key is an alias: changing it would change that too."""
    for depth, (key, node) in enumerate(steps):
        if node.start_mark.index < key.end_mark.index:
            alias = _ALIAS_AFTER_KEY.match(text, offset + key.end_mark.index)
            raise ValuesFileError(
                f"{path}: '{'.'.join(key_path.split('.')[: depth + 1])}' is an alias "
                f"({alias[1] if alias else 'of an anchor'}) of a value written elsewhere in the file; "
                "write it there as a value of its own."
            )


def _splice(text, offset, key, node, value, key_path, path):
    """(start, end, replacement): where in `text` the new value goes, and how it is written."""
    if node.style in ("|", ">") or node.end_mark.line != node.start_mark.line:
        raise ValuesFileError(f"{path}: the value of '{key_path}' spans several lines; write it on one line.")
    start, end = offset + node.start_mark.index, offset + node.end_mark.index
    scalar = start
    while scalar < end and (prop := _PROPERTY.match(text, scalar)):
        scalar = prop.end()
    properties = text[start:scalar].split()
    marker = next((prop for prop in properties if prop.startswith("!")), None)
    if marker not in (None, *_STR_MARKERS):
        raise ValuesFileError(
            f"{path}: '{key_path}' is marked {marker}, but an image tag is text; remove the marker or make it !!str."
        )
    if properties and scalar == end:
        # Nothing but an anchor or a tag (`tag: &current !!str`): the value goes after them.
        return end, end, ("" if text[end - 1] in " \t" else " ") + _render(value, None)
    if _is_null(node) and node.value not in _NULL_TOKENS:
        # `tag:` with nothing after it: the value goes right after the key's colon.
        colon = _COLON.match(text, offset + key.end_mark.index)
        if colon is None:
            raise ValuesFileError(f"{path}: '{key_path}' is a key without a value; write it as '{key.value}: …'.")
        return colon.end(), colon.end(), " " + _render(value, None)
    # An anchor or a tag before the scalar stays (`tag: &current "…"`: what refers to it follows
    # the new value).
    return scalar, end, _render(value, None if _is_null(node) else node.style)


def _verify(text, new_text, key_path, value, path):
    """Read both texts: the key must hold the new value and every other key be the same."""
    unsafe = f"{path}: could not write '{value}' at '{key_path}' safely; the file was left unchanged."
    try:
        before, after = _parser().load(_body(text)), _parser().load(_body(new_text))
        *parents, last = key_path.split(".")
        holder_before, holder_after = before, after
        for key in parents:
            holder_before, holder_after = holder_before[key], holder_after[key]
        written, holder_after[last] = holder_after[last], holder_before[last]
    # Whatever stops either text from reading back (a value its tag cannot construct, a key that is
    # not where it was) means the change cannot be proven safe.
    except (YAMLError, ValueError, TypeError, KeyError) as error:
        raise ValuesFileError(unsafe) from error
    if written != value:
        raise ValuesFileError(unsafe)
    if after != before:
        raise ValuesFileError(f"{path}: changing '{key_path}' would change other keys; the file was left unchanged.")
