"""Significance of each annotated factor for its own gene set, against decoy gene sets."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control
from scipy.stats import t as student_t

from .._docs import tool_docs
from .._utils import user_stacklevel
from ._calls import decoy_pvalues, has_decoy_null, set_statistics, shared_passes
from ._pruning import active_factors
from ._utils import frame_to_uns, get_uns_entry, store

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["SIGNIFICANCE", "gene_set_test", "set_pvalues"]

#: BH-adjusted p-value below which a set counts as significant for its own genes.
SIGNIFICANCE = 0.05


def set_pvalues(adata: AnnData, key: str = "spexlvm"):
    """The p-values of :func:`gene_set_test` without storing them.

    Returns ``(stats, pval, pval_adj, null)``: the set statistics
    (:func:`~spexlvm.tl._calls.set_statistics`), the p-values (1 for a factor that is not
    active), their BH adjustment over the annotated factors and the null used
    (``"decoys"`` or ``"camera"``; the latter with a warning that it is not calibrated).
    """
    stats = set_statistics(adata, key)
    decoy = stats["decoy"].to_numpy()
    n = len(stats)
    if has_decoy_null(decoy):
        null = "decoys"
        scale = np.asarray(get_uns_entry(adata, "factor_scale", key), dtype=np.float64)
        pval = decoy_pvalues(stats, scale)
    else:
        null = "camera"
        n_total = int(adata.n_vars)
        pval = student_t.sf(stats["t"].to_numpy(), max(n_total - 2, 1))
        pval = np.where(stats["t"].to_numpy() == 0.0, 1.0, pval)
        if n:
            warnings.warn(
                "gene_set_test without decoy gene sets in the fit falls back to a "
                "correlation-adjusted test that is not calibrated against the gene-set prior "
                "(random sets can come out significant). Fit with decoys for calibrated "
                "p-values: spexlvm.tl.decoy_check(adata, gene_sets, ...).",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
    # no call on a factor the model switched off
    active = active_factors(adata, key=key)["active"].to_numpy()[:n]
    pval = np.where(active, pval, 1.0)
    pval_adj = false_discovery_control(pval, method="bh") if n else pval
    return stats, pval, pval_adj, null


@tool_docs("gene_set_test")
@shared_passes()
def gene_set_test(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    key_added: str = "gene_set_test",
    absolute: bool = True,
) -> pd.DataFrame:
    """Test whether each annotated factor is driven by its own gene set (competitive).

    The annotation-informed prior itself makes a factor's loadings larger on its own
    genes, so comparing in-set with out-of-set loadings (PCGSE) is circular: random gene
    sets come out significant. The null must have the same prior:

    * **With decoys in the fit** (at least 10, from :func:`spexlvm.pp.decoy_gene_sets`;
      :func:`spexlvm.tl.decoy_check` adds them): the statistic is ``log(r2_set)``, the
      share of the set's variance the factor explains, and the null the decoys of the
      same size fitted in the same model (:func:`~spexlvm.tl._calls.decoy_null_pvalues`;
      each decoy against the others), together with the factor scale (the smaller
      p-value, doubled). ``pval_adj`` is Benjamini-Hochberg over all
      annotated factors, decoys included, so the decoys' rate of ``pval_adj < 0.05`` is
      the test's false-positive rate on these data.
    * **Without decoys** (fallback): a correlation-adjusted competitive test (CAMERA,
      Wu & Smyth 2012; the adjustment MuVI's PCGSE test applies) of the standardised
      (absolute) loadings ``|w_gk| / sd_g`` on the set against the other genes, with the
      variance inflation factor ``1 + (n - 1) * rho`` of the set's mean inter-gene
      correlation, Student-t with ``n_genes_total - 2`` degrees of freedom. It is still
      circular (on synthetic data, random sets whose factor is not switched off get tiny
      p-values), so a warning says so.

    Either way, a factor that :func:`spexlvm.tl.active_factors` reports switched off gets
    ``pval = 1``: no call on it.

    Parameters
    ----------
    %(adata_fitted_data)s
    %(key)s
    %(key_added)s
    absolute
        Kept for compatibility: the statistics use absolute loadings (genes going down
        count as well as genes going up); ``False`` is no longer supported.

    Returns
    -------
    One row per annotated factor (index: factor name): ``n_genes`` (set size),
    ``decoy`` (bool), ``r2_set``, ``mean_in``, ``mean_out`` (mean standardised absolute
    loading on / off the set), ``t`` (the correlation-adjusted statistic), ``pval``,
    ``pval_adj`` and ``null`` (``"decoys"`` or ``"camera"``). An h5ad-safe copy goes to
    ``adata.uns[key][key_added]``.
    """
    if not absolute:
        raise ValueError(
            "absolute=False is no longer supported: the test compares absolute loadings "
            "(genes going down count as well as genes going up). Drop the argument."
        )
    stats, pval, pval_adj, null = set_pvalues(adata, key)
    decoy = stats["decoy"].to_numpy()
    n = len(stats)
    df = pd.DataFrame(
        {
            "n_genes": stats["n_genes"].to_numpy(),
            "decoy": decoy,
            "r2_set": stats["r2_set"].to_numpy(),
            "mean_in": stats["mean_in"].to_numpy(),
            "mean_out": stats["mean_out"].to_numpy(),
            "t": stats["t"].to_numpy(),
            "pval": pval,
            "pval_adj": pval_adj,
            "null": null,
        },
        index=stats.index,
    )
    stored = frame_to_uns(df, index="factor")
    stored["absolute"] = True
    store(adata, key, key_added, stored)
    logger.info(
        "%d of %d factors significant for their gene set (BH 0.05, null: %s).",
        int((pval_adj < SIGNIFICANCE).sum()),
        n,
        null,
    )
    return df
