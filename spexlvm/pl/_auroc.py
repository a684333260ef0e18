"""Heatmap of one-vs-rest AUROCs of factor scores for groups of cells."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from .._docs import plot_docs
from ..get._results import stored as _stored
from ..tl._auroc import one_vs_rest_auroc
from ._utils import (
    check_n_top,
    factor_names,
    get_results,
    get_scores,
    group_colors,
    resolve_factors,
    unique_labels,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["auroc"]

#: Annotate the cells with their values up to this many cells.
_MAX_ANNOTATED = 400


@plot_docs("spexlvm_auroc")
def auroc(
    adata: AnnData,
    groupby: str,
    *,
    factors: Sequence[str | int] | str | int | None = None,
    n_top: int = 20,
    cluster: bool | None = None,
    annotate: bool | None = None,
    cmap: str = "RdBu_r",
    key: str = KEYS.UNS,
    result_key: str = "auroc",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Heatmap of how well each factor separates each group of cells from the rest.

    The AUROC of a factor for a group is the probability that a random cell of the group
    scores higher than a random other cell: 0.5 no separation, 1 (0) every cell of the
    group scores higher (lower). Values come from :func:`spexlvm.tl.auroc` when it has
    been run for the same ``groupby`` (``adata.uns[key][result_key]``) and cover the asked
    factors; otherwise they are computed by the same function (AUROC as scikit-learn) on
    ``adata.obsm[f"X_{key}"]``. A diverging colour map centred at 0.5 (blue below, red
    above) and, for small heatmaps, the values written in the cells. A strip above the
    columns shows the group colours (``adata.uns[f"{groupby}_colors"]`` when present).

    Parameters
    ----------
    %(adata_fit)s
    groupby
        Categorical column of ``adata.obs``; cells with a missing label are left out.
    factors
        Factors to show (full names, short names or indices), top to bottom; ``None``:
        the ``n_top`` factors with the largest R².
    n_top
        Number of factors shown when ``factors`` is ``None``.
    cluster
        Order rows (factors) and columns (groups) by hierarchical clustering of their
        AUROC profiles (average linkage, Euclidean, optimal leaf order), so that factors
        marking the same groups, and groups marked by the same factors, sit together;
        ``None``: cluster when ``factors`` is ``None`` (the top factors by R² have no
        order of their own), keep the given order otherwise.
    annotate
        Write the AUROCs into the cells; ``None``: when there are at most 400 cells.
    cmap
        Diverging colour map (``vmin=0``, ``vmax=1``, centre 0.5).
    %(key_fit)s
    result_key
        ``key_added`` given to :func:`spexlvm.tl.auroc` (``"auroc"`` by default).
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. ``ax.images[0].get_array()`` is the factors x
    groups AUROC matrix; rows are labelled with short factor names, columns with groups.

    Examples
    --------
    >>> spexlvm.pl.auroc(adata, "bulk_labels", n_top=15)
    """
    n_top = check_n_top(n_top)
    names = factor_names(adata, key)
    idx = resolve_factors(adata, factors, key, n_top=n_top)
    if groupby not in adata.obs.columns:
        raise KeyError(
            f"groupby={groupby!r} is not a column of adata.obs; columns: "
            f"{', '.join(map(repr, adata.obs.columns[:15]))}."
        )
    matrix, groups, source = _auroc_matrix(adata, groupby, idx, names, key, result_key)
    if cluster is None:
        cluster = factors is None
    if cluster:
        from ._correlation import profile_order

        rows, cols = profile_order(matrix - 0.5), profile_order((matrix - 0.5).T)
        matrix = matrix[np.ix_(rows, cols)]
        idx = [idx[i] for i in rows]
        groups = [groups[j] for j in cols]
    row_labels = unique_labels([_short_name(names[k]) for k in idx])

    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n_rows, n_cols = matrix.shape
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(
            figsize=heatmap_figsize(n_rows, n_cols, row_labels, groups), layout="constrained"
        )
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_yticks(np.arange(n_rows), row_labels)
    ax.set_xticks(np.arange(n_cols), groups, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlabel(groupby)
    ax.set_ylabel("factor")
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    if annotate is None:
        annotate = matrix.size <= _MAX_ANNOTATED
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if abs(value - 0.5) > 0.3 else "black",
                )

    # group colours as a strip above the columns (scanpy's colours when stored)
    strip = ax.inset_axes([0.0, 1.01, 1.0, min(0.4 / n_rows, 0.08)])
    colors = group_colors(adata, groupby, groups)
    strip.imshow(np.arange(n_cols)[None, :], cmap=ListedColormap(colors), aspect="auto")
    strip.set_axis_off()

    cbar = ax.figure.colorbar(
        image, ax=ax, shrink=max(0.45, min(1.0, 8.0 / max(n_rows, 1))), pad=0.02
    )
    cbar.set_label("AUROC (group vs rest)")
    cbar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    title = "tl.auroc" if source == "tl" else "one vs rest"
    title += ", clustered" if cluster else ""
    ax.set_title(f"Factor scores by {groupby} ({title})", loc="right", fontsize="medium", pad=14)
    return _save_or_show(ax, show=show, save=save, default_name="spexlvm_auroc", close=created)


