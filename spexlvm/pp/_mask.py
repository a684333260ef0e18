"""Reading the annotation back: the mask, the prior mask and the signs in ``adata.varm``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from anndata import AnnData

from .._constants import KEYS

__all__ = ["get_mask", "get_prior", "get_signs"]

#: Suffix of the ``varm`` key of the prior mask (the annotation after nested sets).
PRIOR_SUFFIX = "_prior"
#: Suffix of the ``varm`` key of the signs of a signed network (``weight`` column).
SIGNS_SUFFIX = "_signs"


def get_signs(adata: AnnData, mask: np.ndarray, key: str = KEYS.MASK) -> np.ndarray:
    """The signed membership of a signed network: ``+1`` / ``-1`` per member gene, else 0.

    :func:`add_gene_sets` writes ``adata.varm[key + "_signs"]`` when the gene sets came as a
    long DataFrame with a ``weight`` column (decoupler's CollecTRI, PROGENy, ...): the sign
    of each (set, gene) weight. Without it every member counts as ``+1``.
    :class:`~spexlvm.SpexLVM` orients every annotated factor so that the members' covariances
    with its score under the model (their loadings, plus what related sets' factors share
    with it when the scores' prior correlates them) times these signs sum to > 0: a
    positive score means the ``+1`` targets go up and the ``-1`` targets down.

    Parameters
    ----------
    adata
        Annotated data matrix.
    mask
        The mask returned by :func:`get_mask` for ``key``.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    ``n_vars x A`` float array: the signs on the mask, 0 elsewhere.

    Raises
    ------
    ValueError
        If the signs do not match the mask (out of date) or hold values other than -1, 0, 1.
    """
    unsigned = np.asarray(mask, dtype=np.float64)
    signs_key = f"{key}{SIGNS_SUFFIX}"
    if signs_key not in adata.varm:
        return unsigned
    signs = adata.varm[signs_key]
    signs = np.asarray(signs.toarray() if hasattr(signs, "toarray") else signs, dtype=np.float64)
    fix = "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
    if signs.shape != unsigned.shape:
        raise ValueError(
            f"adata.varm[{signs_key!r}] has shape {signs.shape}, the mask adata.varm[{key!r}] "
            f"{unsigned.shape}: the signs are out of date. {fix}"
        )
    if not np.isin(signs, (-1.0, 0.0, 1.0)).all():
        raise ValueError(f"adata.varm[{signs_key!r}] must hold -1, 0 or 1. {fix}")
    # members without a sign (e.g. added by hand) count as +1
    return np.where(unsigned > 0, np.where(signs == 0, 1.0, signs), 0.0)


def get_mask(adata: AnnData, key: str = KEYS.MASK) -> tuple[np.ndarray, np.ndarray]:
    """Gene-set mask and set names written by :func:`add_gene_sets`.

    Parameters
    ----------
    adata
        Annotated data matrix.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    The boolean ``n_vars x A`` mask and the ``A`` set names (str array, column order).

    Raises
    ------
    KeyError
        If ``adata`` has no mask under ``key``.
    ValueError
        If the mask and the names disagree (the mask is out of date) or the mask is not
        0/1.
    """
    if key not in adata.varm or key not in adata.uns:
        where = [f"adata.{a}[{key!r}]" for a in ("varm", "uns") if key not in getattr(adata, a)]
        raise KeyError(
            f"No gene-set mask: {' and '.join(where)} missing. Run "
            f"spexlvm.pp.add_gene_sets(adata, gene_sets, key={key!r}) first."
        )
    info = adata.uns[key]
    if not isinstance(info, Mapping) or "names" not in info:
        raise KeyError(
            f"adata.uns[{key!r}] has no 'names'; rerun spexlvm.pp.add_gene_sets(adata, ...)."
        )
    mask = adata.varm[key]
    if hasattr(mask, "toarray"):
        mask = mask.toarray()
    mask = np.asarray(mask)
    names = np.asarray(info["names"]).astype(str).reshape(-1)
    if mask.ndim != 2 or mask.shape[0] != adata.n_vars or mask.shape[1] != names.size:
        raise ValueError(
            f"adata.varm[{key!r}] has shape {mask.shape} but adata.uns[{key!r}]['names'] "
            f"has {names.size} names for {adata.n_vars} genes: the mask is out of date. "
            "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"adata.varm[{key!r}] must be boolean (or 0/1).")
        mask = mask.astype(bool)
    return mask, names


def get_prior(adata: AnnData, mask: np.ndarray, key: str = KEYS.MASK) -> np.ndarray:
    """The annotation as the model's prior uses it: ``varm[key + "_prior"]``, else the mask.

    :func:`add_gene_sets` writes the prior mask when larger sets leave the genes of sets
    nested in them to those (``nested="resolve"``). Values between 0 and 1 weaken the
    annotation of a gene (the slab width is ``clip(prior + 1 - prior_confidence, ..., 1)``).

    Parameters
    ----------
    adata
        Annotated data matrix.
    mask
        The mask returned by :func:`get_mask` for ``key``.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    ``n_vars x A`` array (bool, or float in [0, 1]); ``mask`` itself when there is no
    prior mask.

    Raises
    ------
    ValueError
        If the prior mask does not match the mask (out of date), holds values outside
        [0, 1], or annotates a gene the mask does not.
    """
    prior_key = f"{key}{PRIOR_SUFFIX}"
    if prior_key not in adata.varm:
        return mask
    prior = adata.varm[prior_key]
    prior = np.asarray(prior.toarray() if hasattr(prior, "toarray") else prior)
    fix = "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
    if prior.shape != mask.shape:
        raise ValueError(
            f"adata.varm[{prior_key!r}] has shape {prior.shape}, the mask "
            f"adata.varm[{key!r}] {mask.shape}: the prior mask is out of date. {fix}"
        )
    if prior.dtype != bool:
        prior = prior.astype(np.float64)
        if not np.all((prior >= 0.0) & (prior <= 1.0)):
            raise ValueError(f"adata.varm[{prior_key!r}] must lie in [0, 1]. {fix}")
    if np.any((prior != 0) & ~mask):
        raise ValueError(
            f"adata.varm[{prior_key!r}] annotates genes that adata.varm[{key!r}] does not. {fix}"
        )
    return prior
