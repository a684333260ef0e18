"""Loadings of several factors with their top genes labelled (MOFA's ``plot_weights``)."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import (
    GENE_COLORS,
    check_n_top,
    factor_names,
    gene_status,
    get_loadings,
    get_results,
    resolve_factors,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["weights"]

#: Marks of the genes, drawn in this order (later on top).
_MARKS = ("other", "kept", "removed", "added")
#: Legend labels of the marks, without and with the calls of tl.refine.
_LABELS_SET = {"other": "not in the gene set", "kept": "in the gene set"}
_LABELS_REFINE = {
    "other": "not in the gene set",
    "kept": "in the set, kept",
    "removed": "in the set, removed by tl.refine",
    "added": "added by tl.refine",
}


@plot_docs("spexlvm_weights")
def weights(
    adata: AnnData,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int = 10,
    n_factors: int = 4,
    scale: bool = True,
    compress: float | None = 0.01,
    gene_symbols: str | None = None,
    ncols: int = 4,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | list[Axes] | None:
    """Loadings of one or several factors, every gene ranked, the top genes labelled.

    One panel per factor, as MOFA+'s ``plot_weights``: every gene is a dot at its
    loading (x) against its rank (y, most negative at the bottom, most positive on top);
    the ``n_top`` genes with the largest ``|loading|`` are labelled (labels stacked in the
    empty corners and joined to their dots). Dots and labels show the gene's relation
    to the factor's gene set:

    * blue, *in the gene set* (grey: not in it);
    * when :func:`spexlvm.tl.refine` has been run (``adata.uns[key]["refine"]``), its
      calls: *added* (green, not in the set but part of the factor) and *removed*
      (vermillion, hollow: in the set but not part of the factor).

    Unannotated factors (``sparse_k``, ``dense_k``) have no gene set: all their genes are
    grey.

    Parameters
    ----------
    %(adata_fit)s
    factors
        Factors: full names, short names, merged-member names or indices; ``None``: the
        ``n_factors`` factors with the largest R².
    n_top
        Number of genes labelled per factor (largest ``|loading|``, either sign).
    n_factors
        Number of factors shown when ``factors`` is ``None``.
    scale
        Divide each factor's loadings by its largest ``|loading|`` (x from -1 to 1, as
        MOFA+'s ``scale=TRUE``), so that panels compare; ``False``: posterior means.
    compress
        Genes with ``|loading|`` below this fraction of the factor's largest are drawn
        squeezed into a band between dashed lines (at most half the height of the other
        genes), so that the tails, where the factor's genes are, are not a thin strip
        when most of thousands of genes sit at 0; their rank order is kept. ``None`` or
        ``0``: every gene one row.
    gene_symbols
        Column of ``adata.var`` with the gene labels; ``var_names`` when ``None``.
    ncols
        Panels per row.
    %(key_fit)s
    ax
        Axes to draw into (one factor only); a new figure when ``None``.
    %(show)s
    %(save)s

    Returns
    -------
    The Axes (one factor) or the list of Axes, unless the figure was shown. In each
    panel ``ax.collections`` holds one :class:`~matplotlib.collections.PathCollection`
    per mark present (its ``get_label()`` is the mark's name: ``"other"``, ``"kept"``,
    ``"removed"``, ``"added"``); the :class:`~matplotlib.text.Annotation` objects in
    ``ax.texts`` are the labelled genes, largest ``|loading|`` first.

    Examples
    --------
    >>> spexlvm.tl.refine(adata)  # optional: marks the genes added and removed
    >>> spexlvm.pl.weights(adata, factors=["MHC class II antigen presentation"], n_top=12)
    """
    n_top = check_n_top(n_top)
    n_factors = check_n_top(n_factors, "n_factors")
    ncols = check_n_top(ncols, "ncols")
    names = factor_names(adata, key)
    get_results(adata, key)
    idx = resolve_factors(adata, factors, key, n_top=n_factors)
    if ax is not None and len(idx) > 1:
        raise ValueError(f"ax= takes one factor but {len(idx)} were asked; give one factor.")
    if gene_symbols is None:
        genes = np.asarray(adata.var_names, dtype=str)
    elif gene_symbols in adata.var.columns:
        genes = adata.var[gene_symbols].astype(str).to_numpy()
    else:
        raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of adata.var.")
    loadings = get_loadings(adata, key)
    r2 = np.asarray(get_results(adata, key)["r2"], dtype=np.float64).reshape(-1)

    import matplotlib.pyplot as plt

    created = ax is None
    if ax is None:
        n = len(idx)
        cols = min(ncols, n)
        rows = int(np.ceil(n / cols))
        height = max(3.6, 0.24 * n_top + 1.8)
        _, axes_grid = plt.subplots(
            rows, cols, figsize=(4.2 * cols, height * rows), layout="constrained", squeeze=False
        )
        axes = list(axes_grid.ravel())
        for extra in axes[n:]:
            extra.remove()
        axes = axes[:n]
    else:
        axes = [ax]
    for a, k in zip(axes, idx, strict=True):
        w = loadings[:, k]
        if scale:
            top = float(np.abs(w).max())
            w = w / top if top > 0 else w
        status, source = gene_status(adata, k, key)
        if source != "refine":  # no calls: only in the set or not
            status = np.where(np.isin(status, ["kept", "removed"]), "kept", "other")
        _panel(a, w, genes, status, source, n_top, scale, compress or 0.0)
        title = textwrap.fill(_short_name(names[k], max_len=80), width=38)
        a.set_title(f"{title}\nR² {r2[k]:.3f}", loc="left", fontsize="medium")
    fig = axes[0].figure
    out = _save_or_show(fig, show=show, save=save, default_name="spexlvm_weights", close=created)
    if out is None:
        return None
    return axes[0] if len(axes) == 1 else axes


def _panel(
    ax: Axes,
    w: np.ndarray,
    genes: np.ndarray,
    status: np.ndarray,
    source: str,
    n_top: int,
    scale: bool,
    compress: float,
) -> None:
    """One factor: ranked loadings, marks, and the top genes labelled."""
    rank, height, band = _positions(w, compress)
    labels = _LABELS_REFINE if source == "refine" else _LABELS_SET
    for mark in _MARKS:
        sel = status == mark
        if not sel.any():
            continue
        hollow = mark == "removed"
        ax.scatter(
            w[sel],
            rank[sel],
            s=10 if mark == "other" else 22,
            facecolors="white" if hollow else GENE_COLORS[mark],
            edgecolors=GENE_COLORS[mark],
            linewidths=1.0 if hollow else 0.0,
            zorder={"other": 2, "kept": 3, "removed": 4, "added": 5}[mark],
            label=mark,
            rasterized=w.size > 5000,
        )
    ax.axvline(0, color="#333333", lw=0.8, zorder=1)
    top = np.argsort(-np.abs(w), kind="stable")[: min(n_top, w.size)]
    _label_genes(ax, w, rank, height, genes, status, top)
    lim = float(np.abs(w).max()) if w.size else 1.0
    lim = lim if lim > 0 else 1.0
    ax.set_xlim(-1.15 * lim, 1.15 * lim)
    ax.set_ylim(0, height + 1)
    ax.set_yticks([])
    ax.set_ylabel(f"genes ranked by loading ({w.size})")
    if band is not None:  # the near-zero genes, drawn compressed between dashed lines
        lo, hi, n_mid = band
        for y in (lo, hi):
            ax.axhline(y, color="#AAAAAA", lw=0.6, ls=(0, (4, 3)), zorder=1)
        ax.text(
            -1.12 * lim,
            (lo + hi) / 2,
            f"{n_mid} genes with\n|loading| < {compress:g} max\n(compressed)",
            ha="left",
            va="center",
            fontsize="xx-small",
            color="#777777",
        )
    ax.set_xlabel("loading / factor max |loading|" if scale else "loading (posterior mean)")
    ax.spines[["top", "right", "left"]].set_visible(False)
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markersize=5,
            markerfacecolor="white" if m == "removed" else GENE_COLORS[m],
            markeredgecolor=GENE_COLORS[m],
            label=f"{labels[m]} ({int((status == m).sum())})",
        )
        for m in _MARKS
        if (status == m).any()
    ]
    ax.legend(  # below the axes: the corners inside hold the gene labels
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, -0.16),
        frameon=False,
        fontsize="x-small",
        handletextpad=0.2,
        borderaxespad=0.0,
    )


def _positions(
    w: np.ndarray, compress: float
) -> tuple[np.ndarray, float, tuple[float, float, int] | None]:
    """Height of each gene's dot: its rank, with the near-zero genes squeezed together.

    Genes with ``|w| < compress * max|w|`` take a band of at most half the height of
    the genes outside it (at least 10 rows), so that the tails, where the factor's genes
    are, get most of the panel. Returns the heights, the total height and the band
    ``(bottom, top, number of genes)``, ``None`` when nothing is compressed.
    """
    n = w.size
    order = np.argsort(w, kind="stable")
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(1, n + 1)
    lim = float(np.abs(w).max()) if n else 0.0
    if not compress or lim <= 0:
        return rank, float(n), None
    small = np.abs(w) < compress * lim
    n_mid = int(small.sum())
    n_neg = int((w < 0)[~small].sum())
    band = float(min(n_mid, max(0.5 * (n - n_mid), 10.0)))
    if n_mid < 20 or band >= 0.8 * n_mid:  # little to gain
        return rank, float(n), None
    y = rank.copy()
    y[small] = n_neg + 0.5 + (rank[small] - n_neg - 0.5) * band / n_mid
    y[~small & (w > 0)] -= n_mid - band
    return y, n - n_mid + band, (n_neg + 0.5, n_neg + band + 0.5, n_mid)


def _label_genes(
    ax: Axes,
    w: np.ndarray,
    rank: np.ndarray,
    n: float,
    genes: np.ndarray,
    status: np.ndarray,
    top: np.ndarray,
) -> None:
    """Labels of the top genes, stacked in the empty corner opposite their sign's end.

    Genes with positive loadings sit at the top right of the ranked curve: their labels go
    in a column right-aligned just left of 0 (the upper left is empty); negative genes sit
    at the bottom left, their labels in a column left-aligned just right of 0. Labels are
    one line apart (no overlap), each at its dot's height when there is room, and joined
    to its dot.
    """
    fig = ax.figure
    height_in = max(ax.get_position().height * fig.get_figheight(), 1.0)
    step = n * 0.13 / height_in  # about one line of x-small text, in rank units
    lim = float(np.abs(w).max()) if w.size else 1.0
    pos = sorted((int(i) for i in top if w[i] >= 0), key=lambda i: -rank[i])
    neg = sorted((int(i) for i in top if w[i] < 0), key=lambda i: rank[i])
    placed: dict[int, tuple[float, float, str]] = {}
    y_prev = n + 1 + 0.5 * step
    x_col = -0.06 * lim
    for i in pos:  # from the top down, each at its dot's height when there is room
        y_prev = min(float(rank[i]), y_prev - step)
        placed[i] = (x_col, y_prev, "right")
    y_prev = -0.5 * step
    x_col = 0.06 * lim
    for i in neg:  # from the bottom up
        y_prev = max(float(rank[i]), y_prev + step)
        placed[i] = (x_col, y_prev, "left")
    for i in top:  # largest |loading| first, as documented
        x, y, ha = placed[int(i)]
        color = GENE_COLORS[status[i]] if status[i] != "other" else "#444444"
        ax.annotate(
            str(genes[i]),
            xy=(w[i], rank[i]),
            xytext=(x, y),
            ha=ha,
            va="center",
            fontsize="x-small",
            color=color,
            arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5, "shrinkA": 1},
            zorder=6,
        )
