"""Preprocessing: gene sets into ``adata.varm``."""
