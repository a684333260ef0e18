"""Bar chart of a factor's gene-set enrichment (:func:`spexlvm.tl.enrichment`)."""

from __future__ import annotations

import logging
import os
import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ..get import enrichment as get_enrichment
from ._utils import check_n_top, factor_names, legend_outside, resolve_factor
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["enrichment"]

#: Colours (Okabe-Ito): significant up / down, not significant, and the factor's own set.
_COLORS = {"up": "#D55E00", "down": "#0072B2", "ns": "#BBBBBB"}
_OWN_EDGE = "#000000"


def _stars(fdr: float) -> str:
    return "***" if fdr < 0.001 else "**" if fdr < 0.01 else "*" if fdr < 0.05 else ""


@plot_docs("spexlvm_enrichment")
def enrichment(
    adata: AnnData,
    factor: str | int,
    *,
    n_top: int = 15,
    fdr: float = 0.05,
    key: str = KEYS.UNS,
    enrichment_key: str = "enrichment",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """NES of the gene sets most enriched in a factor's loadings, with FDR marks.

    Plots what :func:`spexlvm.tl.enrichment` stored for the factor: horizontal bars of the
    normalised enrichment score (NES) of the ``n_top`` most significant sets (the order of
    the table: by FDR, then p-value, then ``|NES|``; most significant on top). Bars with
    FDR < ``fdr`` are coloured (vermillion NES > 0, blue NES < 0; ranked by ``|loading|``,
    the default of :func:`spexlvm.tl.enrichment`, NES < 0 only means fewer large loadings
    than chance), the others grey; stars
    give the FDR (``*`` < 0.05, ``**`` < 0.01, ``***`` < 0.001) and the factor's own gene
    set has a black outline.

    Parameters
    ----------
    adata
        AnnData with the results of :func:`spexlvm.tl.fit` and :func:`spexlvm.tl.enrichment`
        for ``factor``.
    factor
        The factor: full name, short name (:func:`spexlvm.pl.short_name`) or index.
    n_top
        Number of gene sets to show.
    fdr
        Sets with an FDR q-value below this are coloured.
    %(key_fit)s
    enrichment_key
        ``key_added`` given to :func:`spexlvm.tl.enrichment`.
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. The bars are ``ax.patches`` (top set first in
    drawing order), their y tick labels the (shortened) set names.

    Raises
    ------
    KeyError
        If :func:`spexlvm.tl.enrichment` has not been run for the factor.

    Examples
    --------
    >>> sets = spexlvm.datasets.gene_sets("hallmark")  # doctest: +SKIP
    >>> spexlvm.tl.enrichment(adata, "sparse_1", sets)  # doctest: +SKIP
    >>> spexlvm.pl.enrichment(adata, "sparse_1", n_top=10)  # doctest: +SKIP
    """
    n_top = check_n_top(n_top)
    if not 0.0 < float(fdr) <= 1.0:
        raise ValueError(f"fdr must lie in (0, 1], got {fdr!r}.")
    k = resolve_factor(adata, factor, key)
    name = factor_names(adata, key)[k]
    table = get_enrichment(adata, k, key=key, result_key=enrichment_key).head(n_top)
    stored = adata.uns[key][enrichment_key]
    params = next(
        (
            v.get("params", {})
            for v in stored.values()
            if v.get("params", {}).get("factor") == name
        ),
        {},
    )

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    created = ax is None
    n = len(table)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, max(2.4, 0.3 * n + 1.4)), layout="constrained")
    nes = table["nes"].to_numpy(dtype=np.float64)
    q = table["fdr"].to_numpy(dtype=np.float64)
    significant = q < fdr
    colors = [
        (_COLORS["up"] if v > 0 else _COLORS["down"]) if s else _COLORS["ns"]
        for v, s in zip(nes, significant, strict=True)
    ]
    own = table["own"].to_numpy(dtype=bool)
    y = np.arange(n)[::-1]
    bars = ax.barh(y, np.nan_to_num(nes), color=colors, height=0.7, zorder=2)
    for bar, is_own in zip(bars, own, strict=True):
        if is_own:
            bar.set_edgecolor(_OWN_EDGE)
            bar.set_linewidth(1.6)
    lim = max(float(np.nanmax(np.abs(nes))) if n else 1.0, 1e-12) * 1.25
    for yi, v, qi in zip(y, nes, q, strict=True):
        mark = _stars(qi)
        if mark and np.isfinite(v):
            ax.text(
                v + (0.02 * lim if v >= 0 else -0.02 * lim),
                yi,
                mark,
                va="center_baseline",
                ha="left" if v >= 0 else "right",
                fontsize="small",
            )
    ax.axvline(0, color="#333333", lw=0.8, zorder=2)
    ax.set_yticks(y, [_short_name(str(t)) for t in table["term"]])
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(-lim if (nes < 0).any() else -0.02 * lim, lim if (nes > 0).any() else 0.02 * lim)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ranking = "|loading|" if params.get("absolute", True) else "signed loading"
    ax.set_xlabel(f"NES (genes ranked by {ranking})")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    title = textwrap.fill(_short_name(name, max_len=None), width=46)
    ax.set_title(f"{title}\ngene-set enrichment (GSEA prerank)", loc="left", fontsize="medium")
    absolute = bool(params.get("absolute", True))
    up = "large |loadings|" if absolute else "genes up with the score"
    down = "fewer large |loadings|" if absolute else "genes down with the score"
    present = [
        (bool((significant & (nes > 0)).any()), _COLORS["up"], f"NES > 0 ({up})"),
        (bool((significant & (nes < 0)).any()), _COLORS["down"], f"NES < 0 ({down})"),
        (bool((~significant).any()), _COLORS["ns"], "not significant"),
    ]
    handles = [Patch(color=color, label=label) for shown, color, label in present if shown]
    if own.any():
        handles.append(Patch(facecolor="white", edgecolor=_OWN_EDGE, label="the factor's set"))
    legend_outside(
        ax, handles, title=f"coloured: FDR < {fdr:g}\n* FDR < 0.05, ** < 0.01, *** < 0.001"
    )
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_enrichment", close=created
    )
