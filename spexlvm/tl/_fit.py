"""Fit in one call (:func:`fit`) and write the results into AnnData (:func:`write_results`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scvi

from .._constants import KEYS
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
    mask_key: str = KEYS.MASK,
    key_added: str = KEYS.UNS,
    copy: bool = False,
    model_kwargs: dict[str, Any] | None = None,
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
        ``source`` / ``target``); see :func:`spexlvm.pp.add_gene_sets`. ``None`` uses the
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
    **train_kwargs
        Further keyword arguments of :meth:`SpexLVM.train` (``lr``, ``early_stopping``,
        ``checkpoint_dir``, ``strategy``, ``devices``, ...).

    Returns
    -------
    The trained model. ``adata`` (or its copy, ``model.adata``) gains
    ``obsm["X_spexlvm"]`` (factor scores), ``varm["spexlvm_loadings"]`` (loadings) and
    ``uns["spexlvm"]`` (``factor_names``, ``r2``, ``params``), plus the annotation keys
    written by :func:`spexlvm.pp.add_gene_sets` and scvi-tools' set-up keys
    (``uns["_scvi_uuid"]``, ``uns["_scvi_manager_uuid"]``).

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
    SpexLVM.setup_anndata(adata, layer=layer, mask_key=mask_key)
    model = SpexLVM(
        adata,
        n_sparse=n_sparse,
        n_dense=n_dense,
        prior_confidence=prior_confidence,
        **(model_kwargs or {}),
    )
    train_kwargs.setdefault("enable_progress_bar", logger.getEffectiveLevel() <= logging.INFO)
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
        projected when they are not the training cells.
    key_added
        Writes ``obsm[f"X_{key_added}"]`` (float32, cells x factors),
        ``varm[f"{key_added}_loadings"]`` (float32, genes x factors, posterior means),
        ``varm[f"{key_added}_loadings_sd"]`` (their posterior standard deviations) and
        ``uns[key_added]``: ``factor_names`` (str array), ``r2`` (float array, per factor),
        ``r2_total``, ``n_annotated``, ``n_sparse``, ``n_dense``, ``factor_scale``
        (posterior median of each factor's scale; near zero = pruned), ``gene_mean`` and
        ``data_scale`` (the centring and scaling of the input), ``params`` (settings) and
        ``history`` (ELBO per epoch). Everything survives ``write_h5ad``.
    extra_params
        Further entries of ``params`` (str, int, float or bool values).
    """
    adata = model.adata if adata is None else adata
    factors = model.get_factors(adata)
    loadings = model.get_loadings()
    r2 = model.get_r2(adata)
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
        "n_epochs": len(elbo) if elbo is not None else 0,
        "converged": bool(getattr(model, "converged_", False)),
        "spexlvm_version": _version(),
    }
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
        "params": params,
        "history": {
            "elbo_train": np.asarray(elbo, dtype=np.float64).ravel()
            if elbo is not None
            else np.zeros(0)
        },
    }
    logger.info(
        "Wrote obsm[%r], varm[%r] and uns[%r]: %d factors, total R2 %.3f.",
        f"X_{key_added}",
        f"{key_added}_loadings",
        key_added,
        len(model.factor_names),
        r2.attrs["total"],
    )


def _version() -> str:
    from .. import __version__

    return str(__version__)
