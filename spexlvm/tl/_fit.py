"""Fit in one call (:func:`fit`) and write the results into AnnData (:func:`write_results`)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scvi

from .._constants import KEYS
from .._logging import sync_verbosity
from .._model import SpexLVM, quiet_lightning
from ..pp._gene_sets import NESTED, add_gene_sets
from ._competing import warn_competing

if TYPE_CHECKING:
    from anndata import AnnData

    from ..pp._gene_sets import GeneSets

logger = logging.getLogger(__name__)

__all__ = ["fit", "write_results"]


def fit(
    adata: AnnData,
    gene_sets: GeneSets | None = None,
    *,
    n_sparse: int = 0,
    n_dense: int = 0,
    prior_confidence: float = 0.99,
    layer: str | None = None,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    accelerator: str = "auto",
    seed: int = 0,
    min_genes: int = 1,
    max_genes: int | None = None,
    nested: Literal["keep", "merge", "resolve"] | None = NESTED,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    mask_key: str = KEYS.MASK,
    key_added: str = KEYS.UNS,
    copy: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    progress_bar: bool = True,
    **train_kwargs,
) -> SpexLVM:
    """Fit spex-LVM to log-normalised expression and write the factors into ``adata``.

    Runs :func:`spexlvm.pp.add_gene_sets` (when ``gene_sets`` is given),
    :meth:`SpexLVM.setup_anndata`, builds and trains :class:`~spexlvm.SpexLVM`, and writes
    the results with :func:`write_results`.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised expression in ``X`` or in ``layers[layer]`` (dense or
        sparse; NaN marks missing values). Genes are centred internally. ``X`` may stay on
        disk (``anndata.read_h5ad(path, backed="r")``, or a zarr / dask array): it is read
        in chunks, never whole (see :meth:`SpexLVM.train`).
    gene_sets
        A GMT path, a ``dict`` of set name -> genes, or a long DataFrame (decoupler's
        ``source`` / ``target``; the signs of a ``weight`` column orient the factors); see
        :func:`spexlvm.pp.add_gene_sets`. ``None`` uses the
        annotation already in ``adata.varm[mask_key]``.
    n_sparse
        Number of unannotated sparse factors.
    n_dense
        Number of unannotated dense factors.
    prior_confidence
        Confidence in the annotation, in (0, 1) (see :class:`~spexlvm.SpexLVM`).
    layer
        Layer to fit instead of ``X``.
    max_epochs
        Maximum number of epochs; ``None`` chooses from the data size (training stops
        earlier once the loadings have settled).
    batch_size
        Cells per minibatch; ``None`` chooses from the data size.
    accelerator
        ``"auto"`` (GPU when available), ``"cpu"`` or ``"gpu"``.
    seed
        Random seed: the same seed gives the same factors (on the same hardware).
    min_genes, max_genes
        Size bounds of the gene sets, counted in genes found in ``adata``.
    nested
        Nested and near-duplicate gene sets: ``"keep"`` (the default; ``None`` means the
        same) keeps every set whole, its own factor under its own name (the original
        prior). Options: ``"merge"`` merges a set into the set it lies in when it makes up
        at least half of it (one factor, named after all its members; any member's name
        finds it, see :func:`spexlvm.tl.factor_name`); ``"resolve"`` merges and also leaves
        a smaller nested set the genes it shares with its parent in the prior. See
        :func:`spexlvm.pp.add_gene_sets`.
    batch_key
        ``adata.obs`` column of the batch: a known effect on every gene, fitted as a fixed
        effect next to the factors (see :meth:`SpexLVM.setup_anndata`), so that no factor
        (dense or annotated) has to take it.
    categorical_covariate_keys
        Further categorical ``obs`` columns fitted as fixed effects (donor, sample, ...).
    continuous_covariate_keys
        Continuous ``obs`` columns fitted as fixed effects (log library size, percent
        mitochondrial reads, ...).
    mask_key
        Key of the annotation in ``varm`` / ``uns``.
    key_added
        Results go to ``obsm[f"X_{key_added}"]``, ``varm[f"{key_added}_loadings"]`` and
        ``uns[key_added]``.
    copy
        Work on a copy of ``adata``; the returned model's ``adata`` holds the results and
        the input is left untouched. Without it a view is first made an actual AnnData
        (like scanpy's functions do; the view's parent is left untouched).
    model_kwargs
        Further keyword arguments of :class:`~spexlvm.SpexLVM`.
    progress_bar
        Show a progress bar (epochs, the ELBO, the change of the loadings and the time
        left), as scvi-tools does. ``enable_progress_bar=`` (Lightning's name) is
        accepted too. Log lines follow :attr:`scanpy.settings.verbosity` (set it to
        ``"info"`` to see what the fit does step by step).
    **train_kwargs
        Further keyword arguments of :meth:`SpexLVM.train` (``lr``, ``early_stopping``,
        ``checkpoint_dir``, ``strategy``, ``devices``, ...).

    Returns
    -------
    The trained model. ``adata`` (or its copy, ``model.adata``) gains
    ``obsm["X_spexlvm"]`` (factor scores), ``varm["spexlvm_loadings"]`` (loadings) and
    ``uns["spexlvm"]`` (``factor_names``, ``r2``, ``params``; with covariates
    ``r2_covariates`` and ``varm["spexlvm_covariate_effects"]``), plus the annotation keys
    written by :func:`spexlvm.pp.add_gene_sets` and scvi-tools' set-up keys
    (``uns["_scvi_uuid"]``, ``uns["_scvi_manager_uuid"]``; with covariates also
    ``obs["_scvi_batch"]`` and ``obsm["_scvi_extra_categorical_covs"]`` /
    ``obsm["_scvi_extra_continuous_covs"]``, the encoded covariates).

    Warns (:class:`UserWarning`, once) when gene-set factors compete strongly: pairs of
    active factors whose sets overlap and that share at least half of their top genes;
    :func:`spexlvm.tl.competing_sets` lists them.

    Examples
    --------
    >>> import spexlvm
    >>> adata = spexlvm.datasets.pbmc68k_reduced()
    >>> model = spexlvm.tl.fit(adata, spexlvm.datasets.gene_sets("hallmark"), n_dense=1)
    >>> adata.obsm["X_spexlvm"].shape  # 49 hallmark sets found, each a factor, + 1 dense
    (700, 50)
    """
    sync_verbosity()
    if copy:
        if adata.isbacked:
            raise ValueError(
                "copy=True copies the AnnData into memory, but this one is backed (read with "
                "backed='r'): fit it without copy (results go into its obsm / varm / uns in "
                "memory; X stays on disk), or load it with `adata.to_memory()` first."
            )
        adata = adata.copy()
    elif adata.is_view:
        # as scanpy does: the view becomes an actual AnnData (its parent is not touched)
        logger.warning("adata is a view; making it an actual AnnData to write the results.")
        adata._init_as_actual(adata.copy())
    if gene_sets is not None:
        add_gene_sets(
            adata,
            gene_sets,
            key=mask_key,
            min_genes=min_genes,
            max_genes=max_genes,
            nested=nested,
        )
    with quiet_lightning():  # "Seed set to ..."
        scvi.settings.seed = seed
    SpexLVM.setup_anndata(
        adata,
        layer=layer,
        mask_key=mask_key,
        batch_key=batch_key,
        categorical_covariate_keys=categorical_covariate_keys,
        continuous_covariate_keys=continuous_covariate_keys,
    )
    model = SpexLVM(
        adata,
        n_sparse=n_sparse,
        n_dense=n_dense,
        prior_confidence=prior_confidence,
        **(model_kwargs or {}),
    )
    train_kwargs.setdefault("enable_progress_bar", progress_bar)
    model.train(
        max_epochs=max_epochs, batch_size=batch_size, accelerator=accelerator, **train_kwargs
    )
    write_results(model, adata, key_added=key_added, extra_params={"seed": seed})
    warn_competing(adata, key=key_added)
    return model


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
        gene-set annotation (``varm[mask_key]``, ``varm[mask_key + "_prior"]``, ``..._signs``,
        ``uns[mask_key]``) is copied in, so that every :mod:`spexlvm.tl` and
        :mod:`spexlvm.pl` function reads the new cells as it reads the training cells.
    key_added
        Writes ``obsm[f"X_{key_added}"]`` (float32, cells x factors),
        ``varm[f"{key_added}_loadings"]`` (float32, genes x factors, posterior means),
        ``varm[f"{key_added}_loadings_sd"]`` (their posterior standard deviations) and
        ``uns[key_added]``: ``factor_names`` (str array), ``r2`` (float array, per factor),
        ``r2_total``, ``n_annotated``, ``n_sparse``, ``n_dense``, ``factor_scale``
        (posterior median of each factor's scale; near zero = pruned), ``gene_mean`` and
        ``data_scale`` (the centring and scaling of the input), ``converged`` (whether
        the stopping rule fired before ``max_epochs``), ``params`` (settings,
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
    adata.obsm[f"X_{key_added}"] = factors.to_numpy(dtype=np.float32)
    adata.varm[f"{key_added}_loadings"] = loadings.to_numpy(dtype=np.float32)
    adata.varm[f"{key_added}_loadings_sd"] = model.get_loadings_sd().to_numpy(dtype=np.float32)
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
        "spexlvm_version": _version(),
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
        adata.varm[f"{key_added}_covariate_effects"] = effects.to_numpy(dtype=np.float32)
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
    for name in (mask_key, f"{mask_key}_prior", f"{mask_key}_signs"):
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


def _version() -> str:
    from .. import __version__

    return str(__version__)
