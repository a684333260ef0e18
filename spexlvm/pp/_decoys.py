"""Decoy gene sets (random sets matched to real ones) and the one factor-membership mask.

Decoys are the null that every call of :mod:`spexlvm.tl` is calibrated against: a
decoy has the size of a real set and genes of the same expression variance, so that a
factor named after a decoy gets what any random set of that kind would get from the
prior and the data. Fitted beside the real sets (:func:`spexlvm.tl.decoy_check`), the
share of decoys called active, significant or refined is the false-positive rate of
those calls on the user's own data.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._utils import dense_chunks
from ._io import _as_gene_set_dict
from ._mask import get_mask

if TYPE_CHECKING:
    from anndata import AnnData

    from ._common import GeneSets

logger = logging.getLogger(__name__)

__all__ = ["DECOY_PREFIX", "decoy_gene_sets", "factor_membership", "is_decoy"]

#: Name prefix of decoy gene sets (``DECOY_1``, ``DECOY_2``, ...).
DECOY_PREFIX = "DECOY_"
#: Default number of variance bins genes are stratified into.
N_BINS = 20


def is_decoy(names: np.ndarray | list[str]) -> np.ndarray:
    """Which names are decoy gene sets (start with :data:`DECOY_PREFIX`)."""
    return np.asarray([str(n).startswith(DECOY_PREFIX) for n in names], dtype=bool)


def factor_membership(adata: AnnData, mask_key: str = KEYS.MASK) -> tuple[np.ndarray, np.ndarray]:
    """Which genes belong to each annotated factor: the one mask every step uses.

    The membership of gene ``g`` in factor ``k`` is the user's annotation
    ``adata.varm[mask_key]`` (written by :func:`spexlvm.pp.add_gene_sets`). The model's
    initialisation, the orientation of the factors, :func:`spexlvm.tl.refine`,
    :func:`spexlvm.tl.gene_set_test` and :func:`spexlvm.tl.active_factors` all read it
    here. When nested-set prior editing is on (``varm[mask_key + "_prior"]``), the prior
    gives a broad set's genes that a nested set also holds a narrow slab in the broad
    factor; that edits how strongly the prior believes in those genes, not which set
    they belong to. Membership stays the set the user gave, so that refinement reports
    changes against the user's sets and the tests test the user's sets.

    Parameters
    ----------
    adata
        Annotated data matrix.
    mask_key
        Key of the annotation in ``varm`` / ``uns``.

    Returns
    -------
    The boolean ``n_vars x A`` membership mask and the ``A`` set names.
    """
    return get_mask(adata, key=mask_key)


def _gene_variance(adata: AnnData, layer: str | None) -> np.ndarray:
    """NaN-aware variance of every gene of ``X`` or ``layers[layer]``."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in adata.layers ({list(adata.layers)}).")
    x = adata.X if layer is None else adata.layers[layer]
    n = np.zeros(adata.n_vars)
    s = np.zeros(adata.n_vars)
    ss = np.zeros(adata.n_vars)
    for _, block in dense_chunks(x, 2048, np.float64):
        finite = np.isfinite(block)
        values = np.where(finite, block, 0.0)
        n += finite.sum(0)
        s += values.sum(0)
        ss += (values * values).sum(0)
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    return np.clip(np.divide(ss, n, out=np.zeros_like(s), where=n > 0) - mean**2, 0.0, None)


def decoy_gene_sets(
    adata: AnnData,
    gene_sets: GeneSets | None = None,
    *,
    n: int = 30,
    seed: int = 0,
    layer: str | None = None,
    mask_key: str = KEYS.MASK,
    min_genes: int = 1,
    max_genes: int | None = None,
    n_bins: int = N_BINS,
    prefix: str = DECOY_PREFIX,
) -> dict[str, list[str]]:
    """Random gene sets matched in size and gene variance to real ones.

    Genes are put into ``n_bins`` bins of equal size by their variance across cells
    (expression variance, the quantity a factor model explains). Decoy ``i`` copies the
    size profile of a real set (the real sets taken in turn, in random order): for each
    of its genes, a gene is drawn without replacement from the same variance bin. A
    decoy therefore has as many genes as its template and a matched spread of
    variances, but no biology beyond chance.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised (the data that will be fitted).
    gene_sets
        The real sets (GMT path, dict, long DataFrame; only genes found in ``adata``
        count), or ``None`` to use the annotation in ``adata.varm[mask_key]``.
    n
        Number of decoys.
    seed
        Random seed.
    layer
        Layer whose variances stratify the genes (``None``: ``X``).
    mask_key
        Key of the annotation used when ``gene_sets`` is ``None``.
    min_genes, max_genes
        Only real sets with this many genes found serve as templates (use the bounds
        given to :func:`spexlvm.tl.fit`, so that no decoy is filtered out there).
    n_bins
        Number of variance bins (quantiles).
    prefix
        Name prefix; the decoys are ``f"{prefix}{i}"`` for ``i = 1..n``. Keep the default
        so that :mod:`spexlvm.tl` recognises them.

    Returns
    -------
    Decoy name -> genes (``adata.var_names``), ready for :func:`spexlvm.pp.add_gene_sets`
    together with the real sets (``{**real, **decoys}``).

    Examples
    --------
    >>> sets = spexlvm.datasets.gene_sets("hallmark")
    >>> decoys = spexlvm.pp.decoy_gene_sets(adata, sets, n=30)
    >>> spexlvm.tl.fit(adata, {**sets, **decoys}, n_dense=1)
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    genes = np.asarray(adata.var_names, dtype=str)
    pos = {g: i for i, g in enumerate(genes)}
    if gene_sets is None:
        mask, names = get_mask(adata, key=mask_key)
        decoy = is_decoy(names)
        real = [np.flatnonzero(mask[:, k]) for k in range(mask.shape[1]) if not decoy[k]]
    else:
        real = []
        for name, members in _as_gene_set_dict(gene_sets).items():
            if str(name).startswith(prefix):
                continue
            found = sorted({pos[g] for g in members if g in pos})
            if found:
                real.append(np.asarray(found, dtype=np.int64))
    upper = np.inf if max_genes is None else max_genes
    real = [r for r in real if min_genes <= r.size <= upper]
    if not real:
        raise ValueError(
            "No real gene set has between min_genes and max_genes genes in adata.var_names: "
            "decoys copy the sizes of real sets. Pass gene_sets with genes named as in "
            "adata.var_names (or relax min_genes / max_genes)."
        )
    var = _gene_variance(adata, layer)
    n_bins = int(min(n_bins, adata.n_vars))
    # quantile bins of equal size (rank-based: ties and zero-variance genes do not collapse)
    rank = np.argsort(np.argsort(var, kind="stable"), kind="stable")
    bins = (rank * n_bins) // adata.n_vars
    members_of = [np.flatnonzero(bins == b) for b in range(n_bins)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    decoys: dict[str, list[str]] = {}
    for i in range(int(n)):
        template = real[order[i % len(real)]]
        picked = []
        for b, count in zip(*np.unique(bins[template], return_counts=True), strict=True):
            pool = members_of[b]
            picked.append(rng.choice(pool, size=min(count, pool.size), replace=False))
        idx = np.sort(np.concatenate(picked))
        decoys[f"{prefix}{i + 1}"] = [str(g) for g in genes[idx]]
    logger.info(
        "%d decoy gene sets (sizes %d-%d), matched to %d real sets in %d variance bins.",
        len(decoys),
        min(len(v) for v in decoys.values()),
        max(len(v) for v in decoys.values()),
        len(real),
        n_bins,
    )
    return decoys
