"""Gene sets into ``adata.varm``: the names of the gene-set modules, in one place.

The code lives in private modules of :mod:`spexlvm.pp`: ``_io`` (GMT files, mappings and
long tables in; GMT files out), ``_match`` (identifiers, case, coverage hints),
``_nested`` (nested and near-duplicate sets), ``_mask`` (reading the annotation back)
and ``_add`` (:func:`add_gene_sets`). This module re-exports their names for code that
imports them from here.
"""

from __future__ import annotations

from ._add import (
    REASON_KEPT,
    REASON_MERGED,
    REASON_TOO_FEW,
    REASON_TOO_LARGE,
    REASON_TOO_SMALL,
    _signed_mask,
    add_gene_sets,
)
from ._common import _ENSEMBL_RE, _N_EXAMPLES, GeneSets, _preview, _unique
from ._io import (
    _LONG_COLUMNS,
    _as_gene_set_dict,
    _as_unsigned_dict,
    _clean_genes,
    _from_long_frame,
    _from_mapping,
    _read_gene_sets,
    _set_name,
    read_gmt,
    write_gmt,
)
from ._mask import PRIOR_SUFFIX, SIGNS_SUFFIX, get_mask, get_prior, get_signs
from ._match import (
    CASE_AUTO_MIN_EXTRA,
    CASE_AUTO_RATIO,
    _choose_case_sensitivity,
    _full_identifiers,
    _index,
    _match,
    _matching_summary,
    _no_overlap_error,
    _var_identifiers,
    _warn_lost,
)
from ._nested import (
    _NESTED_MODES,
    MERGE_FRACTION,
    MERGED_SEP,
    NESTED,
    NESTED_CONTAINMENT,
    _check_fraction,
    _nested_pairs,
    _resolve_nested,
    _shared_genes,
    _warn_merged,
    gene_set_overlaps,
)

__all__ = [
    "CASE_AUTO_MIN_EXTRA",
    "CASE_AUTO_RATIO",
    "MERGED_SEP",
    "MERGE_FRACTION",
    "NESTED",
    "NESTED_CONTAINMENT",
    "PRIOR_SUFFIX",
    "REASON_KEPT",
    "REASON_MERGED",
    "REASON_TOO_FEW",
    "REASON_TOO_LARGE",
    "REASON_TOO_SMALL",
    "SIGNS_SUFFIX",
    "_ENSEMBL_RE",
    "_LONG_COLUMNS",
    "_NESTED_MODES",
    "_N_EXAMPLES",
    "GeneSets",
    "_as_gene_set_dict",
    "_as_unsigned_dict",
    "_check_fraction",
    "_choose_case_sensitivity",
    "_clean_genes",
    "_from_long_frame",
    "_from_mapping",
    "_full_identifiers",
    "_index",
    "_match",
    "_matching_summary",
    "_nested_pairs",
    "_no_overlap_error",
    "_preview",
    "_read_gene_sets",
    "_resolve_nested",
    "_set_name",
    "_shared_genes",
    "_signed_mask",
    "_unique",
    "_var_identifiers",
    "_warn_lost",
    "_warn_merged",
    "add_gene_sets",
    "gene_set_overlaps",
    "get_mask",
    "get_prior",
    "get_signs",
    "read_gmt",
    "write_gmt",
]
