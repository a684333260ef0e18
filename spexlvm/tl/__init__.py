"""Tools: fit the model, write its results into AnnData and analyse them."""

from __future__ import annotations

from ._attribution import gene_attribution
from ._auroc import auroc
from ._competing import competing_sets
from ._decoy_check import decoy_check
from ._enrichment import enrichment
from ._fit import fit, write_results
from ._impute import impute
from ._names import factor_name
from ._project import project
from ._pruning import active_factors
from ._refine import kept_share, refine, refined_gene_sets, write_gmt
from ._significance import gene_set_test
from ._stability import stability
from ._variance import variance_explained

__all__ = [
    "active_factors",
    "auroc",
    "competing_sets",
    "decoy_check",
    "enrichment",
    "factor_name",
    "fit",
    "gene_attribution",
    "gene_set_test",
    "impute",
    "kept_share",
    "project",
    "refine",
    "refined_gene_sets",
    "stability",
    "variance_explained",
    "write_gmt",
    "write_results",
]