def heatmap_figsize(
    n_rows: int, n_cols: int, row_labels: Sequence[str], col_labels: Sequence[str]
) -> tuple[float, float]:
    """Figure size that gives each cell about 0.32 x 0.45 inches after the labels.

    The room for the row labels and for the column labels (rotated by 45 degrees) is
    estimated from their lengths (about 0.085 inches per character at the default font
    size), so that long labels widen or heighten the figure instead of squeezing cells.
    """
    char = 0.085
    row_w = char * max((len(str(s)) for s in row_labels), default=4) + 0.5
    col_h = char * max((len(str(s)) for s in col_labels), default=4) * 0.72 + 0.6
    width = row_w + 0.45 * n_cols + 1.4  # + colour bar
    height = 0.32 * n_rows + col_h + 0.9  # + title and group strip
    return max(4.0, width), max(2.6, height)


def _groups(values: pd.Series) -> list[str]:
    """Groups with at least one cell, in category order (sorted otherwise)."""
    present = {str(v) for v in values.dropna()}
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(present)


def _auroc_matrix(
    adata: AnnData, groupby: str, idx: list[int], names: list[str], key: str, result_key: str
) -> tuple[np.ndarray, list[str], str]:
    """Factors x groups AUROCs: stored by :func:`spexlvm.tl.auroc` when usable, else computed."""
    values = adata.obs[groupby]
    groups = _groups(values)
    if len(groups) < 2:
        raise ValueError(f"obs[{groupby!r}] needs at least two groups with cells, got {groups}.")
    stored: Any = get_results(adata, key).get(result_key)
    if result_key != "auroc":  # asked for by name: it must be there, for this groupby
        stored = _stored(adata, result_key, key=key, tool="auroc")
        if str(stored.get("groupby", "")) != groupby:
            raise ValueError(
                f"adata.uns[{key!r}][{result_key!r}] holds the AUROCs by "
                f"{str(stored.get('groupby'))!r}, not by {groupby!r}: pass that groupby, or "
                f"run spexlvm.tl.auroc(adata, {groupby!r}, key_added={result_key!r})."
            )
    if isinstance(stored, dict) and str(stored.get("groupby", "")) == groupby:
        s_names = [str(n) for n in np.asarray(stored["factor_names"]).reshape(-1)]
        s_groups = [str(g) for g in np.asarray(stored["groups"]).reshape(-1)]
        wanted = [names[k] for k in idx]
        if set(wanted) <= set(s_names) and set(groups) <= set(s_groups):
            table = np.asarray(stored["auroc"], dtype=np.float64)
            rows = [s_names.index(n) for n in wanted]
            cols = [s_groups.index(g) for g in groups]
            return table[np.ix_(rows, cols)], groups, "tl"

    scores = get_scores(adata, key)[:, idx]
    known = values.notna().to_numpy()
    labels = values.astype(str).to_numpy()[known]
    scores = scores[known]
    matrix = np.full((len(idx), len(groups)), np.nan)
    for j, group in enumerate(groups):
        matrix[:, j] = one_vs_rest_auroc(scores, labels == group)[0]  # tl.auroc's numbers
    return matrix, groups, "computed"
