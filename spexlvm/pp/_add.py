"""``add_gene_sets``: match the sets, filter them, handle nested ones, write the AnnData."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import KEYS
from ._common import _preview
from ._io import _read_gene_sets
from ._mask import PRIOR_SUFFIX, SIGNS_SUFFIX
from ._match import (
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
    _resolve_nested,
    _warn_merged,
)

logger = logging.getLogger(__name__)

__all__ = ["add_gene_sets"]

#: ``reason`` values of the coverage table.
REASON_KEPT = ""
REASON_TOO_SMALL = "too small"  # fewer genes than min_genes in the set itself
REASON_TOO_FEW = "too few genes found"
REASON_TOO_LARGE = "too large"  # more genes found than max_genes
REASON_MERGED = "merged"


def _signed_mask(
    signs: dict[str, dict[str, float]],
    passed_names: list[str],
    group: np.ndarray,
    is_root: np.ndarray,
    shape: tuple[int, int],
    index: dict[str, list[int]],
    case_sensitive: bool,
) -> np.ndarray:
    """The signs of a signed network on the kept columns (int8, +1/-1 on members, else 0).

    A merged factor takes the signs of its first member (the larger set), then those of
    the others for the genes it lacks.
    """
    out = np.zeros(shape, dtype=np.int8)
    for col in np.argsort(~is_root, kind="stable"):  # roots first
        target = out[:, group[col]]
        for gene, sign in signs.get(passed_names[col], {}).items():
            rows = index.get(gene if case_sensitive else gene.upper(), [])
            for r in rows:
                if target[r] == 0:
                    target[r] = 1 if sign > 0 else -1
    return out


def add_gene_sets(
    adata: AnnData,
    gene_sets: str | os.PathLike[str] | Mapping[str, Iterable[str]] | pd.DataFrame,
    *,
    key: str = KEYS.MASK,
    min_genes: int = 1,
    max_genes: int | None = None,
    gene_symbols: str | None = None,
    case_sensitive: bool | None = None,
    nested: Literal["keep", "merge", "resolve"] | None = NESTED,
    nested_containment: float = NESTED_CONTAINMENT,
    merge_fraction: float = MERGE_FRACTION,
    full_genes: Iterable[str] | None = None,
    copy: bool = False,
) -> pd.DataFrame | AnnData:
    """Annotate genes with gene sets: the prior knowledge of the annotated factors.

    Matches the genes of every set to the genes of ``adata``, drops sets with too few or
    too many genes found, and writes a boolean mask (one column per kept set, in the given
    order) to ``adata.varm[key]`` with a summary in ``adata.uns[key]``. By default
    (``nested="keep"``) every kept set is its own factor under its own name, as in the
    spex-LVM paper and MuVI, nested and near-duplicate sets included. Merging nested sets
    (``nested="merge"``) and, in addition, leaving a nested set's genes to it in the
    model's prior (``nested="resolve"``) are options; see Notes.

    Parameters
    ----------
    adata
        Annotated data matrix, cells x genes.
    gene_sets
        The gene sets, one of

        - a path to a GMT file (``.gmt`` or gzip-compressed ``.gmt.gz``), see
          :func:`read_gmt`;
        - a mapping of set name to genes, e.g. ``{"G2M": ["CDK1", "CCNB1"]}``, or the
          dicts returned by :func:`gseapy.read_gmt`, :meth:`gseapy.Msigdb.get_gmt`,
          :func:`gseapy.get_library` and :func:`spexlvm.datasets.gene_sets`;
        - a long DataFrame, one row per (set, gene) pair, with the columns
          ``source``/``target`` (decoupler networks, e.g. ``dc.op.hallmark()``,
          ``dc.op.progeny()``, ``dc.op.collectri()``), ``term``/``gene`` or
          ``gs_name``/``gene_symbol`` (msigdbr). An optional ``weight`` column makes
          it a signed network (see Notes): rows with weight 0 are dropped, the sign of
          every other weight orients the factor, and magnitudes other than 1 are
          ignored with a :class:`UserWarning`. Sets keep the order of their first row.

        Set names are converted with :class:`str`; missing genes (None/NaN) are skipped;
        genes repeated within a set count once.
    key
        Key of the mask in ``adata.varm`` and of the summary in ``adata.uns``.
    min_genes
        Drop sets with fewer genes found in ``adata``.
    max_genes
        Drop sets with more genes found in ``adata``; ``None``: no upper bound.
    gene_symbols
        Column of ``adata.var`` holding the identifiers to match (e.g. gene symbols when
        ``var_names`` are Ensembl IDs); ``None`` matches ``adata.var_names``. Several
        rows with the same symbol are all annotated.
    case_sensitive
        If ``False``, compare upper-cased identifiers, e.g. mouse symbols (``Cdk1``)
        against human gene sets (``CDK1``), as in the spex-LVM paper. If ``True``, compare
        identifiers exactly. ``None`` (the default) compares exactly unless ignoring case
        finds at least twice as many of the distinct set genes and at least 10 more (or
        any, when exact matching finds none), as for mouse data against human sets; it
        then ignores case and says so in a :class:`UserWarning`.
        ``adata.uns[key]["params"]["case_sensitive"]`` records the choice.
    nested
        How kept sets that lie inside others are handled (see Notes). ``"keep"`` (the
        default; ``None`` means the same) keeps every set whole, its own factor under its
        own name (the original spex-LVM prior). ``"merge"`` merges a nested set into the
        smallest set containing it when it has at least ``merge_fraction`` of that set's
        genes: one factor, named after all its members (``"LARGER + NESTED"``); a
        :class:`UserWarning` lists the merges. ``"resolve"`` merges as ``"merge"`` and
        also leaves every smaller nested set the genes it shares with its parent in the
        prior (``varm[key + "_prior"]``).
    nested_containment
        Share of a set's genes found that must lie inside a larger set for it to count as
        nested in that set. Two sets of the same size with this overlap (near-duplicates)
        count as the later one nested in the earlier one.
    merge_fraction
        A nested set with at least this share of its parent's genes is merged into it.
    full_genes
        The full gene list before a gene selection (e.g. all genes before highly variable
        gene selection), identifiers of the same kind as those matched. Defaults to
        ``adata.raw`` (its ``var_names``, or its ``var[gene_symbols]``) when present. The
        report then says how many genes of each set the selection removed.
    copy
        Work on a copy of ``adata`` and return it, leaving ``adata`` untouched.

    Returns
    -------
    With ``copy=False``, the coverage report of every input set as a DataFrame indexed
    by set name with the columns ``n_genes`` (genes in the set), ``n_found`` (genes
    found in ``adata``), ``fraction`` (``n_found / n_genes``), ``kept``, ``reason``
    (``""`` for kept sets, ``"too small"`` (the set has fewer than ``min_genes`` genes),
    ``"too few genes found"``, ``"too large"`` (more than ``max_genes`` genes found) or
    ``"merged"``), ``merged_into`` (the kept set a merged set became part of, else
    ``""``), ``factor`` (the name of the factor the set is, or is part of; ``""`` for
    dropped sets) and ``n_prior`` (genes of the kept set's factor in the prior, after
    nested sets took theirs; 0 for dropped sets); with a full gene list also
    ``n_found_full`` (genes found in the full list) and ``n_removed`` (of those, how many
    the gene selection removed).
    With ``copy=True``, the annotated copy of ``adata``.

    Sets the following fields (on the copy when ``copy=True``):

    ``adata.varm[key]`` : :class:`numpy.ndarray` (dtype ``bool``)
        ``n_vars x A`` mask; column ``a`` marks the genes of the ``a``-th kept set (the
        union of the genes of the sets merged into it).
    ``adata.varm[key + "_signs"]`` : :class:`numpy.ndarray` (dtype ``int8``)
        Only for a signed network (a ``weight`` column): ``+1`` / ``-1`` on the mask (the
        sign of the gene's weight in the set; a merged factor takes its larger set's sign
        first), 0 elsewhere. :func:`get_signs` reads it.
    ``adata.varm[key + "_prior"]`` : :class:`numpy.ndarray` (dtype ``bool``)
        The mask as the model's prior uses it: without, in each set, the genes it leaves
        to the smaller sets nested in it. Only written when some set left genes to another
        (``nested="resolve"``); :class:`~spexlvm.SpexLVM` falls back to the mask without it.
    ``adata.uns[key]`` : :class:`dict`
        ``names`` (str array, A: the factor names in column order: the kept set's name,
        or for a merged factor its members' names joined by ``" + "``), ``n_genes`` and
        ``n_found`` (int arrays, A: of the set itself), ``n_prior`` (int array, A),
        ``coverage`` (dict of arrays over all input sets: the columns of the report and
        ``name``), ``merged`` (dict of arrays, one entry per merged set: ``name``, ``into``
        (the kept set), ``factor`` (the merged factor's name) and ``jaccard`` (of the
        set's genes and the kept set's union)),
        ``nested`` (dict of arrays, one entry per nested set whose genes a larger set left
        to it: ``subset``, ``superset`` (the factors: the nested one and the one that left
        it the genes), ``n_shared``,
        ``containment``), ``matching`` (``n_set_genes``: distinct genes of all sets,
        ``n_matched``: of those, found; ``n_case_only``: found only by ignoring case;
        ``n_multiple``: matching several rows of ``adata``), ``n_negative`` (int array,
        A: members with a negative weight; 0 without weights) and ``params``
        (``min_genes``,
        ``max_genes`` (``-1``: no bound), ``gene_symbols`` (``""``: ``var_names``),
        ``case_sensitive``, ``nested``, ``nested_containment``, ``merge_fraction``,
        ``full_genes`` (``"adata.raw"``, ``"full_genes"`` or ``""``), ``signed``). Every value
        survives :meth:`~anndata.AnnData.write_h5ad` (string arrays read back with dtype
        object).

    Raises
    ------
    TypeError
        If ``gene_sets`` is of an unsupported type.
    KeyError
        If ``gene_symbols`` is not a column of ``adata.var``.
    ValueError
        If ``adata.var_names`` repeat, a DataFrame lacks the set/gene columns, set
        names are empty or repeat, no set gene is found at all (the message names
        identifiers from both sides and suggests a fix), or no set passes
        ``min_genes``/``max_genes``.

    Notes
    -----
    ``n_found`` counts the distinct set genes found; with ``gene_symbols`` a symbol
    shared by several rows annotates all of them, so a mask column may have more
    ``True`` entries than ``n_found``. Kept sets that lost more than half of their genes
    (not found in ``adata``, nor in ``adata.raw`` / ``full_genes`` when given) are named in
    a :class:`UserWarning` with the usual fixes (``gene_symbols``, ``case_sensitive``);
    sets dropped by ``min_genes`` / ``max_genes`` are counted in an INFO line (and if
    every set is dropped, a :class:`ValueError` says so).

    **Nested and competing sets.** Collections such as Reactome are hierarchies: a broad
    set (*innate immune system*) contains specific ones (*neutrophil degranulation*), and
    chains of sets are almost the same (*cell cycle* > *cell cycle, mitotic* > *M phase*).
    By default (``nested="keep"``) every set is its own factor, and factors of nested sets
    may share the signal of their common genes: after a fit,
    :func:`spexlvm.tl.competing_sets` lists the pairs that competed (and
    :func:`spexlvm.tl.fit` logs when there are strongly competing pairs). The options: a
    set is nested in a larger set when at least ``nested_containment`` of its genes lie
    inside it; only the smallest such sets (its direct parents) count. With
    ``nested="merge"``, a nested set with at least ``merge_fraction`` of a parent's genes is
    merged into it (one factor, named ``"PARENT + NESTED"``; chains merge up to the
    broadest set). With ``nested="resolve"``, in addition, the parent of a smaller nested
    set treats their shared genes as unannotated (slab ``1 - prior_confidence``), so that
    every shared gene has one owner; a broad set that is only the union of its parts then
    keeps no gene of its own and its factor is usually switched off.
    ``benchmarks/gene_set_competition.py`` compares the options; ``benchmarks/RESULTS.md``
    has the numbers (on pbmc68k_reduced, ``"resolve"`` merged 76 of 135 Reactome sets into
    29 factors, and *neutrophil degranulation* was no factor of its own).

    **Signed networks.** Footprint resources such as decoupler's CollecTRI (weights +1 /
    -1: activated / repressed targets) and PROGENy (regression weights) say in which
    direction each target moves. The model's likelihood and prior cannot tell a factor
    from its negative, so after training :class:`~spexlvm.SpexLVM` orients every annotated
    factor so that its members' covariances with its score under the model (their
    loadings, with correlated scores also what related sets' factors share with it) times
    their signs sum to > 0: a positive score means the ``+1`` targets go up and the
    ``-1`` targets down (without weights every member counts as ``+1``: the set's genes go
    up). Only the signs are used. The magnitudes are ignored because the prior encodes
    whether a gene belongs to a set (its slab width), not how strongly it responds, and
    the weights' scales differ between resources (PROGENy's are unbounded regression
    coefficients from other experiments), so no map from a weight to a prior confidence
    would hold across them; to weaken single genes, edit ``varm[key + "_prior"]`` (values
    in [0, 1]) yourself.

    **Finding a merged factor.** Every function of :mod:`spexlvm.pl` and :mod:`spexlvm.tl`
    that takes factor names accepts any member's name; :func:`spexlvm.tl.factor_name`
    returns the factor's full name, e.g. for a column of
    :meth:`~spexlvm.SpexLVM.get_factors`:
    ``model.get_factors()[spexlvm.tl.factor_name(adata, "REACTOME_NEUTROPHIL_DEGRANULATION")]``.

    Examples
    --------
    >>> import spexlvm
    >>> sets = spexlvm.datasets.gene_sets("hallmark")
    >>> report = spexlvm.pp.add_gene_sets(adata, sets, min_genes=15)  # doctest: +SKIP
    >>> report[~report.kept]  # doctest: +SKIP
    """
    nested = _check_options(
        adata,
        min_genes=min_genes,
        max_genes=max_genes,
        case_sensitive=case_sensitive,
        nested=nested,
        nested_containment=nested_containment,
        merge_fraction=merge_fraction,
    )
    m = _match_sets(adata, gene_sets, gene_symbols, case_sensitive)
    too_few, too_many, reason = _filter_sets(m, min_genes, max_genes)
    passed_idx = np.flatnonzero(~too_few & ~too_many)
    full = np.zeros((adata.n_vars, passed_idx.size), dtype=bool)
    for col, j in enumerate(passed_idx):
        full[m.rows[j], col] = True
    f = _nested_factors(
        full, passed_idx, m.names, reason, nested, nested_containment, merge_fraction
    )
    signed = None
    if m.signs is not None:
        signed = _signed_mask(
            m.signs,
            [m.names[j] for j in passed_idx],
            f.group,
            f.is_root,
            f.mask.shape,
            m.index,
            m.case_sensitive,
        )
    logger.info(
        "Kept %d of %d gene sets as factors (%d with too few genes found (min_genes=%d), %d "
        "with too many (max_genes=%s), %d merged).",
        f.kept_idx.size,
        len(m.names),
        int(too_few.sum()),
        min_genes,
        int(too_many.sum()),
        max_genes,
        len(f.merged_rows["name"]),
    )
    selection, full_source = _gene_selection(adata, m, f.kept_idx, gene_symbols, full_genes)

    if copy:
        adata = adata.copy()
    _write_masks(adata, key, f.mask, f.prior, signed)
    coverage, info = _summary(
        m,
        f,
        reason,
        signed,
        selection,
        params={
            "min_genes": int(min_genes),
            "max_genes": -1 if max_genes is None else int(max_genes),
            "gene_symbols": "" if gene_symbols is None else str(gene_symbols),
            "case_sensitive": bool(m.case_sensitive),
            "nested": str(nested),
            "nested_containment": float(nested_containment),
            "merge_fraction": float(merge_fraction),
            "full_genes": full_source,
            "signed": signed is not None,
        },
    )
    adata.uns[key] = info
    if copy:
        return adata
    return pd.DataFrame(coverage, index=pd.Index(m.names, name="gene_set", dtype=object))


# ---------------------------------------------------------------------------------------
# The steps of add_gene_sets
# ---------------------------------------------------------------------------------------


@dataclass
class _Matched:
    """The input sets matched to the genes of the AnnData."""

    sets: dict[str, list[str]]
    signs: dict[str, dict[str, float]] | None  # a signed network's signs, else None
    ids: np.ndarray  # the identifiers matched against
    case_sensitive: bool
    index: dict[str, list[int]]  # identifier (upper-cased unless case_sensitive) -> rows
    names: list[str]
    n_genes: np.ndarray  # genes in each set
    n_found: np.ndarray  # distinct genes of each set found
    rows: list[np.ndarray]  # matched rows of each set
    matching: dict[str, int]
    where: str  # where the identifiers came from, for messages


@dataclass
class _Factors:
    """The kept factors after nested sets were handled."""

    kept_idx: np.ndarray  # the input sets that are factors (the root of a merged factor)
    kept_names: list[str]  # the factor names
    mask: np.ndarray  # genes x factors
    prior: np.ndarray  # the mask as the prior uses it (``mask`` itself when nothing ceded)
    group: np.ndarray  # the factor every passed set went into
    is_root: np.ndarray  # passed sets that are factors
    merged_into: np.ndarray  # per input set: the set it merged into, else ""
    factor_of: np.ndarray  # per input set: the factor it became (part of), else ""
    merged_rows: dict[str, list] = field(default_factory=dict)
    nested_rows: dict[str, list] = field(default_factory=dict)


def _check_options(
    adata: AnnData,
    *,
    min_genes: int,
    max_genes: int | None,
    case_sensitive: bool | None,
    nested: str | None,
    nested_containment: float,
    merge_fraction: float,
) -> str:
    """Check the arguments of :func:`add_gene_sets`; returns ``nested`` (``None``: "keep")."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if isinstance(min_genes, bool) or not isinstance(min_genes, int | np.integer):
        raise TypeError(f"min_genes must be an int, not {type(min_genes).__name__}.")
    if min_genes < 0:
        raise ValueError(f"min_genes must be >= 0, got {min_genes}.")
    if max_genes is not None:
        if isinstance(max_genes, bool) or not isinstance(max_genes, int | np.integer):
            raise TypeError(f"max_genes must be an int or None, not {type(max_genes).__name__}.")
        if max_genes < min_genes:
            raise ValueError(f"max_genes ({max_genes}) is smaller than min_genes ({min_genes}).")
    if nested is None:
        nested = "keep"
    if nested not in _NESTED_MODES:
        raise ValueError(
            f"nested must be one of {list(_NESTED_MODES)} (or None: 'keep'), got {nested!r}."
        )
    _check_fraction("nested_containment", nested_containment)
    _check_fraction("merge_fraction", merge_fraction)
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names are not unique ({_preview(dups)}); run "
            "adata.var_names_make_unique() first."
        )
    if case_sensitive is not None and not isinstance(case_sensitive, bool | np.bool_):
        raise TypeError(
            f"case_sensitive must be True, False or None (automatic), not {case_sensitive!r}."
        )
    return nested


