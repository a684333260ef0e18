"""How well each factor separates groups of cells: AUROC with a rank test."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, mannwhitneyu

from .._docs import tool_docs
from ..get._names import resolve_factor
from ._utils import get_factor_names, get_scores, group_labels, store

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["auroc", "one_vs_rest_auroc"]


def _select_factors(adata: AnnData, factors: Sequence[str | int] | None, key: str) -> np.ndarray:
    """Indices of the requested factors (names, short or member names, or positions)."""
    if factors is None:
        return np.arange(len(get_factor_names(adata, key)))
    if isinstance(factors, str | int | np.integer):
        factors = [factors]
    return np.asarray([resolve_factor(adata, f, key) for f in factors], dtype=np.int64)


def one_vs_rest_auroc(scores: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of each column of ``scores`` for the cells ``inside`` vs the rest, and its p-value.

    The one AUROC of the package (:func:`auroc`, the fallback of :func:`spexlvm.pl.auroc`,
    the command line's demo): ``U / (n_in n_out)`` with ``U`` the Mann-Whitney statistic of
    the cells inside (ties count one half, as :func:`sklearn.metrics.roc_auc_score`), and
    the two-sided Mann-Whitney p-value (normal approximation with tie correction; 1 where
    undefined).

    Parameters
    ----------
    scores
        Cells x factors (or one column: cells).
    inside
        Boolean, one per cell: the group.

    Returns
    -------
    AUROC and p-value per factor (scalars for a 1-d ``scores``); NaN AUROC when the group
    or the rest has no cell.
    """
    scores = np.asarray(scores, dtype=np.float64)
    inside = np.asarray(inside, dtype=bool)
    x, y = scores[inside], scores[~inside]
    if x.shape[0] == 0 or y.shape[0] == 0:
        nan = np.full(scores.shape[1:], np.nan)
        return nan, np.ones(scores.shape[1:])
    res = mannwhitneyu(x, y, alternative="two-sided", axis=0, method="asymptotic")
    auc = np.asarray(res.statistic, dtype=np.float64) / (x.shape[0] * y.shape[0])
    return auc, np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64), nan=1.0)


@tool_docs("auroc")
def auroc(
    adata: AnnData,
    groupby: str,
    *,
    key: str = "spexlvm",
    key_added: str = "auroc",
    factors: Sequence[str | int] | None = None,
) -> pd.DataFrame:
    """AUROC of each factor's scores for each group of cells (one group vs the rest).

    The AUROC is the probability that a random cell of the group scores higher than a
    random cell outside it (ties count one half): ``U / (n_in n_out)`` with ``U`` the
    Mann-Whitney statistic. 0.5 means no separation, 1 (0) that the group scores higher
    (lower) than every other cell. Each AUROC comes with a two-sided Mann-Whitney U test
    (:func:`scipy.stats.mannwhitneyu`, normal approximation with tie correction) and
    Benjamini-Hochberg adjusted p-values over all factor x group tests
    (:func:`scipy.stats.false_discovery_control`).

    Parameters
    ----------
    %(adata_fitted)s
    groupby
        ``obs`` column with the groups (cells with a missing label are left out).
    %(key)s
    %(key_added)s
    factors
        Factors to test: full names, short names, names of gene sets merged into a factor
        (see :func:`spexlvm.tl.factor_name`) or positions; defaults to all.

    Returns
    -------
    A tidy long DataFrame, one row per factor and group: ``factor``, ``group``,
    ``auroc``, ``pval``, ``pval_adj``. An h5ad-safe wide copy goes to
    ``adata.uns[key][key_added]``: ``groupby``, ``factor_names``, ``groups`` and the
    factors x groups arrays ``auroc``, ``pval``, ``pval_adj``.
    """
    names = get_factor_names(adata, key)
    idx = _select_factors(adata, factors, key)
    scores = get_scores(adata, key)[:, idx]
    labels, groups = group_labels(adata, groupby)
    known = labels.notna().to_numpy()
    values = labels.astype(str).to_numpy()
    groups = [g for g in groups if np.any(known & (values == g))]
    if len(groups) < 2:
        raise ValueError(f"obs[{groupby!r}] needs at least two groups with cells, got {groups}.")
    scores, values = scores[known], values[known]

    n_factors = len(idx)
    auc = np.zeros((n_factors, len(groups)))
    pval = np.ones((n_factors, len(groups)))
    for j, g in enumerate(groups):
        auc[:, j], pval[:, j] = one_vs_rest_auroc(scores, values == g)
    pval_adj = false_discovery_control(pval.ravel(), method="bh").reshape(pval.shape)

    fnames = names[idx]
    df = pd.DataFrame(
        {
            "factor": np.repeat(fnames, len(groups)),
            "group": np.tile(np.asarray(groups, dtype=str), n_factors),
            "auroc": auc.ravel(),
            "pval": pval.ravel(),
            "pval_adj": pval_adj.ravel(),
        }
    )
    store(
        adata,
        key,
        key_added,
        {
            "groupby": str(groupby),
            "factor_names": np.asarray(fnames, dtype=str),
            "groups": np.asarray(groups, dtype=str),
            "auroc": auc,
            "pval": pval,
            "pval_adj": pval_adj,
        },
    )
    logger.info("AUROC of %d factors for %d groups of %r.", n_factors, len(groups), groupby)
    return df
