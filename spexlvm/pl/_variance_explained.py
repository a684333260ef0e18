"""Bar chart of the variance explained by the top factors."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import (
    KIND_COLORS,
    KIND_LABELS,
    factor_kinds,
    factor_names,
    get_results,
    group_colors,
    legend_outside,
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


@plot_docs("spexlvm_variance_explained")
def variance_explained(
    adata: AnnData,
    *,
    n_top: int = 20,
    groupby: str | None = None,
    style: Literal["heatmap", "dots"] = "heatmap",
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
    %(adata_fit)s
    n_top
        Number of factors to show.
    groupby
        Categorical column of ``adata.obs``: also show each factor's R² within each group
        of cells, the numbers of :func:`spexlvm.tl.variance_explained` (read from
        ``adata.uns[key]["variance_explained"]`` when it holds this ``groupby``, else
        computed with it without storing, so a stored result for another ``groupby``
        stays): ``R²_kg = 1 - SS_res / SS_tot`` over the
        group's observed entries, with each factor's rank-1 reconstruction ``x_k w_k^T``.
    style
        With ``groupby``: ``"heatmap"`` (factors x groups, the R² over all cells in a
        first column; a sequential map from 0, negative R², a factor that fits a group
        worse than its mean, in grey) or ``"dots"`` (coloured dots per group over grey
        bars of the R² over all cells; colours from ``adata.uns[f"{groupby}_colors"]``).
    %(key_fit)s
    %(ax)s
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow`` (and does not show
        when saving).
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. With ``groupby`` and ``style="heatmap"``,
    ``ax.images[0].get_array()`` is the factors x (all cells, groups) R² matrix.

    Examples
    --------
    >>> spexlvm.tl.fit(adata, spexlvm.datasets.gene_sets("hallmark"), n_dense=1)
    >>> spexlvm.pl.variance_explained(adata, n_top=15)
    >>> spexlvm.pl.variance_explained(adata, n_top=15, groupby="cell_type")
    """
    if style not in ("heatmap", "dots"):
        raise ValueError(f"style must be 'heatmap' or 'dots', got {style!r}.")
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

    if groupby is not None and style == "heatmap":
        per_group, groups = r2_by_group(adata, groupby, order, key)
        return _heatmap(
            adata,
            groupby,
            labels,
            values,
            per_group,
            groups,
            title_info=(len(order), names),
            total=results.get("r2_total"),
            ax=ax,
            show=show,
            save=save,
        )
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
    """R² of each factor within each group of cells (factors x groups) and the groups.

    The numbers of :func:`spexlvm.tl.variance_explained` (the one R² of the package):
    read from ``adata.uns[key]["variance_explained"]`` when it holds this ``groupby``,
    else computed as it computes them, without storing (the plot leaves the user's stored
    result alone). Groups without cells are left out.
    """
    if groupby not in adata.obs.columns:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    results = get_results(adata, key)
    names = factor_names(adata, key)
    stored = results.get("variance_explained")
    usable = (
        isinstance(stored, dict)
        and str(stored.get("groupby", "")) == groupby
        and "r2_by_group" in stored
        and [str(n) for n in np.asarray(stored["factor_names"]).reshape(-1)] == names
    )
    if not usable:  # computed with tl's numbers, not stored: the user's result stays
        from ..tl._variance import variance_table

        _, stored = variance_table(adata, groupby, key=key)
    groups_all = [str(g) for g in np.asarray(stored["groups"]).reshape(-1)]
    table = np.asarray(stored["r2_by_group"], dtype=np.float64)  # groups x factors
    values = adata.obs[groupby]
    present = {str(v) for v in values.dropna()}
    keep = [j for j, g in enumerate(groups_all) if g in present]
    out = table[np.ix_(keep, list(factors))].T
    return out, [groups_all[j] for j in keep]


def _draw_groups(adata, ax, groupby, y, overall, per_group, groups) -> None:
    """Grey bars (all cells) with one coloured dot per group on every factor's row."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colors = group_colors(adata, groupby, groups)
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
    legend_outside(ax, handles, title=groupby)


def _heatmap(
    adata: AnnData,
    groupby: str,
    labels: list[str],
    overall: np.ndarray,
    per_group: np.ndarray,
    groups: list[str],
    *,
    title_info: tuple[int, list[str]],
    total: float | None,
    ax: Axes | None,
    show: bool | None,
    save: bool | str | os.PathLike[str] | None,
) -> Axes | None:
    """Factors x (all cells, groups) heatmap of R², values written in small heatmaps."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import PercentFormatter

    matrix = np.column_stack([overall, per_group])
    columns = ["all cells", *groups]
    n_rows, n_cols = matrix.shape
    created = ax is None
    if ax is None:
        label_w = 0.075 * max((len(lab) for lab in labels), default=8) + 0.4
        col_h = 0.075 * max(len(c) for c in columns) + 0.4
        _, ax = plt.subplots(
            figsize=(label_w + 0.42 * n_cols + 1.6, max(2.8, 0.3 * n_rows + col_h + 0.9)),
            layout="constrained",
        )
    finite = matrix[np.isfinite(matrix)]
    vmax = max(float(finite.max()) if finite.size else 0.0, 1e-3)
    cmap = plt.get_cmap("Blues").with_extremes(under="#CCCCCC", bad="white")
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    ax.axvline(0.5, color="white", lw=3)  # the all-cells column apart from the groups
    ax.set_yticks(np.arange(n_rows), labels)
    ax.set_xticks(np.arange(n_cols), columns, rotation=45, ha="right", rotation_mode="anchor")
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_xlabel(groupby)
    ax.set_ylabel("factor")
    if matrix.size <= 400:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{100 * value:.1f}".replace("-0.0", "0.0"),
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if value > 0.6 * vmax else "black",
                )
    # group colours as a strip above the group columns (scanpy's colours when stored)
    strip = ax.inset_axes([1.0 / n_cols, 1.01, 1.0 - 1.0 / n_cols, min(0.4 / n_rows, 0.06)])
    strip.imshow(
        np.arange(len(groups))[None, :],
        cmap=ListedColormap(group_colors(adata, groupby, groups)),
        aspect="auto",
    )
    strip.set_axis_off()
    negative = bool((finite < 0).any())
    cbar = ax.figure.colorbar(
        image,
        ax=ax,
        shrink=max(0.45, min(1.0, 8.0 / max(n_rows, 1))),
        pad=0.02,
        extend="min" if negative else "neither",
    )
    cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    cbar.set_label("variance explained (R², %)" + ("; grey: < 0" if negative else ""))
    n_shown, names = title_info
    title = f"R² (%) of the top {n_shown} of {len(names)} factors by {groupby}"
    if total is not None:
        title += f"\nall factors together: R² {float(total):.2f} over all cells"
    ax.set_title(title, loc="right", fontsize="medium", pad=12)
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_variance_explained", close=created
    )
