"""The house's layers, read from the code with `ast`: no import cycle between files, and every
app imports only the layers below it.

    nexo_portal (settings, urls, auth, API tokens)     project wiring, on top
    releases  →  environments  →  audit                the apps, each importing only those to its right
    nexo_portal.lib                                    plain helpers at the bottom, importing no app

An import that goes up anyway carries a comment on its line saying why, starting `# upward:`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["audit", "environments", "nexo_portal", "releases"]
# Which layers each layer may import (besides itself and third-party code).
ALLOWED = {
    "nexo_portal.lib": set(),
    "audit": {"nexo_portal.lib"},
    "environments": {"audit", "nexo_portal.lib"},
    "releases": {"environments", "audit", "nexo_portal.lib"},
    "nexo_portal": {"releases", "environments", "audit", "nexo_portal.lib"},
}


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules():
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            modules[module_name(path)] = path
    return modules


def layer_of(module):
    if module == "nexo_portal.lib" or module.startswith("nexo_portal.lib."):
        return "nexo_portal.lib"
    return module.split(".")[0]


def imports_of(name, path, modules):
    """(imported module, line, source line) for every import of app code in the file."""
    source = path.read_text()
    lines = source.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno, lines[node.lineno - 1]))
    return found


def import_graph():
    modules = app_modules()
    return modules, {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph):
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_no_two_files_of_the_app_code_import_each_other():
    _, imports = import_graph()
    graph = {name: {target for target, _, _ in found} for name, found in imports.items()}
    cycles = [sorted(group) for group in strongly_connected(graph) if len(group) > 1]
    assert cycles == []


def test_every_app_imports_only_the_layers_below_it():
    _, imports = import_graph()
    upward = []
    for name, found in imports.items():
        layer = layer_of(name)
        for target, line, text in found:
            target_layer = layer_of(target)
            if target_layer == layer or target_layer in ALLOWED[layer] or "# upward:" in text:
                continue
            upward.append(f"{name}:{line} imports {target}")
    assert upward == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from releases import models", {"releases.models"}),
        ("from releases.models import Promotion", {"releases.models"}),
        ("from . import policy", {"releases.policy"}),
        ("from .gitops.repo import GitOpsError", {"releases.gitops.repo"}),
        ("import audit.log", {"audit.log"}),
        ("def f():\n    from environments.models import Environment", {"environments.models"}),
        ("import json\nfrom django.db import models", set()),
    ],
)
def test_the_import_reader_finds_imports_of_app_modules(tmp_path, source, expected):
    """The checks above are only as good as this reader: it resolves absolute, relative and nested imports."""
    modules = app_modules()
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert {target for target, _, _ in imports_of("releases.probe", path, modules)} == expected


def test_the_cycle_finder_finds_a_cycle_through_three_files():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(group) for group in strongly_connected(graph) if len(group) > 1] == [["a", "b", "c"]]
