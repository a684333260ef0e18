"""The one writer of a fit's results into AnnData: :func:`write_results`.

:func:`spexlvm.tl.fit` and :func:`spexlvm.tl.project` both write through it, so fitted
and projected cells have the same keys (see :func:`spexlvm.get.key_table`).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from .._utils import package_version
from ._results import covariate_effects_key, frame_to_uns, loadings_key, prior_key, scores_key

if TYPE_CHECKING:
    from anndata import AnnData

    from .._model import SpexLVM

logger = logging.getLogger(__name__)

__all__ = ["write_results"]


def write_results(
    model: SpexLVM,
    adata: AnnData | None = None,
    *,
    key_added: str = KEYS.UNS,
    extra_params: dict[str, Any] | None = None,
) -> None:
    """Write a trained model's factors, loadings and summary into an AnnData.

    Parameters
    ----------
    model
        A trained :class:`~spexlvm.SpexLVM`.
    adata
        AnnData with the model's genes; defaults to the training data. Its cells are
        projected when they are not the training cells (:func:`spexlvm.tl.project` writes
        through this function): ``r2`` is then measured on these cells,
        ``params["projected"]`` is ``True``, the settings of the fit (``seed``, ...) are
        copied from the training data's ``uns[key_added]["params"]``, and the model's
        gene-set annotation (``varm[mask_key]``, ``varm[mask_key + "_prior"]``,
        ``varm[mask_key + "_signs"]``, ``uns[mask_key]``) is copied in, so that every
        :mod:`spexlvm.tl` and :mod:`spexlvm.pl` function reads the new cells as it reads
        the training cells.
    key_added
        Writes ``obsm[f"X_{key_added}"]`` (float32, cells x factors),
        ``varm[f"{key_added}_loadings"]`` (float32, genes x factors, posterior means),
        ``varm[f"{key_added}_loadings_sd"]`` (their posterior standard deviations) and
        ``uns[key_added]``: ``factor_names`` (str array), ``r2`` (float array, per factor),
        ``r2_total``, ``n_annotated``, ``n_sparse``, ``n_dense``, ``factor_scale``
        (posterior median of each factor's scale; near zero = pruned), ``score_var``
        (each factor's posterior variance of the scores, mean over the cells), ``gene_mean`` and
        ``data_scale`` (the centring and scaling of the input), ``converged`` (whether
        the stopping rule fired before ``max_epochs``), ``params`` (settings, ``engine``
        (the inference engine of :meth:`SpexLVM.train`),
        ``projected``: whether the cells were projected) and ``history`` (ELBO per epoch
        of the fit, ``elbo_train``, and the largest per-factor change that the stopping
        rule measured, ``loadings_change``). With known covariates
        (``setup_anndata(batch_key=..., ...)``) also
        ``varm[f"{key_added}_covariate_effects"]`` (genes x design columns, input units,
        :meth:`SpexLVM.get_covariate_effects`), and in ``uns[key_added]``
        ``covariate_names`` (the design columns; ``covariate_keys``, ``covariate_levels``,
        ``covariate_continuous`` and ``covariate_centre`` rebuild the design from ``obs``,
        see :func:`spexlvm.tl.impute`), ``r2_covariates`` (dict: R² of each
        covariate key, next to the factors' ``r2``) and ``r2_factors_total`` (R² of the
        factors together on what the covariates leave). Everything survives ``write_h5ad``.
    extra_params
        Further entries of ``params`` (str, int, float or bool values).
    """
    _write_results(model, adata, key_added=key_added, extra_params=extra_params)


def _write_results(
    model: SpexLVM,
    adata: AnnData | None = None,
    *,
    key_added: str = KEYS.UNS,
    extra_params: dict[str, Any] | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """:func:`write_results` (the one writer of fits and projections); returns the scores."""
    adata = model.adata if adata is None else adata
    projected = adata is not model.adata
    factors = model.get_factors(adata, batch_size=batch_size)
    loadings = model.get_loadings()
    r2 = model.get_r2(adata, batch_size=batch_size)
    adata.obsm[scores_key(key_added)] = factors.to_numpy(dtype=np.float32)
    adata.varm[loadings_key(key_added)] = loadings.to_numpy(dtype=np.float32)
    sd = model.get_loadings_sd().to_numpy(dtype=np.float32)
    adata.varm[loadings_key(key_added, sd=True)] = sd
    scales = model.get_factor_scales()
    setup = model.adata_manager.registry["setup_args"]
    history = model.history_ or {}
    elbo = history.get("elbo_train")
    params: dict[str, Any] = {
        "n_sparse": int(model.n_sparse),
        "n_dense": int(model.n_dense),
        "prior_confidence": float(model.prior_confidence),
        "layer": setup.get("layer") or "",
        "mask_key": setup["mask_key"],
        **_covariate_params(setup),
        "n_epochs": len(elbo) if elbo is not None else 0,
        "converged": bool(getattr(model, "converged_", False)),
        "engine": str(getattr(model, "engine_", "adam")),
        # rho of the scores' prior (SpexLVM(score_overlap=...)): as fitted when learned
        "score_overlap": float(model.module.score_overlap().detach()),
        "learn_score_overlap": bool(model.module.learn_score_overlap),
        "score_overlap_max": float(model.module.score_overlap_max),
        "score_overlap_basis": str(
            model.init_params_["non_kwargs"].get("score_overlap_basis", "genes")
        ),
        "shared_local_scale": bool(getattr(model.module, "_shared_scale", False)),
        "spexlvm_version": package_version(),
    }
    params["projected"] = projected
    if projected:
        # the settings of the fit that only the training data knows (seed, ...)
        trained = model.adata.uns.get(key_added)
        fitted = trained.get("params") if isinstance(trained, dict) else None
        if isinstance(fitted, dict):
            params = {**fitted, **params}
        _copy_annotation(model, adata, setup["mask_key"])
    params.update(extra_params or {})
    adata.uns[key_added] = {
        "factor_names": np.asarray(model.factor_names, dtype=str),
        "r2": r2.to_numpy(dtype=np.float64),
        "r2_total": float(r2.attrs["total"]),
        "n_annotated": len(model.gene_set_names_),
        "n_sparse": int(model.n_sparse),
        "n_dense": int(model.n_dense),
        "factor_scale": scales["median"].to_numpy(dtype=np.float64),
        "score_var": np.asarray(r2.attrs["score_var"], dtype=np.float64),
        "gene_mean": model.module.gene_mean.detach().cpu().numpy().astype(np.float64),
        "data_scale": float(model.module.data_scale),
        "converged": bool(getattr(model, "converged_", False)),
        "params": params,
        "history": {
            "loadings_change": np.asarray(getattr(model, "convergence_", []) or [], dtype=float),
            "elbo_train": np.asarray(elbo, dtype=np.float64).ravel()
            if elbo is not None
            else np.zeros(0),
        },
    }
    if len(model.covariate_names_):
        effects = model.get_covariate_effects()
        adata.varm[covariate_effects_key(key_added)] = effects.to_numpy(dtype=np.float32)
        n_cont = model.module.n_continuous
        adata.uns[key_added].update(
            covariate_names=np.asarray(model.covariate_names_, dtype=str),
            covariate_keys=np.asarray(model.covariate_keys_, dtype=str),
            covariate_levels=np.asarray(model.covariate_levels_, dtype=str),
            covariate_continuous=np.arange(len(model.covariate_names_))
            >= len(model.covariate_names_) - n_cont,
            covariate_centre=model.module.cov_centre.detach().cpu().numpy().astype(np.float64),
        )
        adata.uns[key_added]["r2_covariates"] = {
            str(k): float(v) for k, v in r2.attrs["covariates"].items()
        }
        adata.uns[key_added]["r2_factors_total"] = float(r2.attrs["factors_total"])
    logger.info(
        "Wrote obsm[%r], varm[%r] and uns[%r]: %d factors, total R2 %.3f.",
        f"X_{key_added}",
        f"{key_added}_loadings",
        key_added,
        len(model.factor_names),
        r2.attrs["total"],
    )
    return factors


def _copy_annotation(model: SpexLVM, adata: AnnData, mask_key: str) -> None:
    """The model's gene-set annotation into ``adata`` (same genes, same order)."""
    source = model.adata
    for name in (mask_key, prior_key(mask_key), f"{mask_key}_signs"):
        if name in source.varm:
            adata.varm[name] = np.array(source.varm[name], copy=True)
    if isinstance(source.uns.get(mask_key), dict):
        adata.uns[mask_key] = copy.deepcopy(source.uns[mask_key])


def _covariate_params(setup: dict[str, Any]) -> dict[str, Any]:
    """The covariate keys of the set-up, as h5ad-safe ``params`` entries (none if unset)."""
    out: dict[str, Any] = {}
    if setup.get("batch_key") is not None:
        out["batch_key"] = str(setup["batch_key"])
    for name in ("categorical_covariate_keys", "continuous_covariate_keys"):
        if setup.get(name):
            out[name] = np.asarray(setup[name], dtype=str)
    return out


def write_projection(
    model: SpexLVM, adata: AnnData, *, key_added: str = KEYS.UNS, batch_size: int | None = None
) -> pd.DataFrame:
    """What :func:`write_results` writes for new cells, and ``uns[key_added]["project"]``.

    The summary holds the mean and sd of each factor's scores and ``n_obs``. Returns the
    scores (cells x factors).
    """
    scores = _write_results(model, adata, key_added=key_added, batch_size=batch_size)
    summary = scores.describe().T[["mean", "std"]]
    entry = frame_to_uns(summary, index="factor")
    entry["n_obs"] = int(adata.n_obs)
    adata.uns[key_added]["project"] = entry
    return scores
