"""Development sessions: ``nox`` runs lint and tests; ``nox -s NAME`` runs one session.

Every session installs torch 2.13.0 first (pinned so that pip takes the CPU build where
the machine provides one instead of resolving a multi-GB CUDA build), then the package
with the extras it needs. GPU users choose their torch with the environment variable
``SPEXLVM_TORCH``, e.g. ``SPEXLVM_TORCH=torch nox -s tests``.

Sessions: tests, tests_min, tests_latest, tests_slow, lint, docs, tutorials, bench.
``tests_min`` runs the suite against the oldest versions pyproject.toml supports (every
direct dependency pinned to its lower bound through a constraints file written from
pyproject.toml, so the two cannot drift apart), ``tests_latest`` against the newest
installable ones (each in a fresh virtualenv). Both print the versions they resolved.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
TORCH = os.environ.get("SPEXLVM_TORCH", "torch==2.13.0")
PYTHON = "3.11"


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


def _requirements(extras: tuple[str, ...] = ("test",)) -> list[Requirement]:
    """The direct requirements: ``[project].dependencies`` and the given extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.name != "spexlvm"]  # "spexlvm[test]" in the dev extra


def min_constraints(extras: tuple[str, ...] = ("test",)) -> str:
    """A pip constraints file pinning every direct requirement to its lower bound.

    Every requirement needs a ``>=`` bound (tests/test_packaging.py checks that the
    package's dependencies have one). torch is the exception: it is pinned to ``TORCH``
    (2.13.0, the CPU build this machine provides), so the torch lower bound itself is not
    exercised here.
    """
    lines = ["# Lower bounds of pyproject.toml, written by noxfile.py (session tests_min)."]
    for req in _requirements(extras):
        if req.name == "torch":
            lines.append(f"{TORCH}  # not the lower bound: the CPU build this machine has")
            continue
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if not lower:
            raise ValueError(f"{req.name}: no lower bound (>=) in pyproject.toml.")
        lines.append(f"{req.name}=={lower[0]}")
    return "\n".join(lines) + "\n"


def _report_versions(session: nox.Session) -> None:
    """Print the installed version of every direct requirement (for the session log)."""
    names = sorted({re.sub(r"[-_.]+", "-", r.name).lower() for r in _requirements()})
    session.run(
        "python",
        "-c",
        "import sys\nfrom importlib.metadata import version\n"
        "for n in sys.argv[1:]:\n    print(f'{n}=={version(n)}')",
        "spexlvm",
        *names,
    )


@nox.session(python=PYTHON, venv_backend="venv")
def tests(session: nox.Session) -> None:
    """Run the default test suite (slow tests deselected by pyproject's addopts)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv", reuse_venv=False)
def tests_min(session: nox.Session) -> None:
    """Run the default tests with every direct dependency at its lower bound."""
    constraints = Path(session.create_tmp()) / "min-constraints.txt"
    constraints.write_text(min_constraints())
    session.log(f"constraints ({constraints}):\n{constraints.read_text()}")
    session.install(TORCH)
    session.install("-c", str(constraints), "-e", ".[test]")
    _report_versions(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv", reuse_venv=False)
def tests_latest(session: nox.Session) -> None:
    """Run the default tests with the newest installable release of every dependency."""
    # torch stays at TORCH: an eager upgrade would replace the CPU build by PyPI's newest
    # (CUDA) one
    constraints = Path(session.create_tmp()) / "torch-constraint.txt"
    constraints.write_text(TORCH + "\n")
    session.install(TORCH)
    session.install(
        "--upgrade", "--upgrade-strategy", "eager", "-c", str(constraints), "-e", ".[test]"
    )
    _report_versions(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv")
def tests_slow(session: nox.Session) -> None:
    """Run the slow tests only (paper-size fits, accuracy and scaling checks)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv")
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint rules and formatting); no changes are made."""
    session.install("ruff==0.17.6")  # as .ci/run and .pre-commit-config.yaml
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON, venv_backend="venv")
def docs(session: nox.Session) -> None:
    """Build the HTML documentation into docs/_build/html; warnings are errors."""
    _install(session, "doc")
    session.run("sphinx-build", "-W", "-b", "html", "docs", "docs/_build/html", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv")
def tutorials(session: nox.Session) -> None:
    """Execute the notebooks in tutorials/ in place (stored with their outputs)."""
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tutorials").glob("*.ipynb"))
    if not notebooks:
        session.skip("No notebooks in tutorials/.")
    _install(session, "doc")
    session.install("nbconvert", "ipykernel")
    session.run(
        "jupyter",
        "nbconvert",
        "--execute",
        "--to",
        "notebook",
        "--inplace",
        "--ExecutePreprocessor.timeout=1800",
        "--ExecutePreprocessor.kernel_name=python3",
        *notebooks,
        env={"MPLBACKEND": "Agg"},
    )


@nox.session(python=PYTHON, venv_backend="venv")
def bench(session: nox.Session) -> None:
    """Run the benchmarks (benchmarks/run.py) and print their results.

    Quick sizes by default; ``nox -s bench -- --full`` runs the sizes reported in
    benchmarks/RESULTS.md. The MuVI comparison runs only where MuVI's own environment
    exists (``MUVI_PYTHON`` or ``../muvi-venv`` beside the repository, see
    benchmarks/compare_muvi.py); otherwise it is skipped with a message.
    """
    script = ROOT / "benchmarks" / "run.py"
    if not script.is_file():
        available = ", ".join(sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
        session.skip(f"benchmarks/run.py not found (scripts there: {available or 'none'}).")
    _install(session, "test")
    session.run("python", str(script.relative_to(ROOT)), *session.posargs)
