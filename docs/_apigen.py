"""The API reference's module sections, generated from the package's ``__all__`` lists.

A Sphinx extension (loaded by ``conf.py``). ``docs/api.md`` holds the prose and the
hand-written sections (the model class, the private modules for contributors); the line
``% spexlvm:api-modules`` in it is replaced, when Sphinx reads the page, by one section per
public module, each an autosummary of every name in the module's ``__all__``:

- the modules in ``spexlvm.__all__`` (``pp``, ``tl``, ``pl``, ``datasets``, ...), and
  public submodules that define ``__all__`` without being re-exported (a new module
  appears without editing any list here); ``EXCLUDED`` names the exceptions;
- constants (``pp.DECOY_PREFIX``) as ``py:data`` entries with their value and ``#:``
  comment (an autosummary row would show the docstring of ``str``);
- a last section for top-level names of ``spexlvm.__all__`` (classes, functions) that
  ``api.md`` does not already list in an autosummary of its own.

Autosummary writes its stub pages by scanning the source files on disk, before Sphinx
reads them, so the same lists also go into ``generated/_api_modules.rst`` (excluded from
the build, listed in ``autosummary_generate``), whose ``:toctree: .`` puts the stubs
where the page's ``:toctree: generated`` links to them.
``tests/test_packaging.py`` checks that every public name appears on the page.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

PACKAGE = "spexlvm"
MARKER = "% spexlvm:api-modules"
HERE = Path(__file__).parent
API_PAGE = HERE / "api.md"
STUBS_SOURCE = "generated/_api_modules.rst"  # relative to docs/

#: Section titles of the known modules, in page order; other modules follow by name.
TITLES = {
    "pp": "Preprocessing",
    "tl": "Tools",
    "pl": "Plotting",
    "get": "Getters",
    "datasets": "Data sets",
}
#: Public submodules with ``__all__`` that are not documented as a module, and why.
EXCLUDED = {
    "cli": "the command line (`spexlvm fit`, `spexlvm demo`), documented in the README",
    "train": "the training machinery, documented by hand in api.md's 'Training' section",
}


def public_modules(package: str = PACKAGE) -> list[ModuleType]:
    """The public modules of ``package``: in its ``__all__`` or defining ``__all__``."""
    pkg = importlib.import_module(package)
    names = [n for n in pkg.__all__ if inspect.ismodule(getattr(pkg, n, None))]
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in names or info.name in EXCLUDED:
            continue
        if hasattr(importlib.import_module(f"{package}.{info.name}"), "__all__"):
            names.append(info.name)
    order = list(TITLES)
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return [importlib.import_module(f"{package}.{n}") for n in names if n not in EXCLUDED]


def top_level_names(package: str = PACKAGE) -> list[str]:
    """The non-module names of ``package.__all__`` (classes, functions; no dunders)."""
    pkg = importlib.import_module(package)
    return [
        n
        for n in pkg.__all__
        if not n.startswith("__") and not inspect.ismodule(getattr(pkg, n, None))
    ]


def _intro(module: ModuleType) -> str:
    """The first paragraph of a module's docstring, with reST literals as Markdown."""
    doc = inspect.getdoc(module) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    first = re.sub(r"``([^`]+)``", r"`\1`", first)
    return re.sub(r":(\w+):`([^`]+)`", r"{\1}`\2`", first)


def _autosummary(module: str | None, entries: list[str], toctree: str) -> str:
    lines = ["```{eval-rst}"]
    if module is not None:
        lines.append(f".. module:: {module}")
    lines += [f".. currentmodule:: {PACKAGE}", "", ".. autosummary::"]
    lines += [f"   :toctree: {toctree}", ""]
    lines += [f"   {e}" for e in entries]
    lines.append("```")
    return "\n".join(lines)


def _is_data(module: ModuleType, name: str) -> bool:
    """Whether a public name is a constant (autosummary would show its type's docstring)."""
    obj = getattr(module, name)
    return not (inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj))


