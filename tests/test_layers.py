"""The package's imports point one way: cli -> demo -> pl -> tl -> get -> model -> train/...

Every module of ``spexlvm/`` is parsed (``ast``, nothing is imported) and each of its
``spexlvm`` imports (at the top, inside functions and under ``TYPE_CHECKING`` alike) is
checked against the layer order in ``docs/architecture.md``; a new upward import or a
cycle among the modules fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "spexlvm"

#: Layers from the top; a module may import its own layer or any layer below it.
#: ``datasets`` stands at the side (it uses pp's GMT reader; nothing in the package imports
#: it); the package root (``spexlvm/__init__.py``) imports everything and nothing imports it.
LAYERS: dict[str, int] = {
    "cli": 9,
    "demo": 8,
    "pl": 7,
    "tl": 6,
    "get": 5,
    "datasets": 5,
    "model": 4,
    "train": 3,
    "pp": 2,
    "base": 1,
}

#: Modules (dotted, below ``spexlvm``) and the layer they belong to; first match wins.
_PREFIXES = [
    ("cli", "cli"),
    ("_demo", "demo"),
    ("pl", "pl"),
    ("tl", "tl"),
    ("get", "get"),
    ("datasets", "datasets"),
    ("_model", "model"),
    ("_inputs", "model"),
    ("_init", "model"),
    ("train", "train"),
    ("_module", "train"),
    ("_cavi", "train"),
    ("_data", "train"),
    # the old flat names of the training package (re-exports of spexlvm.train)
    ("_trainingplan", "train"),
    ("_runtime", "train"),
    ("_checkpoint", "train"),
    ("pp", "pp"),
    ("_constants", "base"),
    ("_r2", "base"),
    ("_utils", "base"),
    ("_logging", "base"),
    ("_docs", "base"),
]


def layer_of(module: str) -> str:
    """The layer of ``spexlvm.<module>`` (dotted, without the ``spexlvm.`` prefix)."""
    first = module.split(".")[0]
    for prefix, layer in _PREFIXES:
        if first == prefix:
            return layer
    raise AssertionError(
        f"spexlvm.{module} belongs to no layer: add it to _PREFIXES in tests/test_layers.py "
        "(and to the layer diagram of docs/architecture.md)."
    )


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def spexlvm_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a spexlvm module in a file (dotted, no prefix)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "spexlvm" or alias.name.startswith("spexlvm."):
                    out.append((node.lineno, alias.name.removeprefix("spexlvm").lstrip(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "spexlvm" or node.module.startswith("spexlvm.")):
                target = node.module.removeprefix("spexlvm").lstrip(".")
            else:
                continue
            # each imported name may be a module (`from . import a`) or an attribute of one;
            # the layer is that of the first part, the graph walks up to a module
            targets = [".".join(t for t in (target, a.name) if t) for a in node.names]
            out.extend((node.lineno, t) for t in targets)
    return out


def _files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "data" not in p.relative_to(ROOT).parts[:1])


def _graph() -> dict[str, set[str]]:
    modules = {module_name(p) for p in _files()}
    graph: dict[str, set[str]] = {}
    for path in _files():
        name = module_name(path)
        deps = set()
        for _, target in spexlvm_imports(path):
            # an imported name may be an attribute of a module: walk up to the module
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                deps.add(".".join(parts))
        graph[name] = deps
    return graph


def test_every_module_has_a_layer():
    for path in _files():
        name = module_name(path)
        if name:
            layer_of(name)


def test_imports_point_down():
    upward = []
    for path in _files():
        name = module_name(path)
        if not name:  # the package root imports everything
            continue
        own = LAYERS[layer_of(name)]
        for line, target in spexlvm_imports(path):
            if not target or target.split(".")[0] in ("__version__",):
                # the package root (the public API, as a user sees it): only the command line
                # and its demo stand above it
                if layer_of(name) not in ("cli", "demo"):
                    upward.append(
                        f"spexlvm/{path.relative_to(ROOT)}:{line} imports the package root"
                    )
                continue
            if LAYERS[layer_of(target)] > own:
                upward.append(
                    f"spexlvm/{path.relative_to(ROOT)}:{line} ({layer_of(name)}) imports "
                    f"spexlvm.{target} ({layer_of(target)})"
                )
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(f"spexlvm.{m}" for m in cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    # a package's __init__ importing its own submodules is not a cycle worth reporting:
    # drop the edges from a submodule to its own package
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not (name.startswith(d + ".") or d == "")}
    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above can fail: an upward import and a cycle in a fake package."""
    fake = tmp_path / "spexlvm"
    (fake / "tl").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "_utils.py").write_text("from .tl import _x\n")
    (fake / "tl" / "__init__.py").write_text("")
    (fake / "tl" / "_x.py").write_text("from .._utils import y\n")
    monkeypatch.setattr(f"{__name__}.ROOT", fake)
    with pytest.raises(AssertionError, match=r"_utils.py:1 \(base\) imports spexlvm.tl._x"):
        test_imports_point_down()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycle()
