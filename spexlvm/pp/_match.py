"""Matching gene-set genes to the genes of an AnnData: identifiers, case, coverage hints."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import user_stacklevel
from ._common import _ENSEMBL_RE, _preview, _unique

logger = logging.getLogger(__name__)

#: ``case_sensitive=None`` matches ignoring case when that finds at least this many times
#: as many distinct set genes as exact matching ...
CASE_AUTO_RATIO = 2.0
#: ... and at least this many more (or all of them, when exact matching finds none).
CASE_AUTO_MIN_EXTRA = 10


def _var_identifiers(adata: AnnData, gene_symbols: str | None) -> np.ndarray:
    """Return the identifiers to match against (object array, ``None`` where missing)."""
    if gene_symbols is None:
        return np.asarray(adata.var_names.astype(str), dtype=object)
    if gene_symbols not in adata.var.columns:
        raise KeyError(
            f"gene_symbols={gene_symbols!r} is not a column of adata.var; available "
            f"columns: {list(adata.var.columns)}."
        )
    col = adata.var[gene_symbols]
    values = np.asarray(col.astype(object), dtype=object)
    missing = np.asarray(col.isna())
    ids = np.array([str(v) for v in values], dtype=object)
    ids[missing] = None
    return ids


def _index(ids: np.ndarray, case_sensitive: bool) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        if v is None:
            continue
        index.setdefault(v if case_sensitive else v.upper(), []).append(i)
    return index


def _no_overlap_error(
    sets: dict[str, list[str]],
    ids: np.ndarray,
    adata: AnnData,
    *,
    gene_symbols: str | None,
    case_sensitive: bool,
) -> ValueError:
    set_genes = _unique(g for genes in sets.values() for g in genes)
    var_ids = [v for v in ids if v is not None]
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    msg = [
        f"No gene of any gene set was found in {where}.",
        f"  gene-set genes, e.g.: {_preview(set_genes)}",
        f"  {where}, e.g.: {_preview(var_ids)}",
    ]
    hints = []
    if var_ids and sum(bool(_ENSEMBL_RE.match(v)) for v in var_ids[:200]) > 0.5 * min(
        len(var_ids), 200
    ):
        upper_genes = {g.upper() for g in set_genes}
        candidates = [
            c
            for c in adata.var.columns
            if c != gene_symbols
            and (
                pd.api.types.is_string_dtype(adata.var[c].dtype)
                or isinstance(adata.var[c].dtype, pd.CategoricalDtype)
            )
            and adata.var[c].astype(str).str.upper().isin(upper_genes).any()
        ]
        cols = " or ".join(repr(c) for c in candidates) if candidates else "<column>"
        hints.append(
            f"{where} look like Ensembl IDs; match gene symbols with gene_symbols={cols} "
            f"(adata.var columns: {list(adata.var.columns)})."
        )
    if case_sensitive:
        upper_ids = {v.upper() for v in var_ids}
        if any(g.upper() in upper_ids for g in set_genes):
            hints.append(
                "Matching upper-cased identifiers would find genes (e.g. mouse symbols "
                "against human gene sets): use case_sensitive=False."
            )
    if not hints:
        hints.append(
            "Check that both sides use the same identifier type and species (symbols vs "
            "Ensembl/Entrez IDs); use gene_symbols=<adata.var column> to match another "
            "column."
        )
    msg += [f"Hint: {h}" for h in hints]
    return ValueError("\n".join(msg))


def _match(
    sets: dict[str, list[str]], index: dict[str, list[int]], case_sensitive: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per set: the number of distinct set genes found and the matched rows."""
    n_found = np.zeros(len(sets), dtype=np.int64)
    rows: list[np.ndarray] = []
    for j, genes in enumerate(sets.values()):
        keys = _unique(genes if case_sensitive else (g.upper() for g in genes))
        hits = [index[k] for k in keys if k in index]
        n_found[j] = len(hits)
        rows.append(
            np.fromiter((i for h in hits for i in h), dtype=np.int64)
            if hits
            else np.zeros(0, dtype=np.int64)
        )
    return n_found, rows


