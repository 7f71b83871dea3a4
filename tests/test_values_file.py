"""Changing the image tag keeps every other byte of a values file as it was."""

import difflib
import re

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.parser import Parser as PurePythonParser

from releases.gitops import values
from releases.gitops.values import ValuesFileError, read_value, set_value


@pytest.fixture(autouse=True, params=["C parser", "pure-Python parser"])
def parser(request, monkeypatch):
    """Every case with ruamel.yaml.clib's C parser (a requirement) and with the pure-Python one
    ruamel.yaml falls back to where the C extension is missing."""
    if request.param == "C parser":
        assert values._parser().Parser is not PurePythonParser, "ruamel.yaml.clib is installed and used"
    else:
        monkeypatch.setattr(values, "YAML", lambda typ, pure: YAML(typ=typ, pure=True))
    return request.param


CHART = """\
# Default values for nexo-be.
# This is a YAML-formatted file.
---
replicaCount: 2   # keep at least two for the PDB

image:
  repository: ghcr.io/nexo-org/nexo-be
  # Promoted by the release portal; do not edit by hand.
  tag: "2026.10.3"    # trailing comment stays
  pullPolicy: IfNotPresent

env:
    - name: LOG_LEVEL
      value: 'info'
    - {name: FEATURE_X, value: "on"}
resources:
  limits: {cpu: 500m, memory: 512Mi}
annotations:
  description: a very long annotation value that goes well beyond eighty characters so that a naive dumper would fold it
  empty:
nested:
  deeper:
    image:
      tag: 2026.01.1
"""


def changed_lines(before, after):
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]


def test_only_the_tag_line_changes_and_everything_else_stays_byte_for_byte():
    after = set_value(CHART, "image.tag", "2026.11.1")
    assert changed_lines(CHART, after) == [
        '-   tag: "2026.10.3"    # trailing comment stays',
        '+   tag: "2026.11.1"    # trailing comment stays',
    ]
    assert len(after) == len(CHART)
    assert read_value(after, "image.tag") == "2026.11.1"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  tag: '2026.10.3'", "  tag: '2026.11.1'"),
        ("  tag: 2026.10.3", "  tag: 2026.11.1"),
        ("  tag: 2026.10.3  # plain with comment", "  tag: 2026.11.1  # plain with comment"),
        ('  tag: ""', '  tag: "2026.11.1"'),
        ("  tag:", "  tag: 2026.11.1"),
        ("  tag: ~", "  tag: 2026.11.1"),
        ("  tag: !!str 1.0", "  tag: !!str 2026.11.1"),
        ("  tag: &current !!str\n  x: *current", "  tag: &current !!str 2026.11.1\n  x: *current"),
        ("  tag: !!str &current", "  tag: !!str &current 2026.11.1"),
        ("  tag: &current", "  tag: &current 2026.11.1"),
    ],
)
def test_quoting_style_anchor_and_marker_of_the_original_are_kept(line, expected):
    text = f"image:\n  repository: x\n{line}\n  pullPolicy: Always\n"
    after = set_value(text, "image.tag", "2026.11.1")
    assert after == f"image:\n  repository: x\n{expected}\n  pullPolicy: Always\n"
    assert read_value(after, "image.tag") == "2026.11.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image: {repository: x, tag: 1.0}\n", "image: {repository: x, tag: 2026.11.1}\n"),
        ("image: {tag: 1.0, repository: x}\n", "image: {tag: 2026.11.1, repository: x}\n"),
        ('image: {repository: x, tag: "1.0"}  # flow\n', 'image: {repository: x, tag: "2026.11.1"}  # flow\n'),
    ],
)
def test_flow_style_mappings_keep_their_braces_and_commas(text, expected):
    assert set_value(text, "image.tag", "2026.11.1") == expected


def test_deeper_key_paths_work():
    after = set_value(CHART, "nested.deeper.image.tag", "2026.11.2")
    assert changed_lines(CHART, after) == ["-       tag: 2026.01.1", "+       tag: 2026.11.2"]


def test_a_tag_that_would_read_as_a_number_is_quoted():
    text = "image:\n  tag: latest\n"
    assert set_value(text, "image.tag", "2026.11") == 'image:\n  tag: "2026.11"\n'
    assert read_value(set_value(text, "image.tag", "2026.11"), "image.tag") == "2026.11"


def test_windows_line_endings_are_kept():
    text = "image:\r\n  tag: old\r\n  x: 1\r\n"
    assert set_value(text, "image.tag", "2026.11.1") == "image:\r\n  tag: 2026.11.1\r\n  x: 1\r\n"


@pytest.mark.parametrize(
    ("key_path", "complaint"),
    [
        ("image.digest", "helm/nexo-be/values-qa.yaml has no key 'image.digest' (nothing called 'digest' under image)"),
        (
            "chart.tag",
            "helm/nexo-be/values-qa.yaml has no key 'chart.tag' (nothing called 'chart' under the top level)",
        ),
        ("env", "'env' is a list, not a single value"),
        ("image", "'image' is a mapping, not a single value"),
    ],
)
def test_a_missing_or_wrong_key_is_an_error_naming_file_and_key(key_path, complaint):
    with pytest.raises(ValuesFileError) as error:
        set_value(CHART, key_path, "2026.11.1", "helm/nexo-be/values-qa.yaml")
    assert complaint in str(error.value)


