"""Factor names: short display names, kinds, and finding a factor by any of its names."""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import DENSE_PREFIX, KEYS, SPARSE_PREFIX
from ..pp._nested import MERGED_SEP as _MERGED_SEP
from ._results import factor_names, fit_mask_key, results

if TYPE_CHECKING:
    from anndata import AnnData

#: Collection prefixes stripped from gene-set names for display (MSigDB style).
_PREFIXES = (
    "REACTOME_",
    "HALLMARK_",
    "KEGG_",
    "BIOCARTA_",
    "PID_",
    "WP_",
    "GOBP_",
    "GOCC_",
    "GOMF_",
)
#: Default length of a shortened name, ellipsis included.
_MAX_LEN = 40
_ELLIPSIS = "…"


def short_name(name: str, max_len: int | None = _MAX_LEN) -> str:
    """Readable short form of a factor or gene-set name, for plot labels.

    Strips a collection prefix (``REACTOME_``, ``HALLMARK_``, ``KEGG_``, ...), replaces
    underscores with spaces and truncates to ``max_len`` characters with an ellipsis.
    Unannotated factors (``sparse_1``, ``dense_1``) keep their names; a merged factor
    (``"REACTOME_A + REACTOME_B"``, see :func:`spexlvm.pp.add_gene_sets`) has every
    member shortened (``"A + B"``). The full name stays
    in ``adata.uns["spexlvm"]["factor_names"]``, and :func:`spexlvm.pl.scatter` accepts
    either form.

    Parameters
    ----------
    name
        Factor name, e.g. ``"REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"``.
    max_len
        Maximum length of the result, ellipsis included; ``None``: no truncation.

    Returns
    -------
    The short name, e.g. ``"MHC CLASS II ANTIGEN PRESENTATION"``.

    Examples
    --------
    >>> short_name("HALLMARK_G2M_CHECKPOINT")
    'G2M CHECKPOINT'
    >>> short_name("REACTOME_RESPIRATORY_ELECTRON_TRANSPORT_ATP_SYNTHESIS_BY_CHEMIOSMOSIS")
    'RESPIRATORY ELECTRON TRANSPORT ATP…'
    """
    name = str(name)
    if _kind_from_name(name) != "annotated":
        return name
    if _MERGED_SEP in name:  # a merged factor: every member shortened
        parts = [short_name(p, max_len=None) for p in name.split(_MERGED_SEP)]
        return _truncate(_MERGED_SEP.join(parts), max_len)
    upper = name.upper()
    for prefix in _PREFIXES:
        if upper.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    name = re.sub(r"\s+", " ", name.replace("_", " ")).strip()
    return _truncate(name, max_len)


def _truncate(name: str, max_len: int | None) -> str:
    """``name`` cut to ``max_len`` characters with an ellipsis, on a word when cheap."""
    if max_len is not None and len(name) > max_len:
        cut = name[: max(max_len - 1, 1)]
        space = cut.rfind(" ")
        if name[len(cut)] != " " and space >= max_len // 2:
            cut = cut[:space]  # end on a whole word when that loses little
        name = cut.rstrip() + _ELLIPSIS
    return name


def _kind_from_name(name: str) -> str:
    """``"sparse"``, ``"dense"`` or ``"annotated"``, from the name alone."""
    for prefix, kind in ((SPARSE_PREFIX, "sparse"), (DENSE_PREFIX, "dense")):
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.isdigit():
            return kind
    return "annotated"


def _normalise(name: str) -> str:
    """Key for lenient name matching: short form, lower case, no truncation."""
    return re.sub(r"[\s_]+", " ", short_name(name, max_len=None)).strip().lower()


