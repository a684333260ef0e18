"""Project new cells onto a fitted model's factors, without retraining."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._utils import frame_to_uns

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
        Writes ``adata_new.obsm[f"X_{key}"]`` (float32), ``adata_new.varm[f"{key}_loadings"]``
        and ``adata_new.uns[key]`` (``factor_names``, ``gene_mean``, ``n_annotated``,
        ``n_sparse``, ``n_dense``, ``params`` with the layer, ``project``), so that the
        other tools (e.g. :func:`spexlvm.tl.auroc`) work on the new cells.
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
    scores = model.get_factors(adata_new, batch_size=batch_size)
    adata_new.obsm[f"X_{key}"] = scores.to_numpy(dtype=np.float32)
    adata_new.varm[f"{key}_loadings"] = model.get_loadings().to_numpy(dtype=np.float32)
    adata_new.varm[f"{key}_loadings_sd"] = model.get_loadings_sd().to_numpy(dtype=np.float32)
    setup = model.adata_manager.registry["setup_args"]
    uns = adata_new.uns.get(key)
    if not isinstance(uns, dict):
        uns = {}
    uns.update(
        factor_names=np.asarray(model.factor_names, dtype=str),
        gene_mean=model.module.gene_mean.detach().cpu().numpy().astype(np.float64),
        data_scale=float(model.module.data_scale),
        n_annotated=len(model.gene_set_names_),
        n_sparse=int(model.n_sparse),
        n_dense=int(model.n_dense),
        factor_scale=model.get_factor_scales()["median"].to_numpy(dtype=np.float64),
    )
    params = uns.get("params") if isinstance(uns.get("params"), dict) else {}
    params.update(layer=setup.get("layer") or "", mask_key=str(setup["mask_key"]))
    uns["params"] = params
    summary = scores.describe().T[["mean", "std"]]
    uns["project"] = frame_to_uns(summary, index="factor")
    uns["project"]["n_obs"] = int(adata_new.n_obs)
    adata_new.uns[key] = uns
    logger.info("Projected %d cells onto %d factors.", adata_new.n_obs, scores.shape[1])
    return scores
