"""Nested and near-duplicate gene sets: the containment graph, merging, ceding genes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._constants import KEYS
from .._utils import user_stacklevel
from ._mask import get_mask

__all__ = ["gene_set_overlaps"]

#: How nested gene sets are handled by default (see :func:`add_gene_sets`): every set
#: given is its own factor, under its own name.
NESTED = "keep"
_NESTED_MODES = ("keep", "merge", "resolve")
#: Separator of the member set names in the name of a merged factor.
MERGED_SEP = " + "
#: Default share of a set's genes inside a larger set from which it counts as nested.
NESTED_CONTAINMENT = 0.8
#: Default share of its parent's genes from which a nested set is merged into the parent.
MERGE_FRACTION = 0.5


def _shared_genes(mask: np.ndarray) -> sparse.csr_matrix:
    """Number of genes shared by every pair of mask columns (sparse, sets x sets).

    With a signed mask (+1 / -1 per member) each shared gene counts with the product of
    its two signs.
    """
    m = sparse.csc_matrix(mask.astype(np.int64))
    return (m.T @ m).tocsr()


def set_overlap(signs: np.ndarray) -> np.ndarray:
    """How much gene sets overlap: ``C_kl = sum_g s_gk s_gl / sqrt(n_k n_l)`` (sets x sets).

    ``s``: genes x sets, 1 / -1 for a member (its sign in a signed network), 0 otherwise;
    ``n_k``: members of set k. ``C`` is the correlation that the mean of set k's genes and
    the mean of set l's would have if every gene varied independently with unit variance;
    it is positive semi-definite with a unit diagonal (the prior correlation of the
    scores, ``SpexLVM(score_overlap=...)``).
    """
    shared = _shared_genes(np.asarray(signs)).toarray().astype(np.float64)
    norm = np.sqrt(np.maximum(np.diagonal(shared), 1.0))
    out = shared / np.outer(norm, norm)
    np.fill_diagonal(out, 1.0)
    return out


def _nested_pairs(
    mask: np.ndarray, containment: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (set, larger set) where the set lies mostly inside the larger one.

    A column ``j`` is nested in ``k`` when at least ``containment`` of its genes lie in
    ``k`` and ``k`` is larger (of two sets of the same size, the later one counts as nested
    in the earlier one). Returns the columns of the nested sets, of the larger sets and the
    numbers of shared genes, sorted by larger set, then nested set.
    """
    size = mask.sum(0)
    coo = _shared_genes(mask).tocoo()
    sub, sup, n_shared = coo.row, coo.col, coo.data
    larger = (size[sub] < size[sup]) | ((size[sub] == size[sup]) & (sub > sup))
    sel = larger & (n_shared > 0) & (n_shared >= containment * size[sub])
    order = np.lexsort((sub[sel], sup[sel]))
    return sub[sel][order], sup[sel][order], n_shared[sel][order].astype(np.int64)


