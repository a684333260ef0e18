"""Clustered heatmap of the correlations between factor scores."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from .._utils import column_correlation
from ._utils import (
    check_n_top,
    factor_names,
    resolve_factors,
    top_factors,
    unique_labels,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["factor_correlation"]

#: Write the correlations into the cells up to this many factors.
_MAX_ANNOTATED = 15


@plot_docs("spexlvm_factor_correlation")
def factor_correlation(
    adata: AnnData,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int | None = 30,
    method: Literal["pearson", "spearman"] = "pearson",
    cluster: bool = True,
    annotate: bool | None = None,
    cmap: str = "RdBu_r",
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Correlations between the factors' cell scores, clustered, as a heatmap.

    Two factors whose scores correlate strongly describe the same cells: typically
    overlapping gene sets competing for the same genes (see
    :func:`spexlvm.tl.competing_sets`), or one program split in two. The factors are
    ordered by average-linkage hierarchical clustering on ``1 - |r|`` (so that strongly
    anti-correlated factors sit together too), which puts such groups in blocks along
    the diagonal. Colours: diverging, -1 (blue) to 1 (red).

    Parameters
    ----------
    %(adata_fit)s
    factors
        Factors to show (full names, short names, merged-member names or indices);
        ``None``: the ``n_top`` factors with the largest R², or all when ``n_top`` is
        ``None``.
    n_top
        Number of factors (largest R²) when ``factors`` is ``None``; ``None``: all.
    method
        ``"pearson"`` or ``"spearman"`` (rank) correlation over cells.
    cluster
        Order the factors by hierarchical clustering (:mod:`scipy.cluster.hierarchy`);
        ``False``: in the order given (or by R²).
    annotate
        Write the correlations into the cells; ``None``: up to 15 factors.
    cmap
        Diverging colour map (``vmin=-1``, ``vmax=1``).
    %(key_fit)s
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. ``ax.images[0].get_array()`` is the
    correlation matrix in the order shown, rows and columns labelled with short factor
    names (``ax.get_yticklabels()``).

    Examples
    --------
    >>> spexlvm.pl.factor_correlation(adata, n_top=25)
    """
    names = factor_names(adata, key)
    if factors is None:
        idx = (
            list(range(len(names)))
            if n_top is None
            else top_factors(adata, check_n_top(n_top), key)
        )
    else:
        idx = resolve_factors(adata, factors, key)
    if len(idx) < 2:
        raise ValueError(f"factor_correlation needs at least two factors, got {len(idx)}.")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}.")
    obsm_key = f"X_{key}"
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm[{obsm_key!r}] not found: fit the model first with "
            f"spexlvm.tl.fit(adata, gene_sets, key_added={key!r})."
        )
    scores = np.asarray(adata.obsm[obsm_key], dtype=np.float64)[:, idx]
    corr = correlation_matrix(scores, method)
    order = cluster_order(corr) if cluster else np.arange(len(idx))
    corr = corr[np.ix_(order, order)]
    labels = unique_labels([_short_name(names[idx[i]]) for i in order])

    import matplotlib.pyplot as plt

    n = len(idx)
    created = ax is None
    if ax is None:
        longest = max(len(label) for label in labels)
        side = max(3.0, 0.3 * n)
        margin = 0.065 * longest + 0.6  # room for the labels, in inches
        _, ax = plt.subplots(figsize=(side + margin + 1.2, side + margin), layout="constrained")
    image = ax.imshow(corr, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="none")
    ax.set_xticks(np.arange(n), labels, rotation=90)
    ax.set_yticks(np.arange(n), labels)
    ax.tick_params(length=0, labelsize="small" if n <= 30 else "x-small")
    ax.spines[:].set_visible(False)
    if annotate is None:
        annotate = n <= _MAX_ANNOTATED
    if annotate:
        for (i, j), value in np.ndenumerate(corr):
            if i != j and np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}".replace("0.", ".", 1),
                    ha="center",
                    va="center",
                    fontsize="xx-small",
                    color="white" if abs(value) > 0.6 else "black",
                )
    cbar = ax.figure.colorbar(image, ax=ax, shrink=min(1.0, max(0.4, 6.0 / n)), pad=0.02)
    cbar.set_label(f"{method.capitalize()} correlation of cell scores")
    cbar.set_ticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    how = "clustered" if cluster else "unclustered"
    ax.set_title(f"{n} factors ({how})", loc="left", fontsize="medium")
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_factor_correlation", close=created
    )


def correlation_matrix(scores: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlations between the columns of ``scores`` (cells x factors).

    A constant column (a switched-off factor) has no correlation: NaN, with 1 on the
    diagonal.
    """
    x = np.asarray(scores, dtype=np.float64)
    if method == "spearman":
        from scipy.stats import rankdata

        x = rankdata(x, axis=0)
    corr = column_correlation(x)
    np.fill_diagonal(corr, 1.0)
    return corr


def cluster_order(corr: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering on the distance ``1 - |r|``."""
    n = corr.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    dist = 1.0 - np.abs(np.nan_to_num(corr, nan=0.0))
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(np.clip((dist + dist.T) / 2, 0.0, None), checks=False)
    tree = linkage(condensed, method="average")
    tree = optimal_leaf_ordering(tree, condensed)
    return np.asarray(leaves_list(tree), dtype=int)


def profile_order(matrix: np.ndarray) -> np.ndarray:
    """Leaf order of the rows of ``matrix`` by average-linkage Euclidean clustering."""
    n = matrix.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import pdist

    condensed = pdist(np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0))
    tree = linkage(condensed, method="average")
    tree = optimal_leaf_ordering(tree, condensed)
    return np.asarray(leaves_list(tree), dtype=int)
