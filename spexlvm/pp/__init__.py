"""Preprocessing: gene sets into ``adata.varm``."""

from __future__ import annotations

from ._decoys import DECOY_PREFIX, decoy_gene_sets, factor_membership, is_decoy
from ._gene_sets import add_gene_sets, gene_set_overlaps, get_mask, get_prior, get_signs, read_gmt

__all__ = [
    "DECOY_PREFIX",
    "add_gene_sets",
    "decoy_gene_sets",
    "factor_membership",
    "gene_set_overlaps",
    "get_mask",
    "get_prior",
    "get_signs",
    "is_decoy",
    "read_gmt",
]
