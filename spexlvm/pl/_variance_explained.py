"""Bar chart of the variance explained by the top factors."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import KEYS
from ..tl._utils import dense_chunks
from ._utils import (
    KIND_COLORS,
    KIND_LABELS,
    category_colors,
    factor_kinds,
    factor_names,
    get_loadings,
    get_results,
    get_scores,
    unique_labels,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["variance_explained"]


def _figsize(n_bars: int, legend: bool = False) -> tuple[float, float]:
    """Figure size that gives every bar label (and a legend on the right) room."""
    return 6.4 + 3.2 * legend, max(2.5, 0.28 * n_bars + 1.2)


def variance_explained(
    adata: AnnData,
    *,
    n_top: int = 20,
    groupby: str | None = None,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Horizontal bar chart of the factors that explain the most variance.

    Bars show ``adata.uns[key]["r2"]`` (written by :func:`spexlvm.tl.fit`), largest on
    top. Annotated factors (named after their gene sets) and unannotated sparse and
    dense factors get different colours (Okabe-Ito, colour-blind safe). Gene-set names
    are shortened with :func:`spexlvm.pl.short_name`. Known covariates fitted as fixed
    effects (``setup_anndata(batch_key=...)``, ...) get a bar each, ``uns[key]
    ["r2_covariates"]``, next to the factors (not with ``groupby``).

    Parameters
    ----------
    adata
        AnnData with the results of :func:`spexlvm.tl.fit`.
    n_top
        Number of factors to show.
    groupby
        Categorical column of ``adata.obs``: also show each factor's R² within each group
        of cells (coloured dots over light grey bars of the R² over all cells; colours from
        ``adata.uns[f"{groupby}_colors"]`` when present). Computed from the expression
        the model was fitted on (``X`` or the fitted layer), centred by
        ``adata.uns[key]["gene_mean"]``, and each factor's rank-1 reconstruction
        ``x_k w_k^T``: ``R²_kg = 1 - SS_res / SS_tot`` over the group's observed entries.
    key
        ``key_added`` given to :func:`spexlvm.tl.fit`.
    ax
        Axes to draw into; a new figure when ``None``.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow`` (and does not show
        when saving).
    save
        ``True`` saves to ``scanpy.settings.figdir`` as
        ``spexlvm_variance_explained.png``; a path saves there.

    Returns
    -------
    The Axes, unless the figure was shown.

    Examples
    --------
    >>> spexlvm.tl.fit(adata, spexlvm.datasets.gene_sets("hallmark"), n_dense=1)
    >>> spexlvm.pl.variance_explained(adata, n_top=15)
    """
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top!r}.")
    results = get_results(adata, key)
    names = factor_names(adata, key)
    kinds = factor_kinds(adata, key)
    r2 = np.asarray(results["r2"], dtype=np.float64).reshape(-1)
    if r2.size != len(names):
        raise ValueError(
            f"adata.uns[{key!r}] has {r2.size} R² values for {len(names)} factor names."
        )
    order = np.argsort(-np.nan_to_num(r2, nan=-np.inf), kind="stable")[: int(n_top)]
    labels = unique_labels([_short_name(names[i]) for i in order])
    values = r2[order]
    bar_kinds = [kinds[i] for i in order]
    covariates = results.get("r2_covariates") or {}
    if groupby is None and covariates:
        labels = [*labels, *(f"{k} (covariate)" for k in covariates)]
        values = np.concatenate([values, np.asarray(list(covariates.values()), dtype=float)])
        bar_kinds = [*bar_kinds, *(["covariate"] * len(covariates))]
        resort = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
        labels = [labels[i] for i in resort]
        values = values[resort]
        bar_kinds = [bar_kinds[i] for i in resort]

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(
            figsize=_figsize(len(values), groupby is not None), layout="constrained"
        )

    y = np.arange(len(values))[::-1]  # largest on top
    if groupby is not None:
        per_group, groups = r2_by_group(adata, groupby, order, key)
        _draw_groups(adata, ax, groupby, y, values, per_group, groups)
        labels_kinds = None
    else:
        ax.barh(y, values, color=[KIND_COLORS[k] for k in bar_kinds], height=0.75, zorder=2)
        labels_kinds = bar_kinds
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(values) - 0.4)
    if groupby is None:
        ax.set_xlim(0, max(float(np.nanmax(values)) * 1.1, 1e-3) if values.size else 1.0)
    ax.set_xlabel("variance explained (R²)")
    ax.set_ylabel("factor")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    total = results.get("r2_total")
    title = f"Top {len(order)} of {len(names)} factors"
    if total is not None:
        title += f"; all together R² {float(total):.2f}"
    # right-aligned: long factor labels make the axes narrow, the title may extend left
    ax.set_title(title, loc="right")
    if labels_kinds is not None:
        present = [k for k in KIND_LABELS if k in labels_kinds]
        handles = [Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in present]
        ax.legend(handles=handles, loc="lower right", frameon=False)
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_variance_explained", close=created
    )