def _attribute_doc(module: ModuleType, name: str) -> str:
    """The ``#:`` comment above a constant, in the module or private submodule defining it.

    Read from the source text (as autodoc does, without needing Sphinx, so that the test
    of this page runs with the test extra only).
    """
    paths = [Path(module.__file__)]
    if hasattr(module, "__path__"):
        paths += sorted(Path(module.__path__[0]).glob("*.py"))
    pattern = re.compile(rf"((?:^[ \t]*#:.*\n)+)^{re.escape(name)}\s*(?::[^=\n]*)?=", re.M)
    for path in paths:
        match = pattern.search(path.read_text())
        if match:
            lines = match.group(1).strip().splitlines()
            return " ".join(line.strip()[2:].strip() for line in lines)
    return ""


def _data(module: ModuleType, short: str, names: list[str]) -> str:
    """Constants as ``py:data`` entries with their value and ``#:`` comment."""
    lines = ["```{eval-rst}", f".. currentmodule:: {PACKAGE}", ""]
    for name in names:
        lines += [f".. py:data:: {short}.{name}", f"   :value: {getattr(module, name)!r}", ""]
        lines += [f"   {_attribute_doc(module, name)}", ""]
    lines.append("```")
    return "\n".join(lines)


def _listed_in(text: str) -> set[str]:
    """Names listed in the autosummary directives of a page (``currentmodule`` aware)."""
    found, current, in_summary = set(), PACKAGE, False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(".. currentmodule::"):
            current = stripped.split("::", 1)[1].strip()
        if stripped.startswith(".. py:data::"):
            found.add(f"{current}.{stripped.split('::', 1)[1].strip()}")
        if stripped.startswith(".. autosummary::"):
            in_summary = True
            continue
        if in_summary:
            if stripped.startswith(":") or not stripped:
                continue
            if not line.startswith("   ") or stripped.startswith(("..", "```")):
                in_summary = False
                continue
            found.add(f"{current}.{stripped}")
    return found


def sections(page_text: str | None = None, *, toctree: str = "generated") -> str:
    """The generated Markdown: one section per public module, then remaining classes."""
    page_text = API_PAGE.read_text() if page_text is None else page_text
    out = []
    for module in public_modules():
        short = module.__name__.rsplit(".", 1)[-1]
        title = TITLES.get(short, short)
        entries = [f"{short}.{n}" for n in module.__all__ if not _is_data(module, n)]
        data = [n for n in module.__all__ if _is_data(module, n)]
        out += [f"## {title}: `{short}`", "", _intro(module), ""]
        out += [_autosummary(module.__name__, entries, toctree), ""]
        if data:
            out += [_data(module, short, data), ""]
    listed = _listed_in(page_text)
    rest = [n for n in top_level_names() if f"{PACKAGE}.{n}" not in listed]
    if rest:
        out += ["## Other top-level names", "", _autosummary(None, rest, toctree), ""]
    return "\n".join(out)


def render(page_text: str) -> str:
    """``page_text`` with the marker line replaced by the generated sections."""
    if MARKER not in page_text:
        raise ValueError(f"{API_PAGE.name} lost its marker line {MARKER!r}.")
    return page_text.replace(MARKER, sections(page_text), 1)


def _stub_source(page_text: str) -> str:
    """The same autosummaries as reST, for autosummary's stub generation only."""
    text = sections(page_text, toctree=".")
    blocks = [
        b for b in re.findall(r"```\{eval-rst\}\n(.*?)```", text, re.S) if "autosummary" in b
    ]
    return "\n".join(b.replace(".. module::", ".. .. module::") for b in blocks)


def _on_source_read(app, docname: str, source: list[str]) -> None:
    if docname == "api":
        source[0] = render(source[0])


def setup(app) -> dict:
    """Write the stub source and replace the marker when the API page is read."""
    stubs = HERE / STUBS_SOURCE
    stubs.parent.mkdir(exist_ok=True)
    text = _stub_source(API_PAGE.read_text())
    if not stubs.exists() or stubs.read_text() != text:
        stubs.write_text(text)
    app.connect("source-read", _on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