def _match_sets(
    adata: AnnData, gene_sets: Any, gene_symbols: str | None, case_sensitive: bool | None
) -> _Matched:
    """Read the sets and match their genes (``case_sensitive=None``: chosen here)."""
    sets, signs = _read_gene_sets(gene_sets)
    if not sets:
        raise ValueError("No gene sets given.")
    ids = _var_identifiers(adata, gene_symbols)
    if case_sensitive is None:
        case_sensitive = _choose_case_sensitivity(sets, ids, gene_symbols)
    case_sensitive = bool(case_sensitive)
    index = _index(ids, case_sensitive)
    n_genes = np.array([len(g) for g in sets.values()], dtype=np.int64)
    n_found, rows = _match(sets, index, case_sensitive)
    if n_found.sum() == 0:
        raise _no_overlap_error(
            sets, ids, adata, gene_symbols=gene_symbols, case_sensitive=case_sensitive
        )
    matching = _matching_summary(sets, ids, index, case_sensitive)
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    logger.info(
        "Matched %d of %d distinct gene-set genes to %s%s%s.",
        matching["n_matched"],
        matching["n_set_genes"],
        where,
        " ignoring case" if not case_sensitive else "",
        f" ({matching['n_case_only']} only by ignoring case)" if matching["n_case_only"] else "",
    )
    return _Matched(
        sets=sets,
        signs=signs,
        ids=ids,
        case_sensitive=case_sensitive,
        index=index,
        names=list(sets),
        n_genes=n_genes,
        n_found=n_found,
        rows=rows,
        matching=matching,
        where=where,
    )


