"""Stacked bars: the factors that explain each gene's variance (``tl.gene_attribution``)."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ..tl._attribution import attribution_table
from ..tl._calls import shared_passes
from ..tl._utils import get_annotation
from ._utils import OKABE_ITO, check_n_top, factor_names, legend_outside, resolve_factor
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["gene_attribution"]

#: Colour of the factors beyond the palette (and of "other factors" in the legend).
OTHER_COLOR = "#BBBBBB"


@plot_docs("spexlvm_gene_attribution")
@shared_passes()  # factor=: the gene variances are read once for both tables
def gene_attribution(
    adata: AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    factor: str | int | None = None,
    n_genes: int = 12,
    n_top: int = 3,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Where each gene's variance went: the factors that explain most of it, stacked.

    One horizontal bar per gene, made of the shares of its variance that its ``n_top``
    leading factors explain (``r2`` of :func:`spexlvm.tl.gene_attribution`, largest
    first from the left). A segment is hatched when the gene is not in that factor's gene
    set. The factors are not orthogonal, so the stacked shares are a picture of who
    carries the gene, not a partition of its variance.

    Give either ``genes`` or ``factor``. With ``factor``, the genes are the ``n_genes``
    genes of its set that the fit explains most (largest leading share), and that
    factor's segments are outlined: the set's genes that went to other factors (an
    overlapping set, an unannotated factor) show where a pathway's signal went when its
    factor does not mark the cells its genes mark (``benchmarks/RESULTS.md``, "Where a
    pathway's marker genes went").

    Parameters
    ----------
    %(adata_fit)s
    genes
        Gene names (``adata.var_names``), or one name.
    factor
        A gene-set factor: full name, short name (:func:`spexlvm.pl.short_name`) or
        index; its set's genes are shown.
    n_genes
        Genes shown with ``factor``.
    n_top
        Factors per gene.
    %(key_fit)s
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. One bar container per rank
    (``ax.containers``, rank 1 first); the first gene is the top row.

    Examples
    --------
    >>> spexlvm.pl.gene_attribution(adata, ["S100A8", "S100A9", "FCER1A"])
    >>> spexlvm.pl.gene_attribution(adata, factor="REACTOME_NEUTROPHIL_DEGRANULATION")
    """
    n_top = check_n_top(n_top)
    names = factor_names(adata, key)
    if (genes is None) == (factor is None):
        raise ValueError(
            "Give either genes= (gene names) or factor= (a gene-set factor whose genes to "
            "show), not both and not neither."
        )
    highlight = None
    if factor is not None:
        n_genes = check_n_top(n_genes)
        highlight = resolve_factor(adata, factor, key)
        mask, _ = get_annotation(adata, key)
        if highlight >= mask.shape[1]:
            raise ValueError(
                f"{names[highlight]!r} is an unannotated factor: it has no gene set. Pass "
                "genes= to see where given genes went."
            )
        members = np.asarray(adata.var_names, dtype=str)[np.asarray(mask[:, highlight], bool)]
        lead = attribution_table(adata, list(members), n_top=1, key=key)
        genes = lead.sort_values("r2", ascending=False, kind="stable")["gene"][:n_genes].tolist()
    table = attribution_table(adata, genes, n_top=n_top, key=key)
    shown = list(dict.fromkeys(table["gene"]))
    n = int(table["rank"].max())
    share = table["r2"].to_numpy().reshape(len(shown), n)
    fac = table["factor"].to_numpy().astype(str).reshape(len(shown), n)
    in_set = table["in_set"].to_numpy().astype(bool).reshape(len(shown), n)

    # colours by the factors' total share over the bars, the highlighted factor first
    total: dict[str, float] = {}
    for f, r in zip(fac.ravel(), share.ravel(), strict=True):
        total[f] = total.get(f, 0.0) + float(r)
    ranked = sorted(total, key=lambda f: -total[f])
    if highlight is not None and names[highlight] in ranked:
        ranked.remove(names[highlight])
        ranked.insert(0, names[highlight])
    palette = [c for c in OKABE_ITO if c != "#999999"]
    colour = {f: palette[i] for i, f in enumerate(ranked[: len(palette)])}
    n_other = len(ranked) - len(colour)

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(
            figsize=(7.5, max(2.4, 0.32 * len(shown) + 1.2)), layout="constrained"
        )
    y = np.arange(len(shown))[::-1]  # first gene on top
    left = np.zeros(len(shown))
    for rank in range(n):
        face = [colour.get(f, OTHER_COLOR) for f in fac[:, rank]]
        bars = ax.barh(
            y, share[:, rank], left=left, color=face, edgecolor=face, lw=0, height=0.7, zorder=2
        )
        for bar, member, f in zip(bars, in_set[:, rank], fac[:, rank], strict=True):
            if not member:
                bar.set_hatch("///")
                bar.set_edgecolor("white")
            if highlight is not None and f == names[highlight]:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.2)
        left += share[:, rank]
    ax.set_yticks(y, shown)
    ax.set_xlim(0, min(1.0, max(float(left.max()), 1e-3) * 1.05))
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel("share of the gene's variance (R²), leading factors stacked")
    ax.set_ylabel("gene")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    if highlight is not None:
        title = textwrap.fill(_short_name(names[highlight], max_len=None), width=48)
        ax.set_title(f"Genes of {title}: where their variance went", loc="left", fontsize="medium")

    handles = [
        Patch(
            facecolor=c,
            edgecolor="black" if highlight is not None and f == names[highlight] else c,
            label=_short_name(f),
        )
        for f, c in colour.items()
    ]
    if n_other:
        handles.append(Patch(color=OTHER_COLOR, label=f"{n_other} other factor(s)"))
    handles.append(
        Patch(facecolor="#777777", edgecolor="white", hatch="///", label="gene not in the set")
    )
    legend_outside(ax, handles, title="factor")
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_gene_attribution", close=created
    )