def resolve_factor(adata: AnnData, factor: str | int, key: str = KEYS.UNS) -> int:
    """Column index of a factor given by full name, short name, member name or position.

    Matching order: the exact full name; the exact name of a gene set merged into a factor
    (:func:`spexlvm.pp.add_gene_sets` with ``nested="merge"`` or ``"resolve"``; the
    factor is named after all its members); then both compared leniently (collection
    prefix optional, underscores or spaces, any case; a shortened name with its ellipsis
    works too). An unknown or ambiguous name raises a :class:`KeyError` listing the
    closest factor names.
    """
    names = factor_names(adata, key)  # needs no other result
    if isinstance(factor, int | np.integer) and not isinstance(factor, bool):
        if not -len(names) <= factor < len(names):
            raise IndexError(f"Factor index {factor} out of range for {len(names)} factors.")
        return int(factor) % len(names)
    factor = str(factor)
    if factor in names:
        return names.index(factor)
    aliases = factor_aliases(adata, key)
    if factor in aliases:
        return names.index(aliases[factor])

    query = factor.strip()
    truncated = query.endswith(_ELLIPSIS) or query.endswith("...")
    query = _normalise(query.removesuffix(_ELLIPSIS).removesuffix("..."))
    # candidates: every factor name, then every member name of a merged factor
    candidates = [(_normalise(n), i) for i, n in enumerate(names)]
    candidates += [(_normalise(m), names.index(f)) for m, f in aliases.items()]
    hits = _unique_ints(
        i for n, i in candidates if n == query or (truncated and query and n.startswith(query))
    )
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise KeyError(
            f"Factor {factor!r} is ambiguous in adata.uns[{key!r}]['factor_names']; "
            f"it matches {', '.join(repr(names[i]) for i in hits[:10])}. Give the full name."
        )

    normalised = [n for n, _ in candidates]
    close = difflib.get_close_matches(query, normalised, n=5, cutoff=0.5)
    close_idx = _unique_ints(candidates[normalised.index(c)][1] for c in close)
    if query:
        close_idx += _unique_ints(i for n, i in candidates if query in n and i not in close_idx)
    if close_idx:
        hint = "Close matches: " + ", ".join(repr(names[i]) for i in close_idx[:8]) + "."
    else:
        hint = "Names start with: " + ", ".join(repr(n) for n in names[:5]) + "."
    raise KeyError(
        f"Factor {factor!r} not found among the {len(names)} factors in "
        f"adata.uns[{key!r}]['factor_names']. {hint}"
    )


def _unique_ints(values: Any) -> list[int]:
    """De-duplicated ints, first occurrence's order."""
    return list(dict.fromkeys(int(v) for v in values))


def factor_aliases(adata: AnnData, key: str = "spexlvm") -> dict[str, str]:
    """Member set name -> factor name, for the sets merged into a factor of the fit.

    Read from the annotation the fit used (``adata.uns[mask_key]``, written by
    :func:`spexlvm.pp.add_gene_sets` with ``nested="merge"`` or ``"resolve"``): every set
    that became a factor named otherwise (the members of a merged factor, its largest set
    included). Empty when nothing was merged or the annotation is missing.
    """
    uns = adata.uns.get(key)
    if not isinstance(uns, dict) or "factor_names" not in uns:
        return {}
    names = set(np.asarray(uns["factor_names"]).astype(str).reshape(-1))
    info = adata.uns.get(fit_mask_key(uns))
    if not isinstance(info, dict):
        return {}
    # annotations written before merged factors were named after their members only
    # have the `merged` table (member -> the larger set's name)
    coverage = info.get("coverage")
    if isinstance(coverage, dict) and "factor" in coverage:
        pairs = _column_pairs(coverage, "name", "factor")
    else:
        pairs = _column_pairs(info.get("merged"), "name", "into")
    return {
        member: factor
        for member, factor in pairs
        if factor and member != factor and factor in names and member not in names
    }


def _column_pairs(table: Any, left: str, right: str) -> list[tuple[str, str]]:
    """``(left, right)`` rows of an uns table stored as a dict of columns (or none)."""
    if not isinstance(table, dict) or left not in table or right not in table:
        return []
    return list(
        zip(
            np.asarray(table[left]).astype(str),
            np.asarray(table[right]).astype(str),
            strict=True,
        )
    )


def factor_name(adata: AnnData, name: str | int, *, key: str = KEYS.UNS) -> str:
    """The full name of the factor that ``name`` refers to (see :func:`resolve_factor`)."""
    return factor_names(adata, key)[resolve_factor(adata, name, key)]


def factor_kinds(adata: AnnData, key: str = KEYS.UNS) -> list[str]:
    """``"annotated"``, ``"sparse"`` or ``"dense"`` per factor, in factor order."""
    uns = results(adata, key)
    names = factor_names(adata, key)
    n_annotated = uns.get("n_annotated")
    n_sparse = uns.get("n_sparse")
    if n_annotated is None or n_sparse is None:
        return [_kind_from_name(n) for n in names]
    n_annotated, n_sparse = int(n_annotated), int(n_sparse)
    return [
        "annotated" if i < n_annotated else "sparse" if i < n_annotated + n_sparse else "dense"
        for i in range(len(names))
    ]
