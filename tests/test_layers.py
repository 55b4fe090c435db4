"""The package's layers: each module imports only from its own layer and the layers below it.

``LAYERS`` is the floor plan, ground floor first. The graph comes from the source (``ast``), so an
import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import pytest

from import_graph import PACKAGE, cycles, imports, layer_of, modules, upward

LAYERS: list[tuple[str, list[str]]] = [
    ("ground", ["headstart.errors", "headstart.registry", "headstart._io", "headstart._malloc", "headstart.progress",
                "headstart.options", "headstart.heads", "headstart._version", "headstart.runtime"]),
    ("data", ["headstart.data"]),
    ("backbones", ["headstart.backbones"]),
    ("features", ["headstart.features", "headstart.engine"]),
    ("train", ["headstart.train"]),
    ("measures", ["headstart.evaluation", "headstart.domain", "headstart.rank", "headstart.report",
                  "headstart.explain", "headstart.quality"]),
    ("model", ["headstart.model", "headstart.artifact"]),
    ("methods", ["headstart.methods"]),
    ("workflows", ["headstart.workflows"]),
    ("faces", ["headstart.api", "headstart.sklearn", "headstart.export", "headstart.serve", "headstart.app"]),
    ("cli", ["headstart.cli"]),
    ("top", [PACKAGE, "headstart.__main__"]),
]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return imports(modules())


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    # The package root's prefix matches everything; a module must be placed by a prefix of its own.
    specific = LAYERS[:-1] + [(LAYERS[-1][0], [p for p in LAYERS[-1][1] if p != PACKAGE])]
    homeless = [m for m in graph if m != PACKAGE and layer_of(m, specific) < 0]
    assert homeless == []


def test_no_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_no_upward_imports(graph: dict[str, set[str]]) -> None:
    assert upward(graph, LAYERS) == []


def test_the_checks_can_fail() -> None:
    # A two-module cycle and an import from the ground floor up to the CLI are both reported.
    fake = {"headstart.errors": {"headstart.cli.fit"}, "headstart.cli.fit": {"headstart.errors"}}
    assert cycles(fake) == [["headstart.cli.fit", "headstart.errors"]]
    assert upward(fake, LAYERS) == [("headstart.errors", "headstart.cli.fit")]
    # Importing the package root (its lazy public names) from inside the package is upward too.
    assert upward({"headstart.serve.app": {PACKAGE}}, LAYERS) == [("headstart.serve.app", PACKAGE)]
