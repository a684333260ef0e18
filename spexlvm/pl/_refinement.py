"""Stacked bars of the genes each gene set kept, gained and lost in the fit."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import (
    ACTIVE_THRESHOLD,
    GENE_COLORS,
    check_n_top,
    factor_names,
    gene_status,
    resolve_factors,
    unique_labels,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["refinement"]

_ORDER = ("kept", "added", "removed")
_LABELS = {"kept": "kept", "added": "added", "removed": "removed"}


@plot_docs("spexlvm_refinement")
def refinement(
    adata: AnnData,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int = 15,
    threshold: float = ACTIVE_THRESHOLD,
    key: str = KEYS.UNS,
    result_key: str = "refine",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """How much the data changed each gene set: kept, added and removed genes per factor.

    One horizontal stacked bar per factor: genes of the set that stay active (*kept*,
    blue), genes the model added (*added*, green) and genes of the set it switched off
    (*removed*, vermillion, hatched). ``kept + removed`` is the annotated set,
    ``kept + added`` the refined one.

    The calls come from :func:`spexlvm.tl.refine` when it has been run
    (``adata.uns[key][result_key]``); otherwise a gene is *active* when
    ``|w| >= threshold * max|w|`` of the factor (see :func:`spexlvm.pl.top_loadings`).

    Parameters
    ----------
    %(adata_fit)s
    factors
        Factors to show (full names, short names or indices), top to bottom; ``None``:
        the ``n_top`` annotated factors with the largest R².
    n_top
        Number of factors shown when ``factors`` is ``None``.
    threshold
        Activity threshold of the fallback rule (fraction of the factor's max ``|w|``).
    %(key_fit)s
    result_key
        ``key_added`` given to :func:`spexlvm.tl.refine` (``"refine"`` by default).
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. ``ax.containers`` holds the three bar
    containers (kept, added, removed), one bar per factor each.

    Examples
    --------
    >>> spexlvm.tl.refine(adata)  # optional: calls with a false-discovery control
    >>> spexlvm.pl.refinement(adata, n_top=10)
    """
    n_top = check_n_top(n_top)
    names = factor_names(adata, key)
    idx = resolve_factors(adata, factors, key, n_top=n_top, annotated_only=True)
    counts = np.zeros((len(idx), len(_ORDER)), dtype=int)
    source = "threshold"
    for row, k in enumerate(idx):
        status, source = gene_status(adata, k, key, threshold, result_key=result_key)
        counts[row] = [int((status == s).sum()) for s in _ORDER]
    labels = unique_labels([_short_name(names[k]) for k in idx])

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, max(2.6, 0.3 * len(idx) + 1.6)), layout="constrained")
    y = np.arange(len(idx))[::-1]  # first factor on top
    left = np.zeros(len(idx))
    for j, s in enumerate(_ORDER):
        ax.barh(
            y,
            counts[:, j],
            left=left,
            height=0.72,
            color=GENE_COLORS[s] if s != "removed" else "white",
            edgecolor=GENE_COLORS[s],
            hatch="////" if s == "removed" else None,
            linewidth=1.0 if s == "removed" else 0,
            label=_LABELS[s],
            zorder=2,
        )
        left += counts[:, j]
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(idx) - 0.4)
    ax.set_xlabel("number of genes (kept + removed = annotated set)")
    ax.set_ylabel("factor (gene set)")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    how = (
        "calls of tl.refine" if source == "refine" else f"active gene: |w| > {threshold:g} max|w|"
    )
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncols=3,
        frameon=False,
        fontsize="small",
        title=f"genes per set ({how})",
        title_fontsize="small",
        alignment="left",
        handlelength=1.5,
        columnspacing=1.0,
    )
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_refinement", close=created
    )
