"""Preprocessing: gene sets into ``adata.varm``."""

from __future__ import annotations

from ._gene_sets import add_gene_sets, gene_set_overlaps, get_mask, get_prior, read_gmt

__all__ = ["add_gene_sets", "gene_set_overlaps", "get_mask", "get_prior", "read_gmt"]