def r2_by_group(
    adata: AnnData, groupby: str, factors: Sequence[int], key: str = KEYS.UNS
) -> tuple[np.ndarray, list[str]]:
    """R² of each factor within each group of cells (factors x groups) and the groups."""
    if groupby not in adata.obs.columns:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    results = get_results(adata, key)
    if "gene_mean" not in results:
        raise KeyError(f"adata.uns[{key!r}] has no gene_mean; rerun spexlvm.tl.fit.")
    layer = str((results.get("params") or {}).get("layer") or "") or None
    data = adata.layers[layer] if layer is not None else adata.X
    mean = np.asarray(results["gene_mean"], dtype=np.float64).reshape(1, -1)
    scores = get_scores(adata, key)[:, list(factors)]
    w = get_loadings(adata, key)[:, list(factors)]
    values = adata.obs[groupby]
    present = {str(v) for v in values.dropna()}
    if isinstance(values.dtype, pd.CategoricalDtype):
        groups = [str(c) for c in values.cat.categories if str(c) in present]
    else:
        groups = sorted(present)
    labels = values.astype(str).to_numpy()
    known = values.notna().to_numpy()
    codes = np.full(labels.shape[0], -1)
    for j, group in enumerate(groups):
        codes[known & (labels == group)] = j
    n_groups = len(groups)
    ss_tot = np.zeros(n_groups)
    cross = np.zeros((n_groups, *w.shape))
    sq = np.zeros((n_groups, *w.shape))
    # one pass over consecutive chunks of cells (streamed from disk for backed data)
    for sl, chunk in dense_chunks(data, 4096):
        y = chunk - mean
        observed = np.isfinite(y)
        y = np.where(observed, y, 0.0)
        c = codes[sl]
        for j in np.unique(c[c >= 0]):
            rows = c == j
            s = scores[sl][rows]
            ss_tot[j] += float((y[rows] * y[rows]).sum())
            cross[j] += y[rows].T @ s
            sq[j] += observed[rows].T.astype(np.float64) @ (s * s)
    out = np.full((len(factors), n_groups), np.nan)
    for j in range(n_groups):
        if ss_tot[j] > 0:
            explained = 2.0 * (w * cross[j]).sum(0) - (w * w * sq[j]).sum(0)
            out[:, j] = explained / ss_tot[j]
    return out, groups


def _draw_groups(adata, ax, groupby, y, overall, per_group, groups) -> None:
    """Grey bars (all cells) with one coloured dot per group on every factor's row."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colors = category_colors(adata, groupby, groups)
    ax.barh(y, overall, color="#DDDDDD", height=0.75, zorder=2)
    for j, color in enumerate(colors):
        ax.scatter(
            per_group[:, j],
            y,
            s=28,
            color=color,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
    lo = min(0.0, float(np.nanmin(per_group)) if per_group.size else 0.0)
    hi = max(float(np.nanmax(per_group)) if per_group.size else 0.0, float(np.nanmax(overall)))
    pad = 0.05 * max(hi - lo, 1e-3)
    ax.set_xlim(lo - (pad if lo < 0 else 0.0), hi + pad)
    if lo < 0:
        ax.axvline(0, color="#333333", lw=0.8, zorder=2)
    handles = [Patch(color="#DDDDDD", label="all cells")] + [
        Line2D([], [], marker="o", ls="", color=c, markersize=6, label=g)
        for g, c in zip(groups, colors, strict=True)
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize="small",
        title=groupby,
        title_fontsize="small",
        alignment="left",
    )
