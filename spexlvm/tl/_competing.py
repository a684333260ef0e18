"""Which gene sets competed for the same genes in a fit."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._docs import tool_docs
from .._utils import column_correlation, user_stacklevel
from ._calls import TOP_FRACTION, top_genes
from ._utils import (
    fit_mask_key,
    frame_to_uns,
    get_annotation,
    get_loadings,
    get_results,
    get_scores,
    store,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["competing_sets"]

#: Top-gene Jaccard index from which :func:`spexlvm.tl.fit` warns about a pair.
STRONG_JACCARD = 0.5
#: Up to this many pairs, their shared genes are compared as dense columns.
_CHUNK = 512


@tool_docs("competing_sets")
def competing_sets(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    key_added: str = "competing_sets",
    threshold: float = TOP_FRACTION,
    min_jaccard: float = 0.1,
    min_r2: float = 1e-3,
) -> pd.DataFrame:
    """Pairs of annotated factors whose gene sets overlap and whose top loadings overlap.

    Two factors compete when their gene sets share genes and both load on the same genes:
    the data's signal in those genes is split between them (or goes to either, depending
    on the seed), and each factor's score then describes only part of it. For every pair
    of active annotated factors (R² >= ``min_r2``) whose gene sets share a gene, the top
    genes of each factor are those with ``|loading| >= threshold`` times its largest
    absolute loading (the relevance rule of :func:`spexlvm.tl.refine`), and the pair is
    reported when the Jaccard index of the two top-gene lists is at least ``min_jaccard``.
    :func:`spexlvm.tl.fit` warns once after a fit when some pair shares at least half of
    its top genes (by default every gene set is its own factor, nested sets included).

    Parameters
    ----------
    %(adata_fitted)s
    %(key)s
    %(key_added)s
    threshold
        Top genes of a factor: ``|loading|`` at least this fraction of its largest.
    min_jaccard
        Smallest Jaccard index of the two top-gene lists of a reported pair.
    min_r2
        Factors explaining less of the variance are switched off and not compared.

    Returns
    -------
    One row per pair, sorted by decreasing ``jaccard_top``: ``factor_a``, ``factor_b``
    (``factor_a`` first in the fit's order), ``n_shared_genes`` (genes annotated to both
    sets), ``jaccard_sets`` (of the two annotations), ``contained`` (share of the smaller set's
    genes that the larger set holds: 1 when one set lies inside the other), ``nested``
    (whether :func:`spexlvm.pp.add_gene_sets` resolved the pair, i.e. left the shared
    genes to the smaller set; only with ``nested="resolve"``), ``n_top_a``, ``n_top_b``,
    ``n_shared_top`` (genes among the top genes of both), ``jaccard_top``, ``share_a``
    (fraction of the squared loadings on the shared annotated genes that ``factor_a``
    carries), ``r2_a``, ``r2_b`` and
    ``score_corr`` (correlation of the two factors' cell scores). An h5ad-safe copy goes
    to ``adata.uns[key][key_added]`` (with the settings).

    Examples
    --------
    >>> sets = spexlvm.datasets.gene_sets("reactome")
    >>> model = spexlvm.tl.fit(adata, sets, min_genes=10)  # doctest: +SKIP
    >>> spexlvm.tl.competing_sets(adata).head()  # doctest: +SKIP
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}.")
    if not 0.0 <= min_jaccard <= 1.0:
        raise ValueError(f"min_jaccard must lie in [0, 1], got {min_jaccard}.")
    df = _competing_pairs(
        adata, key=key, threshold=threshold, min_jaccard=min_jaccard, min_r2=min_r2
    )
    stored = frame_to_uns(df, index=None)
    stored.update(threshold=float(threshold), min_jaccard=float(min_jaccard), min_r2=float(min_r2))
    store(adata, key, key_added, stored)
    if len(df):
        logger.info(
            "%d pair(s) of gene-set factors competed for the same genes (top-gene Jaccard "
            ">= %g), e.g. %s.",
            len(df),
            min_jaccard,
            ", ".join(f"{x!r} / {y!r}" for x, y in df[["factor_a", "factor_b"]].head(3).values),
        )
    return df


