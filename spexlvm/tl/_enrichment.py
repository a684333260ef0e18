"""What a factor is about: gene-set enrichment of its loadings (gseapy's prerank GSEA)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._docs import docs
from ..get._tools import ENRICHMENT_COLUMNS, enrichment_entry_name
from ..get._tools import enrichment as _read_enrichment
from ._utils import (
    factor_aliases,
    frame_to_uns,
    get_annotation,
    get_factor_names,
    get_loadings,
    get_results,
    store,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["enrichment", "get_enrichment"]

#: Columns of the table returned by :func:`enrichment`, in order.
COLUMNS = ENRICHMENT_COLUMNS
#: Default ``uns[key]`` entry of the results.
KEY_ADDED = "enrichment"


def _gene_sets_arg(adata: AnnData, gene_sets: Any, key: str) -> tuple[dict[str, list[str]], str]:
    """Gene sets as ``{name: [genes]}`` and where they came from."""
    from ..pp._gene_sets import _as_gene_set_dict

    if gene_sets is None:
        mask, names = get_annotation(adata, key)
        if mask.shape[1] == 0:
            raise ValueError(
                f"The fit under uns[{key!r}] has no gene-set annotation to test against: "
                "pass gene_sets= (a GMT path, a dict of set name -> genes, or a long "
                "DataFrame with source/target columns)."
            )
        genes = np.asarray(adata.var_names, dtype=str)
        return {str(n): genes[mask[:, k]].tolist() for k, n in enumerate(names)}, "annotation"
    if isinstance(gene_sets, str | os.PathLike) and not Path(os.fspath(gene_sets)).exists():
        raise FileNotFoundError(
            f"gene_sets={str(gene_sets)!r} is not a file. spexlvm.tl.enrichment runs offline: "
            "pass a GMT file, a dict of set name -> genes (e.g. "
            "spexlvm.datasets.gene_sets('hallmark'), gseapy.read_gmt(path)) or a long "
            "DataFrame (e.g. a decoupler net saved with net.to_csv), not an Enrichr library "
            "name."
        )
    return _as_gene_set_dict(gene_sets), "given"


def _match_sets(
    adata: AnnData,
    sets: dict[str, list[str]],
    gene_symbols: str | None,
    case_sensitive: bool | None,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Keys of the ranked genes (one per gene of ``adata``) and the sets in those keys."""
    from ..pp._gene_sets import _choose_case_sensitivity, _var_identifiers

    ids = _var_identifiers(adata, gene_symbols)
    if case_sensitive is None:
        case_sensitive = _choose_case_sensitivity(sets, ids, gene_symbols)
    keys = np.array(
        [None if v is None else (v if case_sensitive else v.upper()) for v in ids], dtype=object
    )
    known = {k for k in keys if k is not None}
    matched = {
        name: list(dict.fromkeys(g if case_sensitive else g.upper() for g in genes))
        for name, genes in sets.items()
    }
    matched = {name: [g for g in genes if g in known] for name, genes in matched.items()}
    return keys, matched


