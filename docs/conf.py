"""Sphinx configuration of the spexlvm documentation.

Build (offline, warnings are errors)::

    sphinx-build -W -b html docs docs/_build/html

Cross-links to other projects' docs (intersphinx) need the network; switch them on with
``SPEXLVM_DOCS_INTERSPHINX=1``. The tutorials are stored executed in ``../tutorials/``
and copied into ``docs/tutorials/`` at build time (myst-nb does not execute them).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))  # _apigen: the API page's module sections from __all__

# -- Tutorials: ../tutorials/*.ipynb -> docs/tutorials/ -------------------------------------
_TUTORIALS_SRC = ROOT / "tutorials"
_TUTORIALS_DST = HERE / "tutorials"


def _copy_tutorials() -> None:
    """Mirror the stored, executed notebooks into the source tree (only when changed)."""
    _TUTORIALS_DST.mkdir(exist_ok=True)
    wanted = {p.name for p in _TUTORIALS_SRC.glob("*.ipynb")}
    for stale in _TUTORIALS_DST.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for src in sorted(_TUTORIALS_SRC.glob("*.ipynb")):
        dst = _TUTORIALS_DST / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


_copy_tutorials()

# sphinx-autodoc-typehints 3.x calls an API that Sphinx 9 deprecates (harmless, noisy)
warnings.filterwarnings(
    "ignore", message=r".*set_application.*", module=r"sphinx_autodoc_typehints.*"
)

# -- Project ------------------------------------------------------------------------------
project = "spexlvm"
author = "spexlvm developers"
copyright = f"{date.today().year}, {author}"
release = _version("spexlvm")
version = release

# -- General ------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "_apigen",
]

_INTERSPHINX = os.environ.get("SPEXLVM_DOCS_INTERSPHINX", "") == "1"
if _INTERSPHINX:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "pyro": ("https://docs.pyro.ai/en/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
        "gseapy": ("https://gseapy.readthedocs.io/en/latest/", None),
    }

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "generated/_api_modules.rst",  # _apigen's input for autosummary's stubs, not a page
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
pygments_style = "default"

# -- MyST / myst-nb -----------------------------------------------------------------------
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks are stored executed
nb_merge_streams = True
nb_output_stderr = "remove"  # warnings and Lightning chatter, not part of the story

# -- autodoc / autosummary / napoleon -------------------------------------------------------
# the pages with autosummary directives, and _apigen's list of the generated ones
autosummary_generate = [
    *sorted(str(p.relative_to(HERE)) for p in HERE.glob("*.md")),
    "generated/_api_modules.rst",
]
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": False}
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True  # having a separate entry generally helps readability
napoleon_use_param = True
typehints_defaults = "braces"
typehints_use_signature = False
typehints_use_signature_return = False
always_document_param_types = False
typehints_document_rtype = True


# The package's numpydoc docstrings keep types in the signatures only (cookiecutter-scverse
# style): a ``Returns`` section is prose, e.g. "Cells x factors, columns named by ...".
# Plain napoleon reads the first line of such a section as the return *type*, and the
# first "words: ..." of a property's docstring as its type. Treat both as prose; the
# types come from the annotations (sphinx-autodoc-typehints).
def _patch_napoleon() -> None:
    import re

    from sphinx.ext.napoleon.docstring import NumpyDocstring

    def _is_prose(line: object) -> bool:
        if not isinstance(line, str):
            return False
        text = line.strip()
        # "name : type" is a numpydoc entry; a bare type has no spaces ("pandas.DataFrame")
        return bool(text) and " : " not in text and re.search(r"\s", text) is not None

    consume_returns = NumpyDocstring._consume_returns_section

    def _consume_returns_section(self, preprocess_types: bool = False):
        self._consume_empty()
        # sphinx-autodoc-typehints puts a ":" line under "Returns" (meaning "no type here")
        colon = isinstance(self._lines.get(0), str) and self._lines.get(0).strip() == ":"
        if not _is_prose(self._lines.get(1 if colon else 0)):
            return consume_returns(self, preprocess_types=preprocess_types)
        if colon:
            self._lines.next()
        lines = self._dedent(self._consume_to_next_section())
        while lines and not lines[-1].strip():
            lines.pop()
        return [("", "", lines)]

    consume_inline_attribute = NumpyDocstring._consume_inline_attribute

    def _consume_inline_attribute(self):
        first = self._lines.get(0)
        head = first.split(":", 1)[0] if isinstance(first, str) else ""
        if ":" in str(first) and re.search(r"\s", head.strip()):
            line = self._lines.next()
            descs = [line.strip(), *self._dedent(self._consume_to_end())]
            return "", self.__class__(descs, self._config).lines()
        return consume_inline_attribute(self)

    NumpyDocstring._consume_returns_section = _consume_returns_section
    NumpyDocstring._consume_inline_attribute = _consume_inline_attribute


_patch_napoleon()

# -- HTML -----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "spexlvm"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "repository_url": "https://github.com/spexlvm/spexlvm",
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False


# -- Intersphinx: private qualnames of public classes -----------------------------------------
# sphinx-autodoc-typehints writes the defining module (``anndata._core.anndata.AnnData``);
# the other projects' inventories list the public names.
_QUALNAME_FIXES = {
    "anndata._core.anndata.AnnData": "anndata.AnnData",
    "pandas.core.frame.DataFrame": "pandas.DataFrame",
    "pandas.core.series.Series": "pandas.Series",
    "scipy.sparse._csr.csr_matrix": "scipy.sparse.csr_matrix",
    "torch.nn.modules.module.Module": "torch.nn.Module",
}


def _fix_qualname(app, env, node, contnode):
    target = node.get("reftarget")
    if target not in _QUALNAME_FIXES:
        return None
    from sphinx.ext.intersphinx import missing_reference

    node["reftarget"] = _QUALNAME_FIXES[target]
    return missing_reference(app, env, node, contnode)


def setup(app):
    if _INTERSPHINX:
        app.connect("missing-reference", _fix_qualname)
