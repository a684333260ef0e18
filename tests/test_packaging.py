"""Packaging: declared dependencies match the imports, files a release needs, the API page.

The import checks parse every module with ``ast`` (imports inside functions included) and
map import names to distributions with ``importlib.metadata.packages_distributions()``,
so they need the package's dependencies installed, as every other test does.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spexlvm"

#: Declared dependencies that no module imports yet, and why. Keep it short: an entry
#: here is a dependency users install for nothing until the reason is resolved.
DECLARED_NOT_IMPORTED: dict[str, str] = {}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def _pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib needs Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (anywhere in the module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(modules: set[str], local: set[str]) -> set[str]:
    """``modules`` without the standard library, ``__future__`` and ``local`` names."""
    return {m for m in modules if m not in sys.stdlib_module_names | {"__future__"} | local}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    """Import name -> canonical distribution names (empty when nothing provides it)."""
    mapping = packages_distributions()
    return {m: {_canonical(d) for d in mapping.get(m, [])} for m in modules}


def undeclared(modules: set[str], declared: set[str]) -> list[str]:
    """The imports that no declared distribution provides, with their providers."""
    problems = []
    for module, dists in sorted(distributions(modules).items()):
        if not dists & declared:
            provider = ", ".join(sorted(dists)) or "no installed distribution"
            problems.append(f"import {module} (provided by {provider})")
    return problems


def _package_imports() -> set[str]:
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        modules |= imported_modules(path.read_text())
    return third_party(modules, {"spexlvm"})


def _dependencies() -> set[str]:
    return {_requirement_name(r) for r in _pyproject()["project"]["dependencies"]}


def test_every_import_of_the_package_is_declared():
    problems = undeclared(_package_imports(), _dependencies())
    assert not problems, (
        "spexlvm imports modules whose distributions are not in pyproject.toml's "
        f"[project].dependencies: {problems}. Declare them (with a lower bound)."
    )


def test_every_declared_dependency_is_imported():
    provided = set().union(*distributions(_package_imports()).values())
    unused = _dependencies() - provided - set(DECLARED_NOT_IMPORTED)
    assert not unused, (
        f"Declared but never imported by spexlvm: {sorted(unused)}. Remove them from "
        "[project].dependencies, or name them in DECLARED_NOT_IMPORTED with the reason."
    )
    assert set(DECLARED_NOT_IMPORTED) <= _dependencies(), "stale DECLARED_NOT_IMPORTED entry"


def test_an_undeclared_import_is_caught():
    # the checker itself: a new import (here inside a function) of a distribution that is
    # installed but not declared is reported, one that is declared is not
    source = "import numpy as np\n\ndef f():\n    from pytest import approx\n    return approx\n"
    modules = third_party(imported_modules(source), set())
    assert modules == {"numpy", "pytest"}
    assert undeclared(modules, _dependencies()) == ["import pytest (provided by pytest)"]
    assert third_party({"os", "__future__", "spexlvm"}, {"spexlvm"}) == set()


def test_every_import_of_the_tests_is_declared_for_them():
    project = _pyproject()["project"]
    declared = _dependencies() | {
        _requirement_name(r) for r in project["optional-dependencies"]["test"]
    }
    tests = ROOT / "tests"
    modules = set()
    for path in tests.rglob("*.py"):
        modules |= imported_modules(path.read_text())
    local = {"spexlvm"} | {p.stem for p in tests.glob("*.py")}
    problems = undeclared(third_party(modules, local), declared)
    assert not problems, f"tests import undeclared modules: {problems} (add to the test extra)"


def test_dependency_ranges():
    # every runtime dependency has a lower bound (nox -s tests_min pins them) and no upper
    # bound (an upper pin downgrades a current scverse environment); torch stays a range
    # that the CPU build the README installs (2.13.0) satisfies
    for requirement in _pyproject()["project"]["dependencies"]:
        name = _requirement_name(requirement)
        assert ">=" in requirement, f"{requirement}: give a lower bound"
        assert not re.search(r"<|==|~=", requirement), f"{requirement}: no upper pin"
        if name == "torch":
            lower = re.search(r">=\s*([0-9.]+)", requirement).group(1)
            assert tuple(map(int, lower.split("."))) <= (2, 13, 0)


def test_release_files():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2026 spexlvm developers" in license_text
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    assert (PACKAGE / "py.typed").is_file()  # hatch ships every file of the package
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", citation, re.M)
    assert re.search(r"^preferred-citation:\n  type: article$", citation, re.M)
    assert "Encoding Domain Information with Sparse Priors" in citation
    assert (
        re.search(r"^version: (\S+)$", citation, re.M).group(1)
        == (_pyproject()["project"]["version"])
    )


def test_api_page_lists_every_public_name():
    import importlib

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        apigen = importlib.import_module("_apigen")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = apigen.render(apigen.API_PAGE.read_text())
    listed = apigen._listed_in(page)
    modules = apigen.public_modules()
    short = {m.__name__.rsplit(".", 1)[-1] for m in modules}
    assert {"pp", "tl", "pl", "datasets"} <= short
    assert not short & set(apigen.EXCLUDED)
    missing = [f"{m.__name__}.{name}" for m in modules for name in m.__all__] + [
        f"spexlvm.{name}" for name in apigen.top_level_names()
    ]
    missing = [name for name in missing if name not in listed]
    assert not missing, f"not on the API page: {missing}"
    # autosummary writes a stub page for every function and class of those modules (it
    # reads the generated stub source, not the rendered page); constants are py:data
    # entries on the page itself
    stubs = apigen._listed_in(apigen._stub_source(apigen.API_PAGE.read_text()))
    functions = {
        f"{m.__name__}.{name}"
        for m in modules
        for name in m.__all__
        if not apigen._is_data(m, name)
    }
    assert functions <= stubs
    assert "spexlvm.pp.DECOY_PREFIX" in listed - stubs