def _filter_sets(
    m: _Matched, min_genes: int, max_genes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sets with too few / too many genes found, and every set's ``reason``."""
    too_few = m.n_found < min_genes
    too_many = np.zeros(len(m.names), dtype=bool) if max_genes is None else m.n_found > max_genes
    reason = np.where(
        m.n_genes < min_genes,
        REASON_TOO_SMALL,
        np.where(too_few, REASON_TOO_FEW, np.where(too_many, REASON_TOO_LARGE, REASON_KEPT)),
    ).astype(object)
    if not (~too_few & ~too_many).any():
        best = int(np.argmax(m.n_found))
        bounds = f"min_genes={min_genes}, max_genes={max_genes}"
        raise ValueError(
            f"Every gene set was filtered out ({bounds}); the largest number of genes "
            f"found is {int(m.n_found[best])} (set {m.names[best]!r}). Relax the bounds."
        )
    return too_few, too_many, reason


def _nested_factors(
    full: np.ndarray,
    passed_idx: np.ndarray,
    names: list[str],
    reason: np.ndarray,
    nested: str,
    nested_containment: float,
    merge_fraction: float,
) -> _Factors:
    """The factors of the passed sets, after nested sets were merged or left their genes.

    A nested set is merged into its parent when it makes up most of it; with ``"resolve"``,
    smaller ones keep their genes (the parent's factor leaves them). Sets ``reason`` of the
    merged sets.
    """
    n_sets = len(names)
    f = _Factors(
        kept_idx=passed_idx,
        kept_names=[names[j] for j in passed_idx],
        mask=full,
        prior=full,
        group=np.arange(passed_idx.size),
        is_root=np.ones(passed_idx.size, dtype=bool),
        merged_into=np.full(n_sets, "", dtype=object),
        factor_of=np.full(n_sets, "", dtype=object),
        merged_rows={"name": [], "into": [], "factor": [], "jaccard": []},
        nested_rows={k: [] for k in ("subset", "superset", "n_shared", "containment")},
    )
    if nested == "keep" or passed_idx.size <= 1:
        f.factor_of[passed_idx] = f.kept_names
        return f
    group, merged, prior_all, ceded = _resolve_nested(
        full, float(nested_containment), float(merge_fraction), cede=nested == "resolve"
    )
    roots = group == np.arange(passed_idx.size)
    # a merged factor is named after all its members: the root set first
    members: dict[int, list[str]] = {int(c): [names[passed_idx[c]]] for c in np.flatnonzero(roots)}
    for col in np.flatnonzero(~roots):
        members[int(group[col])].append(names[passed_idx[col]])
    col_name = {c: MERGED_SEP.join(m) for c, m in members.items()}
    for col in range(passed_idx.size):
        f.factor_of[passed_idx[col]] = col_name[int(group[col])]
    for col in np.flatnonzero(~roots):
        j, jr = passed_idx[col], passed_idx[group[col]]
        f.merged_into[j] = names[jr]
        reason[j] = REASON_MERGED
        union = merged[:, group[col]]
        n_both = int((full[:, col] & union).sum())
        f.merged_rows["name"].append(names[j])
        f.merged_rows["into"].append(names[jr])
        f.merged_rows["factor"].append(col_name[int(group[col])])
        f.merged_rows["jaccard"].append(n_both / int((full[:, col] | union).sum()))
    size = full.sum(0)
    for col, root in ceded:
        n_both = int((full[:, col] & merged[:, root]).sum())
        f.nested_rows["subset"].append(col_name[int(group[col])])
        f.nested_rows["superset"].append(col_name[int(root)])
        f.nested_rows["n_shared"].append(n_both)
        f.nested_rows["containment"].append(n_both / int(size[col]))
    f.kept_idx = passed_idx[roots]
    f.kept_names = [col_name[int(c)] for c in np.flatnonzero(roots)]
    f.group, f.is_root = np.searchsorted(np.flatnonzero(roots), group), roots
    f.mask, f.prior = merged[:, roots], prior_all[:, roots]
    if not ceded:
        f.prior = f.mask
    if f.merged_rows["name"]:
        _warn_merged(f.merged_rows, nested)
    if f.nested_rows["subset"]:
        _log_ceded(f)
    return f


def _log_ceded(f: _Factors) -> None:
    """INFO lines on the genes larger sets left to the sets nested in them."""
    pairs = zip(f.nested_rows["subset"], f.nested_rows["superset"], strict=True)
    logger.info(
        "Nested gene sets (nested='resolve'): %d larger set(s) leave the genes of %d "
        "smaller set(s) nested in them to those in the prior (e.g. %s); "
        "nested='keep' (the default) keeps every set whole.",
        len(set(f.nested_rows["superset"])),
        len(set(f.nested_rows["subset"])),
        _preview((f"{a} in {b}" for a, b in pairs), 2),
    )
    empty = [n for n, k in zip(f.kept_names, f.prior.sum(0), strict=True) if k == 0]
    if empty:
        logger.info(
            "%d set(s) are covered by the sets nested in them and keep no gene of "
            "their own in the prior (their factors are usually switched off): %s.",
            len(empty),
            _preview(empty, 3),
        )


def _gene_selection(
    adata: AnnData,
    m: _Matched,
    kept_idx: np.ndarray,
    gene_symbols: str | None,
    full_genes: Iterable[str] | None,
) -> tuple[dict[str, np.ndarray], str]:
    """Genes a gene selection removed; warns about kept sets that lost most of their genes.

    The full gene list is ``adata.raw`` or ``full_genes``. Returns the report's columns of
    the selection (empty without a full gene list) and where the full gene list came from
    (``""``: none).
    """
    full_ids, full_source = _full_identifiers(adata, gene_symbols, full_genes)
    selection: dict[str, np.ndarray] = {}
    n_known = m.n_found  # genes found in the fullest gene list known
    if full_ids is not None:
        n_found_full, _ = _match(m.sets, _index(full_ids, m.case_sensitive), m.case_sensitive)
        n_found_full = np.maximum(n_found_full, m.n_found)
        n_removed = n_found_full - m.n_found
        selection = {"n_found_full": n_found_full, "n_removed": n_removed}
        n_known = n_found_full
        hit = [m.names[j] for j in kept_idx if n_removed[j] > 0.5 * n_found_full[j]]
        logger.info(
            "The gene selection removed %d of %d gene-set genes found in %s%s.",
            int(n_removed.sum()),
            int(n_found_full.sum()),
            full_source,
            f"; {len(hit)} kept set(s) lost more than half of them: {_preview(hit, 3)}"
            if hit
            else "",
        )
    lost = [j for j in kept_idx if m.n_genes[j] > 0 and n_known[j] < 0.5 * m.n_genes[j]]
    if lost:
        _warn_lost(
            m.sets,
            [m.names[j] for j in lost],
            m.n_genes,
            m.n_found,
            kept_idx.size,
            lost,
            m.ids,
            adata,
            where=m.where,
            gene_symbols=gene_symbols,
            case_sensitive=m.case_sensitive,
            full_source=full_source,
        )
    return selection, full_source


def _write_masks(
    adata: AnnData, key: str, mask: np.ndarray, prior: np.ndarray, signed: np.ndarray | None
) -> None:
    """Write the mask, and the prior mask and the signs when there are any, to ``varm``."""
    prior_key = f"{key}{PRIOR_SUFFIX}"
    if key in adata.varm or key in adata.uns:
        logger.info("Overwriting adata.varm[%r] / adata.uns[%r].", key, key)
    signs_key = f"{key}{SIGNS_SUFFIX}"
    adata.varm.pop(prior_key, None)
    adata.varm.pop(signs_key, None)
    adata.varm[key] = mask
    if prior is not mask:
        adata.varm[prior_key] = prior
    if signed is not None:
        adata.varm[signs_key] = signed
        n_down = (signed < 0).sum(0)
        logger.info(
            "Signed gene sets: %d of %d factors have targets with weight < 0 (%d genes); a "
            "positive score of a factor means its +1 targets go up and its -1 targets down.",
            int((n_down > 0).sum()),
            signed.shape[1],
            int(n_down.sum()),
        )


def _summary(
    m: _Matched,
    f: _Factors,
    reason: np.ndarray,
    signed: np.ndarray | None,
    selection: dict[str, np.ndarray],
    *,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The coverage report's columns and ``adata.uns[key]``."""
    n_sets = len(m.names)
    kept = np.zeros(n_sets, dtype=bool)
    kept[f.kept_idx] = True
    n_prior_kept = f.prior.sum(0).astype(np.int64)
    n_prior = np.zeros(n_sets, dtype=np.int64)
    n_prior[f.kept_idx] = n_prior_kept
    coverage = {
        "n_genes": m.n_genes,
        "n_found": m.n_found,
        "fraction": (m.n_found / np.maximum(m.n_genes, 1)).astype(np.float64),  # 0.0: empty
        "kept": kept,
        "reason": np.asarray(reason, dtype=str),
        "merged_into": np.asarray(f.merged_into, dtype=str),
        "factor": np.asarray(f.factor_of, dtype=str),
        "n_prior": n_prior,
        **selection,
    }
    info = {
        "names": np.array(f.kept_names, dtype=str),
        "n_genes": m.n_genes[f.kept_idx].copy(),
        "n_found": m.n_found[f.kept_idx].copy(),
        "n_prior": n_prior_kept,
        "coverage": {"name": np.array(m.names, dtype=str), **coverage},
        "merged": {
            "name": np.array(f.merged_rows["name"], dtype=str),
            "into": np.array(f.merged_rows["into"], dtype=str),
            "factor": np.array(f.merged_rows["factor"], dtype=str),
            "jaccard": np.array(f.merged_rows["jaccard"], dtype=np.float64),
        },
        "nested": {
            "subset": np.array(f.nested_rows["subset"], dtype=str),
            "superset": np.array(f.nested_rows["superset"], dtype=str),
            "n_shared": np.array(f.nested_rows["n_shared"], dtype=np.int64),
            "containment": np.array(f.nested_rows["containment"], dtype=np.float64),
        },
        "matching": {k: int(v) for k, v in m.matching.items()},
        "n_negative": (
            (signed < 0).sum(0).astype(np.int64)
            if signed is not None
            else np.zeros(len(f.kept_names), dtype=np.int64)
        ),
        "params": params,
    }
    return coverage, info
