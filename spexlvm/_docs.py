"""Shared parameter docs, substituted into docstrings with docrep (as scvi-tools does).

A docstring names a shared entry as ``%(name)s`` on its own line in the Parameters section,
at the indentation of the other parameter names; the decorator dedents the docstring
(:func:`inspect.cleandoc`) and substitutes the entry::

    @plot_docs("auroc")
    def auroc(adata, *, key, ax, show, save):
        \"\"\"...

Parameters
----------
        %(adata_fit)s
        %(key_fit)s
        %(ax)s
        %(show)s
        %(save)s
        \"\"\"

:func:`plot_docs` writes ``save`` for the plot's default file name, :func:`tool_docs`
writes ``key_added`` for the :mod:`spexlvm.get` reader of the tool's result; :data:`docs`
(``@docs.dedent``) substitutes the fixed entries only. A stray ``%`` (``"5%"``) is left
as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from docrep import DocstringProcessor

__all__ = ["PARAMS", "docs", "key_added_doc", "plot_docs", "save_doc", "tool_docs"]

_F = TypeVar("_F", bound=Callable)

# Plotting functions (spexlvm.pl).
_ADATA_FIT = """\
adata
    AnnData with the results of :func:`spexlvm.tl.fit`."""
_KEY_FIT = """\
key
    ``key_added`` given to :func:`spexlvm.tl.fit`."""
_AX = """\
ax
    Axes to draw into; a new figure when ``None``."""
_SHOW = """\
show
    Show the figure; ``None`` follows ``scanpy.settings.autoshow``."""
_SAVE = """\
save
    As in scanpy: ``True`` saves to ``scanpy.settings.figdir`` as
    ``{name}.{{file_format_figs}}``; a str suffix (``"_pbmc.png"``) as
    ``{name}_pbmc.png`` there; a path with a directory part saves there."""

# Tools (spexlvm.tl).
_ADATA_FITTED = """\
adata
    AnnData fitted by :func:`spexlvm.tl.fit`."""
_ADATA_FITTED_DATA = """\
adata
    AnnData fitted by :func:`spexlvm.tl.fit` (with the data it was fitted on)."""
_KEY = """\
key
    Key of the fit."""
_KEY_ADDED = """\
key_added
    Name of the stored result: ``adata.uns[key][key_added]``; a second call with
    another name keeps the first (read it with :func:`spexlvm.get.{reader}`)."""
_ACCELERATOR = """\
accelerator
    ``"auto"`` (GPU when available), ``"cpu"``, ``"gpu"``, ...: the Lightning
    accelerator."""

#: The fixed shared entries, by the name a docstring uses in ``%(name)s``.
PARAMS: dict[str, str] = {
    "adata_fit": _ADATA_FIT,
    "key_fit": _KEY_FIT,
    "ax": _AX,
    "show": _SHOW,
    "adata_fitted": _ADATA_FITTED,
    "adata_fitted_data": _ADATA_FITTED_DATA,
    "key": _KEY,
    "accelerator": _ACCELERATOR,
}

#: Substitutes :data:`PARAMS` (``@docs.dedent``).
docs = DocstringProcessor(**PARAMS)


def save_doc(name: str) -> str:
    """The ``save`` entry of a plot whose default file name is ``name`` (``"spexlvm_auroc"``)."""
    return _SAVE.format(name=name)


def key_added_doc(reader: str) -> str:
    """The ``key_added`` entry of a tool whose result :func:`spexlvm.get.<reader>` reads."""
    return _KEY_ADDED.format(reader=reader)


def plot_docs(name: str) -> Callable[[_F], _F]:
    """Decorator: substitute :data:`PARAMS` and ``%(save)s`` for the default file ``name``."""
    return DocstringProcessor(**PARAMS, save=save_doc(name)).dedent


def tool_docs(reader: str) -> Callable[[_F], _F]:
    """Decorator: substitute :data:`PARAMS` and ``%(key_added)s`` read by ``get.<reader>``."""
    return DocstringProcessor(**PARAMS, key_added=key_added_doc(reader)).dedent
