"""Which factors explain a gene: the gene-centred view of the loadings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._docs import tool_docs
from .._utils import gene_positions
from ._calls import gene_r2, shared_passes
from ._utils import frame_to_uns, get_annotation, get_factor_names, get_loadings, store

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["gene_attribution"]


@tool_docs("gene_attribution")
@shared_passes()
def gene_attribution(
    adata: AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    n_top: int = 3,
    key: str = "spexlvm",
    key_added: str = "gene_attribution",
) -> pd.DataFrame:
    """The factors that explain most of each gene's variance, and whether it is in their sets.

    Gene sets overlap, so a marker gene can be annotated to many sets, and the fit gives
    its signal to one or a few of their factors (or to an unannotated one). When a factor
    named after a pathway does not mark the cells its genes mark, this says where its
    genes went (an example on scanpy's PBMCs: ``benchmarks/RESULTS.md``, "Where a
    pathway's marker genes went").

    The share of gene ``g``'s variance that factor ``k`` explains in these cells is
    ``r2_gk = w_gk^2 mean_n(z_nk^2) / var_g``: the loading (``varm[f"{key}_loadings"]``),
    the scores' mean square (``obsm[f"X_{key}"]``) and the gene's variance over the
    observed entries. It is the per-gene R² that :func:`spexlvm.tl.active_factors`
    counts in ``n_effect``. The factors are not orthogonal, so a gene's shares need not
    add up to its total R².

    Parameters
    ----------
    %(adata_fitted_data)s
    genes
        Gene names (``adata.var_names``), one name, or ``None`` for every gene.
    n_top
        Factors reported per gene, largest share first.
    %(key)s
    %(key_added)s

    Returns
    -------
    One row per gene and factor, the genes in the order given, then by decreasing share:
    ``gene``, ``rank`` (1 = largest share), ``factor``, ``r2`` (the share of the gene's
    variance), ``loading`` and ``in_set`` (whether the gene is annotated to the factor's
    gene set, the membership of :func:`spexlvm.pp.factor_membership`; ``False`` for
    unannotated factors). An h5ad-safe copy goes to ``adata.uns[key][key_added]``.
    """
    df = attribution_table(adata, genes, n_top=n_top, key=key)
    n = min(int(n_top), len(get_factor_names(adata, key)))
    stored = frame_to_uns(df, index=None)
    stored["n_top"] = n
    store(adata, key, key_added, stored)
    logger.info("Attributed %d gene(s) to their top %d factor(s).", len(df) // max(n, 1), n)
    return df


def attribution_table(
    adata: AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    n_top: int = 3,
    key: str = "spexlvm",
) -> pd.DataFrame:
    """:func:`gene_attribution`'s table, computed without storing it (for the plots)."""
    if int(n_top) < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}.")
    var_names = np.asarray(adata.var_names, dtype=str)
    rows = np.arange(len(var_names)) if genes is None else gene_positions(var_names, genes)
    w = get_loadings(adata, key)
    names = get_factor_names(adata, key)
    mask, _ = get_annotation(adata, key)
    share = gene_r2(adata, key)[rows]
    n = min(int(n_top), w.shape[1])
    order = np.argsort(-share, axis=1, kind="stable")[:, :n]
    member = np.zeros((len(rows), w.shape[1]), dtype=bool)
    member[:, : mask.shape[1]] = np.asarray(mask, dtype=bool)[rows]
    pick = np.take_along_axis
    df = pd.DataFrame(
        {
            "gene": np.repeat(var_names[rows], n),
            "rank": np.tile(np.arange(1, n + 1), len(rows)),
            "factor": names[order].ravel(),
            "r2": pick(share, order, axis=1).ravel(),
            "loading": pick(w[rows], order, axis=1).ravel().astype(np.float64),
            "in_set": pick(member, order, axis=1).ravel(),
        }
    )
    return df
