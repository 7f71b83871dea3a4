"""Read and change the image tag in a Helm values file without touching anything else.

The YAML parser's nodes give the tag's exact place in the text (where it starts and ends) and
its quoting style; the new value is spliced into the original text at that place. Re-dumping the
whole document would re-indent files that mix indentation styles, so the rest of the file is
never re-emitted: comments, key order, quoting and indentation stay byte-for-byte.

Composing nodes is a tenth of the cost of ruamel.yaml's round-trip load when its C parser
(ruamel.yaml.clib) is installed, and still cheaper with the pure-Python one; the GitOps commit
waits for it on every promotion.
"""

import re

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

_BOM = "\ufeff"
_NULL_TOKENS = ("~", "null", "Null", "NULL")
_MERGE_KEY = "<<"


class ValuesFileError(Exception):
    """The values file cannot be read or changed; the message names the file and key."""


def _parser():
    return YAML(typ="safe", pure=False)


def _compose(text, path):
    """The document's root node. The C parser does not count a leading byte-order mark in its
    positions, so the text is composed without it and positions are offset by its length."""
    try:
        root = _parser().compose(text.removeprefix(_BOM))
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
            lines = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value != _MERGE_KEY:
                    if key.value in lines:
                        raise ValuesFileError(
                            f"{path} is not valid YAML: the key '{key.value}' is written twice in one mapping "
                            f"(lines {lines[key.value]} and {key.start_mark.line + 1})."
                        )
                    lines[key.value] = key.start_mark.line + 1
                pending += [key, value]
        elif isinstance(node, SequenceNode):
            pending += node.value


def _path(root, key_path, path):
    """The (key node, value node) of each key along the dotted key path, the last one the value's."""
    keys, steps = key_path.split("."), []
    node = root
    for depth, key in enumerate(keys):
        found = ".".join(keys[:depth]) or "the top level"
        pairs = node.value if isinstance(node, MappingNode) else []
        matches = [(k, v) for k, v in pairs if isinstance(k, ScalarNode) and k.value == key]
        if not matches:
            if any(isinstance(k, ScalarNode) and k.value == _MERGE_KEY for k, _ in pairs):
                raise ValuesFileError(
                    f"{path}: '{key_path}' is not written under {found} itself (it would come from a merge key, "
                    f"<<); write '{key}' there."
                )
            raise ValuesFileError(f"{path} has no key '{key_path}' (nothing called '{key}' under {found}).")
        steps.append(matches[0])
        node = matches[0][1]
    return steps


def _scalar(node, key_path, path):
    if isinstance(node, (MappingNode, SequenceNode)):
        kind = "a mapping" if isinstance(node, MappingNode) else "a list"
        raise ValuesFileError(f"{path}: '{key_path}' is {kind}, not a single value.")
    return node


def _is_null(node):
    return node.tag.endswith(":null") and not node.style


def read_value(text, key_path, path="values file"):
    _key, node = _path(_compose(text, path), key_path, path)[-1]
    node = _scalar(node, key_path, path)
    return None if _is_null(node) else node.value


def _is_plain_string(text):
    """True when `text` written without quotes reads back as exactly that string."""
    try:
        return _parser().load(f"k: {text}\n") == {"k": text}
    except YAMLError:
        return False


def _render(value, style):
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or not _is_plain_string(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def set_value(text, key_path, value, path="values file"):
    """Return `text` with the scalar at `key_path` replaced by `value`, all else untouched."""
    root = _compose(text, path)
    steps = _path(root, key_path, path)
    offset = len(text) - len(text.removeprefix(_BOM))
    for depth, (key, node) in enumerate(steps):
        if node.start_mark.index < key.end_mark.index:
            # Its node was written earlier in the file: it is an alias, and changing it would change that too.
            alias = re.match(r"\s*:\s*(\*\S+)", text[offset + key.end_mark.index :])
            raise ValuesFileError(
                f"{path}: '{'.'.join(key_path.split('.')[: depth + 1])}' is an alias "
                f"({alias[1] if alias else 'of an anchor'}) of a value written elsewhere in the file; "
                "write it there as a value of its own."
            )
    key, node = steps[-1]
    holder = steps[-2][1] if len(steps) > 1 else root
    node = _scalar(node, key_path, path)
    if node.style in ("|", ">") or node.end_mark.line != node.start_mark.line:
        raise ValuesFileError(f"{path}: the value of '{key_path}' spans several lines; write it on one line.")

    start, end = offset + node.start_mark.index, offset + node.end_mark.index
    if _is_null(node) and node.value not in _NULL_TOKENS:
        # `tag:` with nothing after it: write the value right after the key's colon.
        start = end = text.index(":", offset + key.end_mark.index) + 1
        replacement = " " + _render(value, None)
    else:
        # An explicit tag or an anchor before the scalar stays (`tag: &current "…"`: what refers
        # to it follows the new value).
        quote = node.style if node.style in ("'", '"') else ""
        start = text.index(quote, start) if quote else end - len(node.value) if node.value else start
        replacement = _render(value, None if _is_null(node) else node.style)
    new_text = text[:start] + replacement + text[end:]

    rest = text[end:].split("\n", 1)[0].strip()
    if not _is_null(node) and not holder.flow_style and (not rest or rest.startswith("#")):
        # A whole block-style scalar replaced by a correctly quoted one, with only a comment
        # after it: nothing else in the document can have changed.
        return new_text
    _verify(text, new_text, key_path, value, path)
    return new_text


def _verify(text, new_text, key_path, value, path):
    """Read both texts: the key must hold the new value and every other key be the same."""
    try:
        before, after = _parser().load(text.removeprefix(_BOM)), _parser().load(new_text.removeprefix(_BOM))
    except YAMLError as error:
        raise ValuesFileError(f"{path}: could not write '{value}' at '{key_path}' safely; the file was left unchanged.") from error
    *parents, last = key_path.split(".")
    holder_before, holder_after = before, after
    for key in parents:
        holder_before, holder_after = holder_before[key], holder_after[key]
    if str(holder_after.get(last)) != value:
        raise ValuesFileError(f"{path}: could not write '{value}' at '{key_path}' safely; the file was left unchanged.")
    holder_after[last] = holder_before[last]
    if after != before:
        raise ValuesFileError(f"{path}: changing '{key_path}' would change other keys; the file was left unchanged.")