def test_invalid_yaml_is_an_error_naming_the_file():
    with pytest.raises(ValuesFileError, match=re.escape("helm/x.yaml is not valid YAML")):
        set_value("image: [unclosed\n", "image.tag", "1", "helm/x.yaml")


def test_a_multi_line_value_is_refused_rather_than_mangled():
    text = "image:\n  tag: >\n    2026.10.1\n  x: 1\n"
    with pytest.raises(ValuesFileError, match="spans several lines"):
        set_value(text, "image.tag", "2026.11.1", "v.yaml")


def test_an_anchor_on_the_tag_stays_and_what_refers_to_it_follows():
    text = 'image:\n  tag: &current "2026.10.3"  # shared\nsidecar:\n  tag: *current\n'
    after = set_value(text, "image.tag", "2026.11.1")
    assert after == 'image:\n  tag: &current "2026.11.1"  # shared\nsidecar:\n  tag: *current\n'
    assert read_value(after, "sidecar.tag") == "2026.11.1"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('base: &b "1.0"\nimage:\n  tag: *b\n', "v.yaml: 'image.tag' is an alias (*b) of a value written elsewhere"),
        (
            "defaults: &d {repository: x, tag: '1'}\nimage: *d\n",
            "v.yaml: 'image' is an alias (*d) of a value written elsewhere",
        ),
        (
            "image:\n  <<: {tag: '1'}\n",
            "v.yaml: 'image.tag' is not written under image itself (it comes from a merge key",
        ),
        (
            'image:\n  tag: "1"\n  tag: "2"\n',
            "v.yaml is not valid YAML: the key 'tag' is written twice in one mapping (lines 2 and 3)",
        ),
        ("image: {tag}\n", "v.yaml: 'image.tag' is a key without a value; write it as 'tag: …'"),
        ('port: !!int 80x\nimage: {tag: "1"}\n', "v.yaml: could not write '2026.11.1' at 'image.tag' safely"),
    ],
)
def test_a_tag_that_cannot_be_changed_in_its_place_alone_is_refused_with_the_reason(text, complaint):
    with pytest.raises(ValuesFileError) as error:
        set_value(text, "image.tag", "2026.11.1", "v.yaml")
    assert complaint in str(error.value)


def test_a_byte_order_mark_and_text_beyond_ascii_stay():
    text = '\ufeff# caf\u00e9, na\u00efve \u2014 \U0001f680\nimage:\n  tag: "2026.10.3"\n'
    assert set_value(text, "image.tag", "2026.11.1") == text.replace("2026.10.3", "2026.11.1")


def test_read_value_gives_the_tag_as_written():
    assert read_value("image:\n  tag: 2026.10\n", "image.tag") == "2026.10"
    assert read_value("image:\n  tag:\n", "image.tag") is None


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("image:\n  tag: !!int 1\n", "!!int"),
        ("image:\n  tag: !!float 2026.10\n", "!!float"),
        ("image:\n  tag: !!null ''\n", "!!null"),
        ("image: {tag: !!int 1}\n", "!!int"),
        ("image:\n  tag: !custom 'x'\n", "!custom"),
        ("image:\n  tag: !x'y 'old'\n", "!x'y"),  # a quote inside the marker is not where the value starts
        ("image:\n  tag: ! old\n", "!"),  # text for this value, but `! "2026.11"` reads back as a number
    ],
)
def test_a_tag_marked_as_something_other_than_text_is_refused(text, marker):
    with pytest.raises(ValuesFileError, match=f"v.yaml: 'image.tag' is marked {marker}, but an image tag is text"):
        set_value(text, "image.tag", "2026.11.1", "v.yaml")


def test_keys_that_only_look_alike_are_two_keys_and_two_byte_order_marks_stay():
    text = '\ufeff\ufeffa:\n  1: x\n  "1": y\nimage:\n  tag: "1"\n'
    assert set_value(text, "image.tag", "2026.11.1") == text.replace('tag: "1"', 'tag: "2026.11.1"')


@pytest.mark.parametrize("value", ["yes", "on", "0x1f", "2026.11", "1e3"])
def test_a_value_yaml_1_1_would_not_read_as_text_is_quoted(value):
    assert set_value("image:\n  tag: old\n", "image.tag", value) == f'image:\n  tag: "{value}"\n'


@pytest.mark.parametrize("value", ["2026.11.1\nfoo: bar", "2026.11.1\t", "\x07"])
def test_a_value_that_is_not_one_line_of_printable_text_is_refused(value):
    with pytest.raises(ValuesFileError, match="a tag is one line of printable text"):
        set_value("image:\n  tag: old\n", "image.tag", value)


def test_read_value_follows_merge_keys_and_explicit_nulls():
    assert read_value("base: &b {tag: '2026.01.1'}\nimage:\n  <<: *b\n", "image.tag") == "2026.01.1"
    assert read_value("image:\n  tag: !!null ''\n", "image.tag") is None
