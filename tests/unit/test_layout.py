"""The shell is in rooms, and imports run one way only (docs/architecture.md, "The map").

The import contracts themselves live in pyproject.toml ([tool.importlinter]); these tests
run them, refuse import cycles (which no contract states), and check that the map in the
docs names every room that exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import grimp
import pytest

from tests.integration.support import REPO

PACKAGES = ("consumer", "online_models", "schemas")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Every import counts: inside functions and under TYPE_CHECKING too.
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_the_import_contracts_hold() -> None:
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted.

    >>> cycles({"a": ["b"], "b": ["a", "c"], "c": []})
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles_not_even_for_types(graph: grimp.ImportGraph) -> None:
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert cycles(edges) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"x.a": ["x.b"], "x.b": ["x.c"], "x.c": ["x.a"], "x.d": []}) == [
        ["x.a", "x.b", "x.c"]
    ]


def rooms() -> list[str]:
    return sorted(p.name for p in (REPO / "consumer").iterdir() if (p / "__init__.py").is_file())


def test_the_shell_holds_only_its_rooms_and_the_entry_point() -> None:
    loose = sorted(
        p.name
        for p in (REPO / "consumer").iterdir()
        if p.is_file() and p.name not in ("__init__.py", "cli.py", "py.typed")
    )
    assert loose == [], f"move these into a room (docs/architecture.md): {loose}"
    assert rooms() == ["commands", "demo", "service", "tools"]


def test_the_map_names_every_room_and_what_it_may_import() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("The map"), "docs/architecture.md opens with the map"
    mapped = {m.rstrip("/") for m in re.findall(r"^\| `([a-z_/.]+)` \|", first_section, re.M)}
    expected = {f"consumer/{room}" for room in rooms()} | {
        "consumer/cli.py",
        "online_models",
        "schemas",
    }
    assert expected <= mapped, f"rooms missing from the map: {sorted(expected - mapped)}"


def test_the_service_room_needs_nothing_above_it(graph: grimp.ImportGraph) -> None:
    service = {m for m in graph.modules if m.startswith("consumer.service")}
    above = {m for m in graph.modules if m.startswith(("consumer.tools", "consumer.demo"))}
    above |= {m for m in graph.modules if m.startswith(("consumer.commands", "consumer.cli"))}
    reached = {m for s in service for m in graph.find_upstream_modules(s)}
    assert not reached & above
