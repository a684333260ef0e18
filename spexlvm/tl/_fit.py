"""Fit in one call (:func:`fit`) and write the results into AnnData (:func:`write_results`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import scvi

from .._constants import KEYS
from .._docs import docs
from .._logging import quiet_lightning, sync_verbosity
from .._model import SpexLVM
from ..get._write import write_results
from ..pp._gene_sets import NESTED, add_gene_sets
from ._competing import warn_competing

if TYPE_CHECKING:
    from anndata import AnnData

    from ..pp._gene_sets import GeneSets

logger = logging.getLogger(__name__)

__all__ = ["fit", "write_results"]


@docs.dedent
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
    return_model: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    progress_bar: bool = True,
    **train_kwargs,
) -> SpexLVM | AnnData | tuple[AnnData, SpexLVM]:
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
    %(accelerator)s
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
        Work on a copy of ``adata`` and return the copy with the results, as scanpy does;
        the input is left untouched. Without it a view is first made an actual AnnData
        (like scanpy's functions do; the view's parent is left untouched).
    return_model
        Also return the trained model. ``None`` (the default) returns the model when
        ``copy=False`` (the results are in ``adata``) and the AnnData copy when
        ``copy=True``; ``True`` with ``copy=True`` returns ``(adata_copy, model)``;
        ``False`` with ``copy=False`` returns ``None``.
    model_kwargs
        Further keyword arguments of :class:`~spexlvm.SpexLVM` (e.g. ``score_overlap``,
        the prior correlation of overlapping sets' scores; ``dense_prior``; ``slab_df``).
    progress_bar
        Show a progress bar (epochs, the ELBO, the change of the loadings and the time
        left), as scvi-tools does. ``enable_progress_bar=`` (Lightning's name) is
        accepted too. Log lines follow :attr:`scanpy.settings.verbosity` (set it to
        ``"info"`` to see what the fit does step by step).
    **train_kwargs
        Further keyword arguments of :meth:`SpexLVM.train` (``engine``: ``"cavi"``, the
        default, or ``"adam"``, ``lr``, ``early_stopping``, ``checkpoint_dir``, ``strategy``,
        ``devices``, ...).

    Returns
    -------
    The trained model (``copy=False``), or the fitted copy of ``adata`` (``copy=True``), or
    both (``copy=True, return_model=True``); see ``return_model``. ``adata`` (or its copy)
    gains
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
    # SpexLVM's arguments that tl.fit sets itself: model_kwargs must not name them again
    own = {"n_sparse": n_sparse, "n_dense": n_dense, "prior_confidence": prior_confidence}
    clash = sorted(own.keys() & set(model_kwargs or {}))
    if clash:
        raise ValueError(
            f"model_kwargs sets {', '.join(clash)}, which tl.fit takes itself: pass "
            + ", ".join(f"`tl.fit(..., {name}=...)`" for name in clash)
            + " instead."
        )
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
    model = SpexLVM(adata, **own, **(model_kwargs or {}))
    train_kwargs.setdefault("enable_progress_bar", progress_bar)
    model.train(
        max_epochs=max_epochs, batch_size=batch_size, accelerator=accelerator, **train_kwargs
    )
    write_results(model, adata, key_added=key_added, extra_params={"seed": seed})
    warn_competing(adata, key=key_added)
    if copy:
        return (adata, model) if return_model else adata
    return None if return_model is False else model
