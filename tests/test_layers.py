"""The package order written in ``medseg/__init__.py`` holds: no import points up, no import circle.

Every ``import`` and ``from ... import`` in every source file counts, at module level or inside a
function (lazy), under ``TYPE_CHECKING`` too, with relative imports resolved.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import medseg

SRC = Path(medseg.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def _target(name: str) -> str | None:
    """The medseg module an imported dotted name lives in (the longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """medseg modules that ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            target = _target(name) if name.startswith("medseg") else None
            if target and target != module:
                found.add(target)
    return found


def written_order() -> list[str]:
    """The layers, bottom first, from the ``Layers, bottom to top:`` line of medseg's docstring."""
    match = re.search(r"Layers, bottom to top:(.*?)\n\n", medseg.__doc__, re.S)
    assert match, "medseg/__init__.py must state 'Layers, bottom to top: a -> b -> ...'"
    return [re.sub(r"[`\s]", "", part) for part in match.group(1).split("->")]


def layer_of(module: str, order: list[str]) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in order, f"{module}: its package {top!r} is not in the written layer order {order}"
    return order.index(top)


def test_the_order_names_every_top_level_module():
    order = written_order()
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    assert tops == set(order), f"written order {order} vs packages {sorted(tops)}"


def test_no_import_points_up_the_order():
    order = written_order()
    upward = [f"{m} -> {t}" for m in sorted(MODULES) if m != "medseg" for t in sorted(imports_of(m))
              if t != "medseg" and layer_of(t, order) > layer_of(m, order)]
    assert not upward, "imports against the order " + " -> ".join(order) + ":\n" + "\n".join(upward)


def test_no_import_circle():
    graph = {m: imports_of(m) for m in MODULES}
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_lazy_and_relative_imports():
    """The parser itself: the cli imports its stages lazily (``from ..infer import Predictor`` inside a
    function), infer/files imports relatively at module level (``from ..data.cases import plane``)."""
    assert {"medseg.infer", "medseg.data.cases"} <= imports_of("medseg.cli.options")
    assert "medseg.train.cli" in imports_of("medseg.cli.parser")
    assert "medseg.data.cases" in imports_of("medseg.infer.files")