def _choose_case_sensitivity(
    sets: dict[str, list[str]], ids: np.ndarray, gene_symbols: str | None
) -> bool:
    """``case_sensitive=None``: exact matching unless ignoring case finds many more genes."""
    genes = _unique(g for gs in sets.values() for g in gs)
    exact = {v for v in ids if v is not None}
    upper = {v.upper() for v in exact}
    n_exact = sum(g in exact for g in genes)
    n_upper = sum(g.upper() in upper for g in genes)
    extra = n_upper - n_exact
    if (
        extra <= 0
        or n_upper < CASE_AUTO_RATIO * n_exact
        or extra < min(CASE_AUTO_MIN_EXTRA, n_upper)
    ):
        return True
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    case_only = [g for g in genes if g not in exact and g.upper() in upper][:3]
    warnings.warn(
        f"Matching gene sets to {where} ignoring case: exact matching finds {n_exact} of "
        f"the {len(genes)} distinct set genes, ignoring case finds {n_upper} (e.g. "
        f"{_preview(case_only)}; mouse symbols against human gene sets?). Pass "
        "case_sensitive=False to ignore case without this warning, or case_sensitive=True "
        "to match exactly.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return False


def _matching_summary(
    sets: dict[str, list[str]], ids: np.ndarray, index: dict[str, list[int]], case_sensitive: bool
) -> dict[str, int]:
    """How the distinct set genes mapped to the genes of the AnnData."""
    genes = _unique(g for gs in sets.values() for g in gs)
    exact = {v for v in ids if v is not None}
    n_matched = n_case_only = n_multiple = 0
    for g in genes:
        hits = index.get(g if case_sensitive else g.upper())
        if not hits:
            continue
        n_matched += 1
        n_case_only += g not in exact
        n_multiple += len(hits) > 1
    return {
        "n_set_genes": len(genes),
        "n_matched": n_matched,
        "n_case_only": n_case_only,
        "n_multiple": n_multiple,
    }


def _full_identifiers(
    adata: AnnData, gene_symbols: str | None, full_genes: Iterable[str] | None
) -> tuple[np.ndarray | None, str]:
    """Identifiers of the full gene list (before a gene selection) and where they came from."""
    if full_genes is not None:
        if isinstance(full_genes, str | bytes):
            raise TypeError("full_genes must be a list of gene identifiers, not a single string.")
        ids = np.array([None if pd.isna(g) else str(g) for g in full_genes], dtype=object)
        return ids, "full_genes"
    raw = adata.raw
    if raw is None:
        return None, ""
    if gene_symbols is None:
        return np.asarray(raw.var_names.astype(str), dtype=object), "adata.raw"
    if gene_symbols in raw.var.columns:
        col = raw.var[gene_symbols]
        ids = np.array([str(v) for v in col.astype(object)], dtype=object)
        ids[np.asarray(col.isna())] = None
        return ids, "adata.raw"
    logger.info(
        "adata.raw.var has no column %r: the gene selection is not reported.", gene_symbols
    )
    return None, ""


def _warn_lost(
    sets: dict[str, list[str]],
    lost_names: list[str],
    n_genes: np.ndarray,
    n_found: np.ndarray,
    n_kept: int,
    lost: list[int],
    ids: np.ndarray,
    adata: AnnData,
    *,
    where: str,
    gene_symbols: str | None,
    case_sensitive: bool,
    full_source: str,
) -> None:
    """One :class:`UserWarning` naming kept sets that lost most of their genes, with fixes."""
    examples = ", ".join(
        f"{name!r} ({int(n_found[j])} of {int(n_genes[j])} genes found)"
        for name, j in zip(lost_names[:3], lost[:3], strict=True)
    )
    if len(lost_names) > 3:
        examples += f" and {len(lost_names) - 3} more"
    hints = []
    var_ids = [v for v in ids[:500] if v is not None]
    if var_ids and sum(bool(_ENSEMBL_RE.match(v)) for v in var_ids) > 0.5 * len(var_ids):
        hints.append(
            f"{where} look like Ensembl IDs: match gene symbols with "
            "gene_symbols=<adata.var column of symbols>"
        )
    if case_sensitive:
        upper = {v.upper() for v in ids if v is not None}
        exact = {v for v in ids if v is not None}
        n_case = len(
            {g for name in lost_names for g in sets[name] if g not in exact and g.upper() in upper}
        )
        if n_case:
            hints.append(
                f"{n_case} of their genes match only ignoring case (mouse symbols against "
                "human gene sets?): pass case_sensitive=False"
            )
    species = (
        " and species (mouse data against human sets: case_sensitive=False)"
        if case_sensitive
        else ""
    )
    hints.append(
        "check that both sides use the same identifier type (gene symbols vs Ensembl or "
        f"Entrez IDs: gene_symbols=<adata.var column>){species}"
    )
    if full_source:
        selection = (
            f"The genes were not found in {full_source} either, so a gene selection does not "
            "explain the loss."
        )
    else:
        selection = (
            "If adata holds only a gene selection (e.g. highly variable genes), part of the "
            "loss is expected: keep all genes in adata.raw (or pass full_genes=) to tell the "
            "two apart, or fit on more genes."
        )
    warnings.warn(
        f"{len(lost_names)} of the {n_kept} kept gene sets lost more than half of their genes "
        f"(not found in {where}): {examples}. Their factors describe only the genes found. "
        f"If adata holds all measured genes, {'; '.join(hints)}. {selection}",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
