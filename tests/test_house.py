"""The package's import graph: no circle, and no arrow from a lower floor to a higher one
(DESIGN §6: cli → pipeline → search / report → chain → stages → train, models, metrics, data).
Every import counts, those inside functions too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).parent.parent / "seqsearch"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _target(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    for m, f in mods.items():
        g.add_node(m)
        package = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule, not the package's __init__
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names]
            for name in names:
                target = _target(name, mods)
                if target is not None and target != m:
                    g.add_edge(m, target)
    return g


def test_no_import_circle():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert cycles == []


# floor: modules (prefixes) that must never import the ones listed
_NEVER = {
    ("seqsearch.train", "seqsearch.models", "seqsearch.metrics", "seqsearch.data",
     "seqsearch.precision", "seqsearch.kernel_guards", "seqsearch.errors", "seqsearch.atomic",
     "seqsearch.progress"):
        ("seqsearch.stages", "seqsearch.chain", "seqsearch.search", "seqsearch.report",
         "seqsearch.pipeline", "seqsearch.cli", "seqsearch.bench", "seqsearch.deploy",
         "seqsearch.recovery"),
    ("seqsearch.stages",): ("seqsearch.chain", "seqsearch.search", "seqsearch.report",
                            "seqsearch.pipeline", "seqsearch.cli", "seqsearch.bench"),
    ("seqsearch.chain",): ("seqsearch.search", "seqsearch.report", "seqsearch.pipeline",
                           "seqsearch.cli", "seqsearch.bench"),
    ("seqsearch.search",): ("seqsearch.report", "seqsearch.pipeline", "seqsearch.cli",
                            "seqsearch.bench"),
    ("seqsearch.report", "seqsearch.deploy", "seqsearch.recovery"):
        ("seqsearch.pipeline", "seqsearch.cli", "seqsearch.bench"),
    ("seqsearch.pipeline",): ("seqsearch.cli", "seqsearch.bench"),
}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("lower", list(_NEVER), ids=lambda t: t[0].split(".")[-1])
def test_no_import_runs_back_up(lower):
    g = import_graph()
    up = [(a, b) for a, b in g.edges if _under(a, lower) and _under(b, _NEVER[lower])]
    assert up == []


def test_the_package_graph_is_real():
    """The graph sees lazy imports and `from pkg import sub` (else the tests above prove
    nothing)."""
    g = import_graph()
    assert g.has_edge("seqsearch.cli", "seqsearch.bench")  # imported inside build_parser
    assert g.has_edge("seqsearch.models.registry", "seqsearch.models.vgg")
    assert not g.has_edge("seqsearch.models.registry", "seqsearch.models")