def warn_competing(
    adata: AnnData, *, key: str = "spexlvm", min_jaccard: float = STRONG_JACCARD
) -> int:
    """After a fit: one :class:`UserWarning` when gene-set factors compete strongly.

    Strongly: both factors active and at least ``min_jaccard`` of their top genes shared
    (:func:`competing_sets`'s ``jaccard_top``). Stores nothing. Returns the number of such
    pairs.
    """
    uns = get_results(adata, key)
    if int(uns.get("n_annotated", 0)) < 2:
        return 0
    df = _competing_pairs(adata, key=key, threshold=0.1, min_jaccard=min_jaccard, min_r2=1e-3)
    if len(df):
        shown = ", ".join(f"{x!r} / {y!r}" for x, y in df[["factor_a", "factor_b"]].head(3).values)
        warnings.warn(
            f"{len(df)} pair(s) of gene-set factors share most of their top genes (Jaccard "
            f">= {min_jaccard:g}): their gene sets overlap, and the signal of the shared genes "
            f"is split between them or goes to either, e.g. {shown}. See "
            f"spexlvm.tl.competing_sets(adata, key={key!r}) for every pair and which factor "
            "carries the shared genes; to give nested sets one factor, refit with "
            "nested='merge' (or 'resolve').",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return len(df)


def _competing_pairs(
    adata: AnnData, *, key: str, threshold: float, min_jaccard: float, min_r2: float
) -> pd.DataFrame:
    """The table of :func:`competing_sets`, stored nowhere."""
    uns = get_results(adata, key)
    mask, names = get_annotation(adata, key)
    n_annotated = mask.shape[1]
    w = get_loadings(adata, key)[:, :n_annotated]
    r2 = np.asarray(uns.get("r2", np.ones(n_annotated)), dtype=np.float64)[:n_annotated]
    scores = get_scores(adata, key)[:, :n_annotated]

    top = top_genes(w, threshold)
    n_set = mask.sum(0)
    n_top = top.sum(0)
    active = np.flatnonzero(r2 >= min_r2)
    # sparse products over the active factors (collections can be large): genes shared by
    # the sets, top genes shared, and the squared loadings of each set on its genes
    m = sparse.csc_matrix(mask[:, active], dtype=np.float64)
    overlap = sparse.triu(m.T @ m, k=1).tocsr()  # pairs whose sets share a gene
    t = sparse.csc_matrix(top[:, active], dtype=np.float64)
    shared_tops = (t.T @ t).tocsr()
    if min_jaccard > 0:  # only pairs sharing a top gene can reach min_jaccard
        overlap = overlap.multiply(shared_tops > 0).tocsr()
    coo = overlap.tocoo()
    order = np.lexsort((coo.col, coo.row))
    i, j = coo.row[order], coo.col[order]  # positions among the active factors
    a, b = active[i], active[j]
    shared_top = _lookup(shared_tops, i, j).astype(np.int64)
    union_top = n_top[a] + n_top[b] - shared_top
    jaccard_top = np.divide(shared_top, union_top, out=np.zeros(a.size), where=union_top > 0)
    sel = jaccard_top >= min_jaccard
    i, j, a, b = i[sel], j[sel], a[sel], b[sel]
    jaccard_top, shared_top = jaccard_top[sel], shared_top[sel]

    # squared loadings of each factor on the genes both sets hold
    if a.size <= _CHUNK:  # a few pairs (tl.fit's check): dense columns
        both = mask[:, a] & mask[:, b]  # genes x pairs
        energy_a = ((w[:, a] ** 2) * both).sum(0)
        energy_b = ((w[:, b] ** 2) * both).sum(0)
    else:  # many: (w² * mask)^T mask over the factors in some pair, sparse
        used = np.unique(np.r_[i, j])
        pos = np.searchsorted(used, np.r_[i, j])
        mu = m[:, used]
        energy = (mu.multiply(w[:, active[used]] ** 2).tocsc().T @ mu).tocsr()
        energy_a = _lookup(energy, pos[: i.size], pos[i.size :])
        energy_b = _lookup(energy, pos[i.size :], pos[: i.size])
    n_shared = _lookup(overlap, i, j)  # the filter above kept the counts
    total = energy_a + energy_b
    share_a = np.divide(energy_a, total, out=np.full(a.size, np.nan), where=total > 0)
    corr = column_correlation(scores[:, a], scores[:, b], paired=True)
    nested = _nested_pairs(adata, uns, names)
    n_shared = np.rint(n_shared).astype(np.int64)
    df = pd.DataFrame(
        {
            "factor_a": names[a].astype(object),
            "factor_b": names[b].astype(object),
            "n_shared_genes": n_shared,
            "jaccard_sets": n_shared / (n_set[a] + n_set[b] - n_shared),
            "contained": n_shared / np.maximum(np.minimum(n_set[a], n_set[b]), 1),
            "nested": np.array(
                [
                    (x, y) in nested or (y, x) in nested
                    for x, y in zip(names[a], names[b], strict=True)
                ],
                dtype=bool,
            ),
            "n_top_a": n_top[a].astype(np.int64),
            "n_top_b": n_top[b].astype(np.int64),
            "n_shared_top": shared_top,
            "jaccard_top": jaccard_top,
            "share_a": share_a,
            "r2_a": r2[a],
            "r2_b": r2[b],
            "score_corr": corr,
        }
    )
    df = df.sort_values(["jaccard_top", "n_shared_top"], ascending=False, kind="stable")
    return df.reset_index(drop=True)


def _lookup(matrix: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Entries ``matrix[rows[k], cols[k]]`` of a sparse matrix (0 where not stored)."""
    if rows.size == 0:
        return np.zeros(0)
    return np.asarray(matrix[rows, cols], dtype=np.float64).ravel()


def _nested_pairs(adata: AnnData, uns: dict, names: np.ndarray) -> set[tuple[str, str]]:
    """(subset, superset) name pairs resolved by pp.add_gene_sets, if it recorded them."""
    info = adata.uns.get(fit_mask_key(uns), {})
    nested = info.get("nested", {}) if isinstance(info, dict) else {}
    if not isinstance(nested, dict) or "subset" not in nested:
        return set()
    return {
        (str(s), str(t))
        for s, t in zip(np.asarray(nested["subset"]), np.asarray(nested["superset"]), strict=True)
    }
