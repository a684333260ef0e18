"""Project new cells onto a fitted model's factors, without retraining."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from ..get._write import write_projection  # one writer for fitted and projected cells

if TYPE_CHECKING:
    from anndata import AnnData

    from .._model import SpexLVM

logger = logging.getLogger(__name__)

__all__ = ["project"]


def _check_genes(model: SpexLVM, adata_new: AnnData) -> None:
    train = model.adata.var_names
    new = adata_new.var_names
    if len(train) == len(new) and bool((train == new).all()):
        return
    missing = train.difference(new, sort=False)
    if len(missing):
        shown = ", ".join(repr(g) for g in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"adata_new lacks {len(missing)} of the model's {len(train)} genes: {shown}{more}. "
            "Projection needs every training gene; add them (e.g. as zeros or NaN for "
            "missing values) and subset/reorder with `adata_new[:, model.adata.var_names]`."
        )
    raise ValueError(
        "adata_new has the model's genes but in another order or with extra genes; "
        "subset/reorder with `adata_new[:, model.adata.var_names]` (then .copy())."
    )


def project(
    model: SpexLVM,
    adata_new: AnnData,
    *,
    key: str = "spexlvm",
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Scores of new cells on a fitted model's factors, without retraining.

    Uses the learned loadings, noise and centring (:meth:`spexlvm.SpexLVM.get_factors`):
    each cell's scores are the posterior mean given its (observed) expression. Projecting
    the training cells reproduces their fitted scores.

    Parameters
    ----------
    model
        A trained :class:`~spexlvm.SpexLVM` (e.g. returned by :func:`spexlvm.tl.fit`).
    adata_new
        Cells x genes with exactly the model's genes, in its order, and the same
        normalisation (and layer) as the training data.
    key
        Writes what :func:`spexlvm.tl.write_results` writes for a fit (the same schema:
        ``adata_new.obsm[f"X_{key}"]``, ``varm[f"{key}_loadings"]`` and ``_loadings_sd``,
        ``uns[key]`` with ``r2`` measured on the new cells, ``factor_scale``,
        ``gene_mean``, ``data_scale``, ``params`` with ``projected=True``, ``history``),
        the model's gene-set annotation, and ``uns[key]["project"]`` (mean and sd of each
        factor's scores, ``n_obs``), so that every :mod:`spexlvm.tl` and :mod:`spexlvm.pl`
        function works on the new cells. An earlier ``uns[key]`` of ``adata_new`` is
        replaced.
    batch_size
        Cells per minibatch.

    Returns
    -------
    Cells x factors scores, columns named by the model's factors.

    Raises
    ------
    ValueError
        When the genes do not match the model's (the missing genes are named).
    """
    _check_genes(model, adata_new)
    scores = write_projection(model, adata_new, key_added=key, batch_size=batch_size)
    logger.info("Projected %d cells onto %d factors.", adata_new.n_obs, scores.shape[1])
    return scores