@docs.dedent
def enrichment(
    adata: AnnData,
    factor: str | int,
    gene_sets: str | os.PathLike[str] | Mapping[str, Iterable[str]] | pd.DataFrame | None = None,
    *,
    key: str = "spexlvm",
    min_size: int = 5,
    max_size: int = 1000,
    absolute: bool = True,
    weight: float = 0.0,
    permutation_num: int = 1000,
    seed: int = 0,
    gene_symbols: str | None = None,
    case_sensitive: bool | None = None,
    key_added: str = KEY_ADDED,
) -> pd.DataFrame:
    """Which gene sets a factor's loadings are enriched in: GSEA prerank with gseapy.

    Ranks all genes by the factor's loadings (posterior means,
    ``varm[f"{key}_loadings"]``; by default their absolute values) and runs
    :func:`gseapy.prerank` on the ranking: for every set, the enrichment score (ES) says
    whether its genes sit at the top of the ranking (ES > 0) or at the bottom (ES < 0);
    NES normalises it by the set's size, and a gene permutation test gives p-values and
    FDR q-values. It answers two questions the annotation cannot:

    - what an unannotated factor (``sparse_1``, ``dense_1``) is about, e.g. against a
      larger collection than the one fitted;
    - which other gene sets an annotated factor resembles, e.g. after
      :func:`spexlvm.tl.refine` changed its genes, or when a set of the collection competes
      with it (:func:`spexlvm.tl.competing_sets`).

    Runs offline: gene sets are a GMT file, a dict or a long DataFrame (never an Enrichr
    library name); gseapy writes no files (``outdir=None``) and uses one thread.

    Parameters
    ----------
    %(adata_fitted)s
    factor
        The factor: full name, short name, name of a gene set merged into it, or position.
    absolute
        Rank genes by the absolute loading (the default): NES > 0 means the set's genes
        carry the factor's large loadings, in either direction (the genes of a pathway
        rarely all move the same way; :func:`spexlvm.tl.gene_set_test` uses absolute
        loadings too), and NES < 0 only that they carry fewer than chance. ``False``: rank
        by the signed loading; NES > 0 means the set's genes go up with the factor's score,
        NES < 0 that they go down (factors are oriented so that their own set's genes go
        up, or by a signed network's signs: see :func:`spexlvm.pp.add_gene_sets`).
    weight
        gseapy's weight of the ranking metric in the running sum. 0 (the default): the
        classic unweighted Kolmogorov-Smirnov statistic, only the genes' ranks count.
        1 (gseapy's default) weights each gene by its loading, so for a sparse factor a
        handful of the largest loadings decide every set's score. Chosen on synthetic
        data (``benchmarks/RESULTS.md``, "Enrichment of factor loadings"): with
        ``weight=1`` the planted set came first (FDR < 0.05) for 0-1 of 5 factors, with 0
        for 5 of 5, on each of 4 seeds.
    gene_sets
        Gene sets to test, as :func:`spexlvm.pp.add_gene_sets` accepts them (GMT path,
        ``{name: genes}`` such as :func:`spexlvm.datasets.gene_sets`, or a long DataFrame
        with ``source``/``target`` columns; a ``weight`` column is ignored here). ``None``:
        the gene sets of the fit's annotation (``varm[mask_key]``, decoys included: a decoy
        that comes out significant means the test is not calibrated on these data).
    %(key)s
    min_size, max_size
        Sets with fewer / more genes found in ``adata`` are skipped (gseapy's bounds).
    permutation_num
        Gene permutations of the test: the smallest p-value is about
        ``1 / permutation_num``.
    seed
        Seed of the permutations.
    gene_symbols
        Column of ``adata.var`` with the identifiers of the given sets (``None``:
        ``var_names``), as in :func:`spexlvm.pp.add_gene_sets`.
    case_sensitive
        As in :func:`spexlvm.pp.add_gene_sets`: ``None`` ignores case (with a warning) when
        that finds many more genes (mouse data, human sets).
    key_added
        The result goes to ``adata.uns[key][key_added][factor_name]``.

    Returns
    -------
    One row per tested set, most significant first (by FDR, then p-value, then ``|NES|``):
    ``term``, ``es``, ``nes``, ``pval`` (nominal), ``fdr`` (FDR q-value), ``n_genes`` (the
    set's genes found), ``lead_genes`` (the leading-edge genes, ``";"``-separated) and
    ``own`` (whether the set is the factor's own gene set). An h5ad-safe copy is stored in
    ``adata.uns[key][key_added][factor_name]`` (columns as arrays) together with
    ``params``; :func:`spexlvm.pl.enrichment` plots it.

    Notes
    -----
    The loadings of a sparse factor are close to 0 for most genes, so only the sets that
    share its few large loadings come out; that is what makes the test specific. The
    p-values come from permuting genes, so genes that move together (e.g. the whole
    annotated set of a factor) make them optimistic: read a small FDR as "ranked at the
    top", and compare with the decoy sets of the annotation (``gene_sets=None`` after
    :func:`spexlvm.pp.decoy_gene_sets`) for a calibrated call. For a signed network, the
    ``+1`` and ``-1`` targets of a set load in opposite directions; test them as two sets
    (e.g. ``TF_up`` / ``TF_down``) to see both.

    Examples
    --------
    >>> sets = spexlvm.datasets.gene_sets("reactome")  # doctest: +SKIP
    >>> spexlvm.tl.enrichment(adata, "sparse_1", sets)  # doctest: +SKIP
    >>> spexlvm.pl.enrichment(adata, "sparse_1", n_top=10)  # doctest: +SKIP
    """
    import gseapy

    from ..get._names import resolve_factor

    for name, value in (
        ("min_size", min_size),
        ("max_size", max_size),
        ("permutation_num", permutation_num),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) is smaller than min_size ({min_size}).")
    names = get_factor_names(adata, key)
    k = resolve_factor(adata, factor, key)
    fname = str(names[k])
    loadings = get_loadings(adata, key)[:, k]
    if absolute:
        loadings = np.abs(loadings)
    sets, source = _gene_sets_arg(adata, gene_sets, key)
    keys, matched = _match_sets(adata, sets, gene_symbols, case_sensitive)

    ranked = pd.Series(loadings, index=pd.Index(keys, dtype=object))
    ranked = ranked[ranked.index.notna() & np.isfinite(ranked.to_numpy())]
    ranked = ranked[~ranked.index.duplicated(keep="first")]
    sizes = {n: len(g) for n, g in matched.items()}
    testable = {n: g for n, g in matched.items() if min_size <= len(g) <= max_size}
    if not testable:
        largest = max(sizes.values(), default=0)
        raise ValueError(
            f"No gene set has between min_size={min_size} and max_size={max_size} genes found "
            f"in adata (the largest has {largest}): relax the bounds or check the "
            "identifiers (gene_symbols=, case_sensitive=)."
        )
    if np.ptp(ranked.to_numpy()) == 0:
        raise ValueError(
            f"Factor {fname!r} has the same loading for every gene (switched off?): "
            "nothing to rank."
        )
    res = gseapy.prerank(
        ranked.sort_values(ascending=False),
        testable,
        outdir=None,
        threads=1,
        permutation_num=int(permutation_num),
        seed=int(seed),
        min_size=int(min_size),
        max_size=int(max_size),
        no_plot=True,
        verbose=False,
        weight=float(weight),
    )
    table = res.res2d
    own = {fname} | {m for m, f in factor_aliases(adata, key).items() if f == fname}
    terms = table["Term"].astype(str)
    df = pd.DataFrame(
        {
            "term": terms.to_numpy(dtype=object),
            "es": pd.to_numeric(table["ES"]).to_numpy(dtype=np.float64),
            "nes": pd.to_numeric(table["NES"]).to_numpy(dtype=np.float64),
            "pval": pd.to_numeric(table["NOM p-val"]).to_numpy(dtype=np.float64),
            "fdr": pd.to_numeric(table["FDR q-val"]).to_numpy(dtype=np.float64),
            "n_genes": np.array([sizes.get(t, -1) for t in terms], dtype=np.int64),
            "lead_genes": table["Lead_genes"].fillna("").astype(str).to_numpy(dtype=object),
            "own": terms.isin(own).to_numpy(),
        }
    )
    order = np.lexsort((-np.abs(df["nes"].fillna(0)), df["pval"], df["fdr"]))
    df = df.iloc[order].reset_index(drop=True)
    results = get_results(adata, key)
    stored = results.get(key_added)
    if not isinstance(stored, dict):
        stored = {}
    entry = frame_to_uns(df, index=None)
    entry["params"] = {
        "factor": fname,
        "gene_sets": source,
        "min_size": int(min_size),
        "max_size": int(max_size),
        "permutation_num": int(permutation_num),
        "seed": int(seed),
        "absolute": bool(absolute),
        "weight": float(weight),
        "n_skipped": int(len(matched) - len(testable)),
    }
    stored[enrichment_entry_name(fname)] = entry
    store(adata, key, key_added, stored)
    n_sig = int((df["fdr"] < 0.05).sum())
    logger.info(
        "Enrichment of %r: %d of %d gene sets with FDR < 0.05 (%d skipped by size); "
        "stored in uns[%r][%r].",
        fname,
        n_sig,
        len(df),
        len(matched) - len(testable),
        key,
        key_added,
    )
    return df


def get_enrichment(
    adata: AnnData, factor: str | int, *, key: str = "spexlvm", key_added: str = KEY_ADDED
) -> pd.DataFrame:
    """The table :func:`enrichment` stored for a factor: :func:`spexlvm.get.enrichment`."""
    return _read_enrichment(adata, factor, key=key, result_key=key_added)
