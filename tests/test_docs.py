"""The maintainers' docs name what exists: a file docs/architecture.md's map of the house lists, or a
`manage.py` command the docs tell an operator to run, is in the repository."""

import re
from pathlib import Path

from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# A line of the map that opens a folder: "releases/      Service, Release, …".
FOLDER = re.compile(r"^([a-z_]+(?:/[a-z_]+)*/)\s")
MODULE = re.compile(r"\b[a-z_]+(?:/[a-z_]+)*\.py\b")


def map_of_the_house():
    """The fenced block under "## The house"."""
    text = ARCHITECTURE.read_text()
    house = text[text.index("## The house") :]
    return house.split("```")[1]


def modules_named_by_the_map():
    """(folder the line is under, module named, the line) for every `*.py` the map names."""
    folder = ""
    for line in map_of_the_house().splitlines():
        opened = FOLDER.match(line)
        if opened:
            folder = opened.group(1)
        for name in MODULE.findall(line):
            yield folder, name, line.strip()


def test_every_module_the_architecture_map_names_exists():
    named = list(modules_named_by_the_map())
    assert len(named) > 50
    missing = [
        (folder, name, line)
        for folder, name, line in named
        if not (ROOT / folder / name).is_file() and not (ROOT / name).is_file()
    ]
    assert missing == []


def test_every_manage_py_command_the_docs_give_exists():
    commands = set(get_commands())
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    given = {
        (page.name, command)
        for page in pages
        for command in re.findall(r"manage\.py ([a-z_]+)", page.read_text())
        if command != "against"  # "manage.py against that demo": CONTRIBUTING's ./scripts/manage
    }
    assert len(given) > 5
    assert sorted((page, command) for page, command in given if command not in commands) == []