def _resolve_nested(
    mask: np.ndarray, containment: float, fraction: float, cede: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Merge nested sets that make up most of a set, cede the genes of smaller ones.

    For every set, its *direct* parents are the larger sets it is nested in (see
    :func:`_nested_pairs`) that contain no other such set. A set with at least ``fraction``
    of the genes of a direct parent is merged into it (into the one it shares the highest
    Jaccard index with; chains merge up to the broadest set). With ``cede``, a direct
    parent that it is smaller than that leaves the set's genes to it: the parent's factor
    treats them as unannotated.

    Returns
    -------
    ``group``: the column every column is merged into (itself when not merged, always a
    column that is not merged itself); ``merged``: the mask with every group's genes in
    its column (``mask.shape``; columns of merged sets empty); ``prior``: ``merged``
    without the ceded genes; ``ceded``: (set, group) pairs whose shared genes the group
    left to the set.
    """
    n_sets = mask.shape[1]
    size = mask.sum(0)
    sub, sup, shared = _nested_pairs(mask, containment)
    n_shared = {(int(j), int(k)): int(n) for j, k, n in zip(sub, sup, shared, strict=True)}
    parents: dict[int, list[int]] = {}
    for j, k in n_shared:
        parents.setdefault(j, []).append(k)
    direct = {
        j: [k for k in ks if not any((m, k) in n_shared for m in ks if m != k)]
        for j, ks in parents.items()
    }
    into = np.arange(n_sets)
    for j, ks in direct.items():
        major = [k for k in ks if size[j] >= fraction * size[k]]
        if major:
            jaccard = [n_shared[j, k] / (size[j] + size[k] - n_shared[j, k]) for k in major]
            into[j] = major[int(np.argmax(jaccard))]
    group = into.copy()
    for j in range(n_sets):  # parents are larger (or earlier): chains end
        while group[group[j]] != group[j]:
            group[j] = group[group[j]]
    merged = np.zeros_like(mask)
    for j in range(n_sets):
        merged[:, group[j]] |= mask[:, j]
    prior = merged.copy()
    ceded: list[tuple[int, int]] = []
    if cede:
        for j, ks in sorted(direct.items()):
            for k in ks:
                if size[j] < fraction * size[k] and group[j] != group[k]:
                    prior[mask[:, j], group[k]] = False
                    ceded.append((j, int(group[k])))
    return group, merged, prior, ceded


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}.")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}.")


def gene_set_overlaps(
    adata: AnnData,
    key: str = KEYS.MASK,
    *,
    min_jaccard: float = 0.0,
    containment: float = NESTED_CONTAINMENT,
) -> pd.DataFrame:
    """Pairs of kept gene sets that share genes: their overlap and how they relate.

    Reads the annotation written by :func:`add_gene_sets` (after merging nested sets, when
    ``nested="merge"`` or ``"resolve"`` merged some).

    Parameters
    ----------
    adata
        AnnData annotated by :func:`add_gene_sets`.
    key
        Key given to :func:`add_gene_sets`.
    min_jaccard
        Only pairs with at least this Jaccard index.
    containment
        Share of the smaller set's genes inside the larger one from which the pair counts
        as ``"nested"``.

    Returns
    -------
    One row per pair, sorted by decreasing Jaccard index: ``set_a`` and ``set_b`` (``set_a``
    the smaller, or the later of two sets of the same size), ``n_a``, ``n_b`` (genes found),
    ``n_shared``, ``jaccard`` (shared / union), ``containment`` (shared / ``n_a``) and
    ``relation``: ``"nested"`` (at least ``containment`` of ``set_a`` lies inside
    ``set_b``; for sets of the same size: near-duplicates) or ``"overlap"``.

    Examples
    --------
    >>> spexlvm.pp.add_gene_sets(adata, spexlvm.datasets.gene_sets("reactome"))  # doctest: +SKIP
    >>> spexlvm.pp.gene_set_overlaps(adata, min_jaccard=0.5)  # doctest: +SKIP
    """
    mask, names = get_mask(adata, key)
    size = mask.sum(0).astype(np.int64)
    coo = sparse.triu(_shared_genes(mask), k=1).tocoo()
    i, j, n_shared = coo.row, coo.col, coo.data.astype(np.int64)
    keep = n_shared > 0
    i, j, n_shared = i[keep], j[keep], n_shared[keep]
    swap = size[j] <= size[i]  # set_a: the smaller, or the later of two of the same size
    a, b = np.where(swap, j, i), np.where(swap, i, j)
    jac = n_shared / (size[a] + size[b] - n_shared)
    cont = n_shared / np.maximum(size[a], 1)
    df = pd.DataFrame(
        {
            "set_a": names[a].astype(object),
            "set_b": names[b].astype(object),
            "n_a": size[a],
            "n_b": size[b],
            "n_shared": n_shared,
            "jaccard": jac,
            "containment": cont,
            "relation": np.where(cont >= containment, "nested", "overlap"),
        }
    )
    df = df[df["jaccard"] >= min_jaccard]
    return df.sort_values(["jaccard", "n_shared"], ascending=False, kind="stable").reset_index(
        drop=True
    )


def _warn_merged(merged_rows: dict[str, list], nested: str) -> None:
    """One :class:`UserWarning` naming what merged into what, and how to keep sets apart."""
    groups: dict[str, list[str]] = {}
    for name, into in zip(merged_rows["name"], merged_rows["into"], strict=True):
        groups.setdefault(into, []).append(name)
    n_show = 3
    shown = "; ".join(
        f"{', '.join(repr(m) for m in members)} into {into!r}"
        for into, members in list(groups.items())[:n_show]
    )
    if len(groups) > n_show:
        shown += f"; and {len(groups) - n_show} more"
    example = merged_rows["name"][0]
    warnings.warn(
        f"nested={nested!r} merged {len(merged_rows['name'])} gene set(s) that make up most "
        f"of a set they lie in (or duplicate it) into {len(groups)} factor(s): {shown}. A "
        "merged factor is named after all its members, the larger set first "
        f"({merged_rows['factor'][0]!r}), and any member's name finds it "
        f"(spexlvm.tl.factor_name(adata, {example!r}), and every spexlvm.pl / spexlvm.tl "
        "function that takes factor names); adata.uns[key]['merged'] lists every merge. "
        "To keep every gene set its own factor, pass nested='keep' (the default).",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
