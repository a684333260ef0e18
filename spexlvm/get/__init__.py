"""Read a fit's results out of AnnData (like :mod:`scanpy.get`).

This module owns the results contract: it is the one code that writes the fit's keys
(:func:`spexlvm.tl.write_results` and :func:`spexlvm.tl.project` write through it) and
the one that reads them (:mod:`spexlvm.tl` and :mod:`spexlvm.pl` read through it). The
keys are listed by :func:`key_table`.

- :func:`factors`: the factor scores as an AnnData (cells x factors), for every scanpy
  function that takes genes: ``sc.pl.umap(spexlvm.get.factors(adata), color=name)``,
  ``sc.pl.dotplot``, ``sc.tl.rank_genes_groups``, ...
- :func:`loadings`: the loadings as a DataFrame (genes x factors).
- :func:`factors_to_obs`: chosen factors into ``adata.obs`` columns (cellxgene).
- :func:`auroc`, :func:`refine`, ...: the table each :mod:`spexlvm.tl` function stored.
"""

from __future__ import annotations

from ._accessors import factors, factors_to_obs, loadings
from ._keys import key_table, key_table_markdown
from ._names import factor_kinds
from ._results import factor_names, fit_mask, results
from ._tools import (
    active_factors,
    auroc,
    competing_sets,
    decoy_check,
    enrichment,
    gene_attribution,
    gene_set_test,
    history,
    impute,
    refine,
    stability,
    variance_explained,
)

__all__ = [
    "active_factors",
    "auroc",
    "competing_sets",
    "decoy_check",
    "enrichment",
    "factor_kinds",
    "factor_names",
    "factors",
    "factors_to_obs",
    "fit_mask",
    "gene_attribution",
    "gene_set_test",
    "history",
    "impute",
    "key_table",
    "key_table_markdown",
    "loadings",
    "refine",
    "results",
    "stability",
    "variance_explained",
]
