"""Development sessions: ``nox`` runs lint and tests; ``nox -s NAME`` runs one session.

Every session installs torch 2.13.0 first (pinned so that pip takes the CPU build where
the machine provides one instead of resolving a multi-GB CUDA build), then the package
with the extras it needs. GPU users choose their torch with the environment variable
``SPEXLVM_TORCH``, e.g. ``SPEXLVM_TORCH=torch nox -s tests``.

Sessions: tests, tests_slow, lint, docs, tutorials, bench.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
TORCH = os.environ.get("SPEXLVM_TORCH", "torch==2.13.0")
PYTHON = "3.11"


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session(python=PYTHON, venv_backend="venv")
def tests(session: nox.Session) -> None:
    """Run the default test suite (slow tests deselected by pyproject's addopts)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv")
def tests_slow(session: nox.Session) -> None:
    """Run the slow tests only (paper-size fits, accuracy and scaling checks)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON, venv_backend="venv")
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint rules and formatting); no changes are made."""
    session.install("ruff>=0.5")
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
