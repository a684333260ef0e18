"""Preprocessing: gene sets into ``adata.varm``."""

from __future__ import annotations

from ._add import add_gene_sets
from ._decoys import DECOY_PREFIX, decoy_gene_sets, factor_membership, is_decoy
from ._io import read_gmt, write_gmt
from ._mask import get_mask, get_prior, get_signs
from ._nested import gene_set_overlaps

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
    "write_gmt",
]
