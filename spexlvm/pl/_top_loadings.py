"""Bar chart of a factor's largest loadings, coloured by annotation status (paper Fig. 9)."""

from __future__ import annotations

import logging
import os
import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import (
    ACTIVE_THRESHOLD,
    GENE_COLORS,
    GENE_LABELS,
    check_n_top,
    factor_names,
    gene_status,
    get_loadings,
    get_results,
    legend_outside,
    resolve_factor,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["top_loadings"]


@plot_docs("spexlvm_top_loadings")
def top_loadings(
    adata: AnnData,
    factor: str | int,
    *,
    n_top: int = 10,
    n_removed: int = 5,
    gene_symbols: str | None = None,
    threshold: float = ACTIVE_THRESHOLD,
    key: str = KEYS.UNS,
    result_key: str = "refine",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """A factor's largest loadings, marking annotated, added and removed genes.

    Horizontal bars of the ``n_top`` genes with the largest ``|loading|`` (signed
    loadings, largest magnitude on top), coloured by the gene's status in the factor
    (colour-blind-safe Okabe-Ito colours):

    * blue, *annotated, active*: in the gene set and confirmed by the data;
    * green, *added*: not in the gene set but with a large loading;
    * vermillion, *removed*: in the gene set but switched off by the data;
    * grey, *not annotated*: neither in the set nor called added.

    Below a dashed line, up to ``n_removed`` further removed genes (not among the bars)
    are drawn as hollow vermillion circles at their (small) loadings.

    The calls come from :func:`spexlvm.tl.refine` when it has been run
    (``adata.uns[key][result_key]``); otherwise a gene is *active* when
    ``|w| >= threshold * max|w|`` of the factor.

    Parameters
    ----------
    %(adata_fit)s
    factor
        The factor: full name, short name (:func:`spexlvm.pl.short_name`) or index.
    n_top
        Number of genes with the largest ``|loading|`` to show as bars.
    n_removed
        Maximum number of further removed genes to show below the bars (those with the
        smallest ``|loading|``, or the most probable removals of
        :func:`spexlvm.tl.refine`); ``0`` for none. The legend gives how many of all the
        removed genes are shown.
    gene_symbols
        Column of ``adata.var`` with the gene labels; ``var_names`` when ``None``.
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
    The Axes, unless the figure was shown. The bars are ``ax.patches`` (top gene first
    in drawing order), the removed genes one
    :class:`~matplotlib.collections.PathCollection`; the title is the whole factor name
    (prefix dropped, wrapped) and its R².

    Examples
    --------
    >>> spexlvm.pl.top_loadings(adata, "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION")
    """
    n_top = check_n_top(n_top)
    if isinstance(n_removed, bool) or not isinstance(n_removed, int | np.integer) or n_removed < 0:
        raise ValueError(f"n_removed must be a non-negative integer, got {n_removed!r}.")
    results = get_results(adata, key)
    names = factor_names(adata, key)
    k = resolve_factor(adata, factor, key)
    w = get_loadings(adata, key)[:, k]
    status, source = gene_status(adata, k, key, threshold, result_key=result_key)
    if gene_symbols is None:
        genes = np.asarray(adata.var_names, dtype=str)
    elif gene_symbols in adata.var.columns:
        genes = adata.var[gene_symbols].astype(str).to_numpy()
    else:
        raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of adata.var.")

    top = np.argsort(-np.abs(w), kind="stable")[:n_top]
    removed_all = np.setdiff1d(np.flatnonzero(status == "removed"), top)
    if source == "refine":
        prob = _refine_probability(results[result_key], names[k], genes, adata)
        removed_all = removed_all[np.argsort(-prob[removed_all], kind="stable")]
    else:
        removed_all = removed_all[np.argsort(np.abs(w[removed_all]), kind="stable")]
    removed = removed_all[: int(n_removed)]

    import matplotlib.pyplot as plt
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    created = ax is None
    n_rows = len(top) + len(removed)
    if ax is None:
        _, ax = plt.subplots(
            figsize=(7.0, max(2.4, 0.26 * n_rows + 1.3 + 0.5 * bool(len(removed)))),
            layout="constrained",
        )
    gap = 0.8 if len(removed) else 0.0
    y_top = np.arange(len(top))[::-1] + len(removed) + gap  # largest on top
    ax.barh(
        y_top,
        w[top],
        color=[GENE_COLORS[s] for s in status[top]],
        height=0.7,
        zorder=2,
    )
    y_removed = np.arange(len(removed))[::-1].astype(float)
    if len(removed):
        ax.hlines(y_removed, 0, w[removed], color=GENE_COLORS["removed"], lw=1, zorder=2)
        ax.scatter(
            w[removed],
            y_removed,
            s=36,
            facecolors="white",
            edgecolors=GENE_COLORS["removed"],
            linewidths=1.4,
            zorder=3,
        )
        ax.axhline(len(removed) - 0.5 + gap / 2, color="#777777", lw=0.8, ls="--", zorder=1)
    ax.axvline(0, color="#333333", lw=0.8, zorder=2)
    ax.set_yticks(np.r_[y_top, y_removed], [*genes[top], *genes[removed]])
    ax.set_ylim(-0.6, len(removed) + gap + len(top) - 0.4)
    lim = max(float(np.abs(w[top]).max()) if len(top) else 0.0, 1e-12) * 1.08
    has_negative = bool((w[top] < 0).any() or (w[removed] < 0).any())
    ax.set_xlim(-lim if has_negative else -0.02 * lim, lim)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_xlabel("loading (posterior mean)")
    ax.set_ylabel("gene")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)

    # one factor: the whole name fits when wrapped (long Reactome names take 2-3 lines)
    title = textwrap.fill(_short_name(names[k], max_len=None), width=42)
    r2 = float(np.asarray(results["r2"], dtype=np.float64).reshape(-1)[k])
    ax.set_title(f"{title}\nR² {r2:.3f}", loc="left", fontsize="medium")

    present = [s for s in ("kept", "added", "other") if s in set(status[top])]
    handles: list = [Patch(color=GENE_COLORS[s], label=GENE_LABELS[s]) for s in present]
    labels = [GENE_LABELS[s] for s in present]
    n_removed_total = int((status == "removed").sum())
    if n_removed_total:
        hollow = Line2D(
            [],
            [],
            marker="o",
            ls="",
            markerfacecolor="white",
            markeredgecolor=GENE_COLORS["removed"],
            markeredgewidth=1.4,
        )
        in_bars = bool((status[top] == "removed").any())
        handles.append((Patch(color=GENE_COLORS["removed"]), hollow) if in_bars else hollow)
        n_shown = int((status[top] == "removed").sum()) + len(removed)
        label = GENE_LABELS["removed"]
        label += f":\n{n_shown} of {n_removed_total} shown" if n_shown < n_removed_total else ""
        labels.append(label)
    legend_outside(
        ax,
        handles,
        labels,
        title="calls: tl.refine" if source == "refine" else f"active: |w| > {threshold:g} max",
        handler_map={tuple: HandlerTuple(ndivide=None)},
    )
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_top_loadings", close=created
    )


def _refine_probability(stored, factor_name, genes, adata) -> np.ndarray:
    """Probability of the change stored by :func:`spexlvm.tl.refine`, per gene (else 0)."""
    out = np.zeros(adata.n_vars)
    if "probability" not in stored:
        return out
    rows = np.asarray(stored["factor"]).astype(str) == factor_name
    pos = {g: i for i, g in enumerate(adata.var_names)}
    for gene, p in zip(
        np.asarray(stored["gene"]).astype(str)[rows],
        np.asarray(stored["probability"], dtype=np.float64)[rows],
        strict=True,
    ):
        if gene in pos:
            out[pos[gene]] = p
    return out
