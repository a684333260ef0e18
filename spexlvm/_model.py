"""The user-facing model class :class:`SpexLVM` (AnnData in, factors out)."""

from __future__ import annotations

import contextvars
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyro
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)
from scvi.model.base import BaseModelClass, PyroSviTrainMixin
from scvi.utils import setup_anndata_dsp

from ._constants import (
    DEFAULT_ENGINE,
    DENSE_PREFIX,
    KEYS,
    REGISTRY_KEYS,
    SCORE_OVERLAP_MAX,
    SPARSE_PREFIX,
)
from ._data import RowReader, SpexLVMDataModule, obs_fields
from ._docs import docs
from ._init import covariate_encoding, initial_loadings
from ._inputs import (
    check_annotation,
    check_covariate_columns,
    default_batch_size,
    gene_statistics,
    key_list,
)
from ._logging import quiet_lightning, sync_verbosity
from ._module import SpexLVMModule
from ._r2 import R2Accumulator
from ._utils import package_version as _package_version
from ._utils import user_stacklevel
from .pp._decoys import factor_membership
from .pp._mask import get_prior, get_signs
from .pp._nested import set_overlap
from .train import CAVITrainingPlan, SpexLVMTrainingPlan, TrainingRun, schedule
from .train._checkpoint import digest
from .train._run import is_rank_zero

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from lightning.pytorch.strategies import Strategy

logger = logging.getLogger(__name__)

# set by SpexLVM.load while scvi rebuilds the model: the saved gene-set names, so that the
# constructor does not need the annotation in adata.varm (the state dict restores it)
_LOADING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("_LOADING", default=None)

#: Floor of the slab width, so that log(slab) stays finite.
_MIN_SLAB = 1e-4


def _check_version(saved: str, dir_path: str) -> None:
    """Refuse a model saved by a newer spexlvm (its state may not mean the same here)."""

    def parts(v: str) -> tuple[int, ...]:
        out = []
        for piece in v.split("+")[0].split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)

    current = _package_version()
    if parts(saved) > parts(current):
        raise ValueError(
            f"The model in {dir_path!r} was saved by spexlvm {saved}, newer than the installed "
            f"{current}. Upgrade spexlvm (`pip install -U spexlvm`) to load it."
        )


def _mask(values: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    """``values`` with the missing entries set to 0 (``observed``: 1 observed, 0 missing)."""
    return values if observed is None else values * observed


class SpexLVM(PyroSviTrainMixin, BaseModelClass):
    """spex-LVM: factor analysis with factors named after gene sets.

    One factor per gene set in ``adata.varm[mask_key]`` (written by
    :func:`spexlvm.pp.add_gene_sets`), plus ``n_sparse`` unannotated sparse and ``n_dense``
    unannotated dense factors, in this order. The loadings have a regularised horseshoe
    prior whose slab widths encode the annotation (paper section 2; dense factors have a
    Gaussian prior, below); inference is variational with a closed-form ELBO, by coordinate
    ascent over minibatches of cells (default) or stochastic gradient steps
    (:meth:`train`'s ``engine``).

    Dense factors are for what no gene set explains: effects spread over many genes, small
    on each (technical variation). Their loadings have a Gaussian g-prior scaled by each
    gene's noise, ``w_gd ~ N(0, dense_g * sigma_g^2 / n_cells)``: the prior variance of a
    dense loading is ``dense_g`` times the variance with which ``n_cells`` cells measure
    it. A dense factor therefore keeps a share ``dense_g / (1 + dense_g)`` of any gene's
    effect (10/11 by default) and gains that share of the fit, whatever the number of cells
    and the scale of the data; an annotated factor that can explain the same gene keeps it
    (its horseshoe barely shrinks large effects), so a pathway's genes stay with the
    pathway even when its signal runs along the data's largest axis. A broad technical
    effect, which no gene set's factor can explain on every gene, stays with the dense
    factor. spexlvm 0.1's prior (``dense_prior="ard"``: ``N(0, (factor_scale *
    dense_slab)^2)`` with a learned factor scale) lets a dense factor take the largest axis
    of variation with every gene on it, pathways included. Measured in
    ``benchmarks/RESULTS.md`` ("Dense factors"); see the architecture page.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`, holding log-normalised expression.
    n_sparse
        Number of unannotated sparse factors.
    n_dense
        Number of unannotated dense factors (technical effects that touch most genes).
    prior_confidence
        Confidence in the annotation, in (0, 1): the slab width of an unannotated gene in
        an annotated factor is ``1 - prior_confidence``. 0.99 - 0.999 work well; lower
        values let the factors drift away from their gene sets. Genes that a broad gene
        set leaves to a set nested in it (``adata.varm[mask_key + "_prior"]``, see
        :func:`spexlvm.pp.add_gene_sets`) count as unannotated in the broad set's factor.
    sparse_slab
        Slab width of every gene in the sparse unannotated factors.
    dense_slab
        With ``dense_prior="ard"``: prior scale of the dense factors' loadings, times the
        factor scale, ``N(0, (factor_scale * dense_slab)^2)``; with ``"diffuse"`` divided by
        the square root of the number of genes. Unused by ``"gprior"``.
    dense_prior
        Prior of the dense factors' loadings: ``"gprior"`` (default),
        ``N(0, dense_g * sigma_g^2 / n_cells)`` with ``sigma_g^2`` the gene's noise
        variance (a latent variable of the model); ``"ard"`` (spexlvm 0.1) or
        ``"diffuse"``, a Gaussian with a learned per-factor scale (see ``dense_slab``).
    dense_g
        The ``g`` of the g-prior: a dense factor keeps ``g / (1 + g)`` of a gene's effect.
        Larger values let dense factors compete with gene sets for their genes (``g -> inf``
        behaves like ``"ard"``), smaller ones leave broad technical effects to whichever
        gene set's factor can reach them (``g = 1`` did so on synthetic data).
    dense_annotated
        Factor on the dense prior's scale for genes that some gene set holds (1: none).
        Values below 1 keep dense factors off annotated genes; measured, not recommended
        (broad technical effects then go to gene sets' factors).
    slab_df
        Degrees of freedom of the slab of the regularised horseshoe:
        ``c_aux ~ InverseGamma(slab_df / 2, slab_df / 2)``, so a loading's slab is a
        Student-t with ``slab_df`` degrees of freedom and the slab width as its scale.
        1 (default; the paper's and MuVI's Cauchy slab) lets the data override the
        annotation freely; larger values make the slab widths bind (4 is rstanarm's
        default). Measured in ``benchmarks/RESULTS.md`` ("Overlapping gene sets"): larger
        values help a specific set keep its genes against broad overlapping sets without
        a dense factor, but move variance into dense factors; not the default.
    noise_prior
        Shape and rate of the Gamma prior on the per-gene noise precision.
    covariate_prior_scale
        Standard deviation of the Gaussian prior ``N(0, s^2)`` of the effects of the known
        covariates registered with :meth:`setup_anndata` (``batch_key``, ...), on the
        model's scale (centred input divided by its overall standard deviation): broad.
    score_overlap
        ``rho`` in [0, 1): how strongly the scores of related gene sets are correlated a
        priori. The cell scores have the prior ``N(0, R)``, ``R = (1 - rho) I + rho C`` on
        the annotated factors (unannotated factors stay independent), with ``C`` set by
        ``score_overlap_basis``. Without it (0, the paper's independent scores) the
        horseshoe gives each gene that several sets hold to one set's factor and the
        other factors keep only a residual: near-duplicate signatures of one cell type
        then mark it in one factor only, and a specific set (MHC class II antigen
        presentation) loses its genes to the broad sets that contain them. With
        ``learn_score_overlap`` (the default) this is where ``rho`` starts (0.3); without
        it, ``rho`` stays at this value.
    score_overlap_basis
        ``C`` of ``score_overlap``'s prior. ``"data"`` (default): the correlation over
        cells of the sets' mean expression (the score of ``sc.tl.score_genes`` without
        control genes; signed by a signed network; after the known covariates; from the
        cells the initialisation samples, at most 1,000): an empirical-Bayes prior, fixed
        before training, under which sets whose genes move together in these data have
        related scores, whether or not they share genes. ``"exclusive"``: the same, but two
        sets that share genes are compared on the genes they do not share (a set nested in
        another: against the rest of the larger set), so that shared genes alone do not
        relate them; measured, not the default: at ``score_overlap=0.9`` it halved the
        shortfall of near-duplicate C8 signatures but cost Reactome's nested sets on PBMC
        and mESC (``benchmarks/RESULTS.md``, "Related sets compared on the genes they do
        not share"). ``"genes"``: the correlation the
        sets' means would have if every gene varied independently (shared genes over
        ``sqrt(n_k n_l)``): only sets that share genes are related.
    learn_score_overlap
        Learn ``rho`` by maximising the ELBO (empirical Bayes, one number for the whole
        model), starting from ``score_overlap``: the data decide how strongly related
        sets' scores are correlated. Default ``True``, chosen on PBMC with overlapping C8
        cell-type signatures (learned ``rho`` 0.95-0.97; the median signature's AUROC
        0.004-0.007 below ``sc.tl.score_genes``' against 0.135-0.149 at a fixed 0.3) and
        on synthetic nested sets with independent programmes (learned ``rho``
        0.06-0.27, where a fixed large ``rho`` would cost the nested sets' factors);
        ``benchmarks/RESULTS.md``, "The scores' prior correlation, learned". ``False``
        keeps ``rho`` at ``score_overlap`` (the previous default; with the
        ``"genes"`` basis a learned ``rho`` ran to 0.97-0.99 on PBMC, where the B-cell
        receptor set inside the adaptive immune system then tracked its neighbours).
    score_overlap_max
        Upper bound of the learned ``rho``, in (0, 1] (``rho = score_overlap_max *
        sigmoid(logit)``). Default 1: no bound. A learned ``rho`` whose start
        ``score_overlap`` lies at or above the bound starts at half the bound; a fixed one
        must lie below it. Learned freely, ``rho`` creeps towards 1
        on data with many overlapping sets (PBMC with every Reactome set, mESC, PBMC with
        every C8 signature: 0.997-0.9997 after 2,500-4,000 epochs), the factors move with
        it and the fit does not settle within ``max_epochs``, so what it reports depends
        on how long it ran. On the choice data (PBMC with every C8 signature) no bound
        tried (0.95-0.99) marked the signatures' cell types better than none on average,
        so there is none by default; ``benchmarks/RESULTS.md``, "The learned prior
        correlation creeps towards 1".
    shared_local_scale
        Give each gene one horseshoe local scale for all of its gene sets' loadings,
        instead of one per loading: a gene that several sets hold is then on or off in
        all of their factors together, and the Gaussian given the scales lets them share
        its loading instead of the horseshoe giving it to one of them (a gene in one set
        has its own scale either way). A proper prior (the ELBO has its term). Measured,
        not the default: it helped the C8 signatures a little and cost the PBMC MHC class
        II factor 0.01-0.02 and, in one mESC fit, the G2M checkpoint factor (0.57 against
        0.89); ``benchmarks/RESULTS.md``, "The scores' prior correlation from the data".

    Examples
    --------
    >>> spexlvm.pp.add_gene_sets(adata, spexlvm.datasets.gene_sets("hallmark"))
    >>> spexlvm.SpexLVM.setup_anndata(adata)
    >>> model = spexlvm.SpexLVM(adata, n_dense=1)
    >>> model.train()
    >>> adata.obsm["X_spexlvm"] = model.get_factors().to_numpy()
    """

    _module_cls = SpexLVMModule
    _training_plan_cls = SpexLVMTrainingPlan
    _data_splitter_cls = SpexLVMDataModule

    def __init__(
        self,
        adata: AnnData,
        n_sparse: int = 0,
        n_dense: int = 0,
        prior_confidence: float = 0.99,
        *,
        sparse_slab: float = 0.05,
        dense_slab: float = 1.0,
        dense_prior: str = "gprior",
        dense_g: float = 10.0,
        dense_annotated: float = 1.0,
        slab_df: float = 1.0,
        noise_prior: tuple[float, float] = (1.0, 1.0),
        covariate_prior_scale: float = 1.0,
        score_overlap: float = 0.3,
        learn_score_overlap: bool = True,
        score_overlap_basis: str = "data",
        score_overlap_max: float = SCORE_OVERLAP_MAX,
        shared_local_scale: bool = False,
    ):
        sync_verbosity()
        pyro.clear_param_store()
        super().__init__(adata)
        if not 0.0 < prior_confidence < 1.0:
            raise ValueError(f"prior_confidence must lie in (0, 1), got {prior_confidence}.")
        for name, value in (("n_sparse", n_sparse), ("n_dense", n_dense)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        n_sparse, n_dense = int(n_sparse), int(n_dense)
        if dense_prior not in ("gprior", "diffuse", "ard"):
            raise ValueError(
                f"dense_prior must be 'gprior', 'diffuse' or 'ard', got {dense_prior!r}."
            )
        if not dense_g > 0:
            raise ValueError(f"dense_g must be positive, got {dense_g!r}.")
        if not dense_slab > 0:
            raise ValueError(f"dense_slab must be positive, got {dense_slab!r}.")
        if not 0.0 <= score_overlap < 1.0:
            raise ValueError(f"score_overlap must lie in [0, 1), got {score_overlap!r}.")
        if not 0.0 < score_overlap_max <= 1.0:
            raise ValueError(f"score_overlap_max must lie in (0, 1], got {score_overlap_max!r}.")
        if score_overlap >= score_overlap_max:
            if not learn_score_overlap:
                raise ValueError(
                    f"score_overlap={score_overlap!r} (rho, fixed) must be below "
                    f"score_overlap_max={score_overlap_max!r} (its bound): lower one of them."
                )
            # only where the learned rho starts: below its bound
            logger.info(
                "score_overlap=%g lies at or above score_overlap_max=%g: the learned rho "
                "starts at %g.",
                score_overlap,
                score_overlap_max,
                score_overlap_max / 2,
            )
            score_overlap = score_overlap_max / 2
        if score_overlap_basis not in ("data", "exclusive", "genes"):
            raise ValueError(
                "score_overlap_basis must be 'data', 'exclusive' or 'genes', got "
                f"{score_overlap_basis!r}."
            )

        loading = _LOADING.get()
        if loading is not None:
            saved = (loading.get("init_params_") or {}).get("non_kwargs", {})
            if "dense_prior" not in saved:  # saved by spexlvm 0.1: its dense prior
                dense_prior = "ard"
            if "score_overlap" not in saved:  # saved before the overlap prior: independent
                score_overlap, learn_score_overlap = 0.0, False
        self.dense_prior = dense_prior
        mask_key = self.adata_manager.registry["setup_args"]["mask_key"]
        if loading is not None:
            names = np.asarray(loading["gene_set_names_"], dtype=str)
            mask = prior = np.zeros((self.summary_stats.n_vars, len(names)), dtype=bool)
        elif (
            mask_key not in self.adata.varm
            and mask_key not in self.adata.uns
            and (n_sparse or n_dense)
        ):
            # no gene sets at all: a model of unannotated factors only
            logger.info(
                "No gene-set annotation in varm[%r]: fitting unannotated factors only.", mask_key
            )
            names = np.zeros(0, dtype=str)
            mask = prior = np.zeros((self.summary_stats.n_vars, 0), dtype=bool)
        else:
            # the one membership mask (initialisation, orientation, tl's calls)
            mask, names = factor_membership(self.adata, mask_key)
            check_annotation(self.adata, mask, names)
            # nested gene sets leave their genes to the smaller set (pp.add_gene_sets)
            prior = get_prior(self.adata, mask, key=mask_key)
        n_annotated = mask.shape[1]
        if n_annotated + n_sparse + n_dense == 0:
            raise ValueError(
                "The model has no factors: add gene sets with spexlvm.pp.add_gene_sets or ask "
                "for unannotated factors (n_sparse=..., n_dense=...)."
            )
        n_factors = n_annotated + n_sparse + n_dense
        if self.summary_stats.n_cells < 2:
            raise ValueError(
                f"The data hold {self.summary_stats.n_cells} cell(s): a factor model needs at "
                "least 2 cells (and many more to learn anything). Fit more cells; to score "
                "single new cells, fit on a reference and use `spexlvm.tl.project`."
            )
        if n_factors >= self.summary_stats.n_vars:
            raise ValueError(
                f"The model has {n_factors} factors but the data only {self.summary_stats.n_vars} "
                "genes: a factor model needs fewer factors than genes. Use fewer or smaller-"
                "bounded gene sets (`max_genes=`, `min_genes=`) or fewer unannotated factors."
            )
        self.gene_set_names_ = names
        self.spexlvm_version_ = _package_version()
        self.n_sparse = n_sparse
        self.n_dense = n_dense
        self.prior_confidence = float(prior_confidence)

        # diffuse: the dense factor's prior variance, summed over genes, is factor_scale^2
        n_genes = self.summary_stats.n_vars
        if dense_prior == "gprior":
            width = math.sqrt(dense_g / self.summary_stats.n_cells)
        elif dense_prior == "diffuse":
            width = dense_slab / math.sqrt(n_genes)
        else:
            width = dense_slab
        dense_width = np.full(n_genes, width)
        if dense_annotated != 1.0 and mask.shape[1]:
            dense_width = np.where(mask.any(1), dense_annotated * dense_width, dense_width)
        slab = np.concatenate(
            [
                np.clip(prior + (1.0 - prior_confidence), _MIN_SLAB, 1.0),
                np.full((mask.shape[0], n_sparse), sparse_slab),
                np.repeat(dense_width[:, None], n_dense, axis=1),
            ],
            axis=1,
        )
        x = RowReader(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        if covariate_prior_scale <= 0:
            raise ValueError(
                f"covariate_prior_scale must be positive, got {covariate_prior_scale}."
            )
        covariates = covariate_encoding(self.adata_manager, loading is not None)
        init_b = None
        if loading is not None:  # placeholders; load_state_dict restores the trained values
            n_vars = mask.shape[0]
            mean, var, count, scale = np.zeros(n_vars), np.ones(n_vars), np.ones(n_vars), 1.0
            init_w, noise_var = np.zeros(slab.shape), np.ones(n_vars)
        else:
            mean, var, count = gene_statistics(x)
            if not np.any(var > 0):
                raise ValueError(
                    "Every gene is constant across the cells (zero variance): there is no "
                    "variation for the factors to explain. Check that X holds expression "
                    "values (or pass `layer=`), not a placeholder."
                )
            scale = float(np.sqrt(var.mean())) if var.mean() > 0 else 1.0
            signs = None
            if (score_overlap or learn_score_overlap) and n_annotated:
                signs = get_signs(self.adata, mask, key=mask_key)
            init_w, noise_var, init_b, data_corr = initial_loadings(
                x,
                mean,
                scale,
                mask,
                n_sparse,
                n_dense,
                covariates=covariates,
                signs=signs,
                exclusive=score_overlap_basis == "exclusive",
            )
        sumsq = count * var / scale**2
        cov_kwargs = {}
        if covariates["n_columns"]:
            cov_kwargs = {
                "covariate_levels": covariates["levels"],
                "n_continuous": covariates["n_continuous"],
                "covariate_centre": torch.as_tensor(covariates["centre"], dtype=torch.float32),
                "covariate_scale": torch.as_tensor(covariates["scale"], dtype=torch.float32),
                "covariate_prior_scale": float(covariate_prior_scale),
                "init_covariate_effects": None
                if init_b is None
                else torch.as_tensor(init_b, dtype=torch.float32),
            }
        self.covariate_names_ = np.asarray(covariates["columns"], dtype=str)
        self.covariate_keys_ = np.asarray(covariates["keys"], dtype=str)
        #: level of each categorical design column ("" for continuous ones)
        self.covariate_levels_ = np.asarray(covariates["column_levels"], dtype=str)

        overlap = None
        if (score_overlap or learn_score_overlap) and n_annotated and loading is None:
            corr = set_overlap(signs) if score_overlap_basis == "genes" else data_corr
            overlap = torch.eye(n_factors, dtype=torch.float64)
            overlap[:n_annotated, :n_annotated] = torch.as_tensor(corr)
            # start each set's factor with its members' loadings positive (as
            # _orient_factors leaves them), so that the start agrees with the correlations
            flip = (init_w[:, :n_annotated] * signs).sum(0) < 0
            init_w[:, :n_annotated][:, flip] *= -1.0
        shared = None
        if shared_local_scale and n_annotated:
            # a gene's in-set loadings share one local scale (the mask is state: a loaded
            # model restores it)
            shared = torch.zeros(slab.shape, dtype=torch.bool)
            shared[:, :n_annotated] = torch.as_tensor(mask, dtype=torch.bool)
        self.module = self._module_cls(
            n_obs=self.summary_stats.n_cells,
            slab=torch.as_tensor(slab, dtype=torch.float32),
            gene_mean=torch.as_tensor(mean, dtype=torch.float32),
            data_scale=scale,
            n_observed=torch.as_tensor(count, dtype=torch.float32),
            init_loadings=torch.as_tensor(init_w, dtype=torch.float32),
            init_noise_var=torch.as_tensor(noise_var, dtype=torch.float32),
            gene_sumsq=torch.as_tensor(sumsq, dtype=torch.float32),
            dense=torch.arange(slab.shape[1]) >= n_annotated + n_sparse,
            dense_noise_scaled=dense_prior == "gprior",
            slab_df=slab_df,
            noise_prior=tuple(float(v) for v in noise_prior),
            score_overlap_corr=overlap,
            score_overlap=float(score_overlap),
            learn_score_overlap=bool(learn_score_overlap),
            score_overlap_max=float(score_overlap_max),
            shared_local_scale=shared,
            **cov_kwargs,
        )
        self._model_summary_string = (
            f"SpexLVM: {n_annotated} annotated, {n_sparse} sparse and {n_dense} dense factors, "
            f"{self.summary_stats.n_vars} genes, {self.summary_stats.n_cells} cells, "
            f"prior_confidence={prior_confidence}"
            + (
                f", {len(self.covariate_names_)} covariate column(s)"
                if len(self.covariate_names_)
                else ""
            )
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ set-up
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        mask_key: str = KEYS.MASK,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs,
    ):
        """Register an AnnData with the model.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        mask_key
            Key in ``adata.varm`` / ``adata.uns`` of the gene-set annotation written by
            :func:`spexlvm.pp.add_gene_sets`.
        batch_key
            ``adata.obs`` column of the batch (categorical). Known covariates enter the
            model as fixed effects, ``y_n = c_n B^T + x_n W^T + noise``: each categorical
            covariate as one-hot columns of its levels but the first (the reference),
            continuous ones standardised, every column centred; ``B`` (genes x columns) has
            a Gaussian prior (``covariate_prior_scale`` of :class:`SpexLVM`) and a Gaussian
            posterior. The factors then explain what the covariates do not, and need no
            dense factor for them.
        categorical_covariate_keys
            Further categorical ``adata.obs`` columns (donor, sample, ...), as the batch.
        continuous_covariate_keys
            Continuous ``adata.obs`` columns (log library size, percent mitochondrial
            reads, ...), standardised.
        """
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"layer {layer!r} is not in adata.layers (available: {list(adata.layers)}); "
                "pass one of those, or layer=None for adata.X."
            )
        categorical_covariate_keys = key_list(
            categorical_covariate_keys, "categorical_covariate_keys"
        )
        continuous_covariate_keys = key_list(
            continuous_covariate_keys, "continuous_covariate_keys"
        )
        check_covariate_columns(
            adata, batch_key, categorical_covariate_keys, continuous_covariate_keys
        )
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)]
        if batch_key is not None:  # only then: no `_scvi_batch` column without a batch
            anndata_fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
        anndata_fields += [
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ training
    @docs.dedent
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        lr: float | None = None,
        early_stopping: bool = True,
        *,
        tol: float = 0.02,
        patience: int = 3,
        plan_kwargs: dict | None = None,
        strategy: str | Strategy = "auto",
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_interval: float = 300.0,
        resume: bool = True,
        block_size: int | None = None,
        engine: str = DEFAULT_ENGINE,
        **trainer_kwargs,
    ):
        """Train the model: variational inference over minibatches of cells.

        Parameters
        ----------
        max_epochs
            Maximum number of passes through the data. Defaults to 200 passes with the
            default engine (``"cavi"``); with ``engine="adam"`` to a value chosen from the
            number of minibatches per epoch, so that the fit gets about 1,500 optimisation
            steps (at least 100 epochs) before convergence stops it.
        batch_size
            Cells per minibatch (over all processes with DDP). Defaults to all cells up to
            16,384 cells and 2^27 entries (``cells x genes``, 512 MB in float32), else to
            equal batches within both bounds.
        %(accelerator)s
        device
            Device index, number of devices (with ``strategy="ddp"``), or ``"auto"``.
            ``devices=`` (Lightning's name) is accepted too.
        lr
            Adam learning rate; ``None``: 0.05 (``engine="adam"``) or 0.2 (the scale steps of
            ``engine="cavi"``).
        early_stopping
            Stop once every factor has settled (see
            :class:`~spexlvm.train.LoadingsConvergence`); a fit that reaches
            ``max_epochs`` first warns.
        tol
            Largest relative change of any factor's (step-averaged) loadings, loading
            standard deviations and relative scale across a window of epochs (about 10
            optimisation steps, at least one epoch) below which an epoch counts as
            settled.
        patience
            Settled epochs in a row before stopping.
        plan_kwargs
            Passed to :class:`~spexlvm.train.SpexLVMTrainingPlan`.
        strategy
            Lightning strategy. ``"ddp"`` trains data-parallel on ``device`` processes
            (one per GPU, or CPU processes with ``accelerator="cpu"``): each computes the
            ELBO of its share of every minibatch and the gradients are averaged, so the fit
            is statistically the same as on one device (``batch_size`` counts the cells of
            a step over all processes). ``"ddp"`` runs the script once per process
            (Lightning starts the others, or SLURM / ``torchrun`` does); in notebooks use
            ``"ddp_notebook"``. See the architecture page of the docs.
        checkpoint_dir
            Directory for checkpoints (created). The fit saves ``last.ckpt`` there at the
            end of an epoch every ``checkpoint_interval`` seconds and when it ends. If the
            directory already holds a checkpoint of this model and data (same genes, cells,
            annotation and settings; anything else is an error), the fit resumes from it:
            parameters, optimiser state, epoch, convergence rule and minibatch order are
            restored, so the resumed fit ends where the uninterrupted one would have. A
            finished fit is loaded without training.
        checkpoint_interval
            Minimum number of seconds between two checkpoints (``0``: every epoch).
        resume
            Whether to resume from a checkpoint in ``checkpoint_dir``; ``False`` starts
            again and overwrites it.
        block_size
            Consecutive cells read together. ``None``: 1 for data in memory (minibatches of
            independent random cells); for data on disk (backed h5ad, zarr, dask) blocks of
            about 1 MB, whose order is shuffled every epoch, so that reading stays
            sequential (see :mod:`spexlvm._data`).
        engine
            ``"cavi"`` (default): coordinate ascent on the ELBO, one exact update per pass
            through the data (:class:`~spexlvm.train.CAVITrainingPlan`): the loadings,
            covariate effects and noise in closed form, the horseshoe scales by a few Adam
            steps on their prior terms. Its passes to convergence do not grow with the
            number of cells (see ``benchmarks/RESULTS.md``, "Coordinate ascent");
            ``max_epochs`` then counts passes (default 200), ``lr`` is the scales' step
            size, early stopping reads the loadings alone (not the factor scales) and also
            ends the fit once ``patience`` passes in a row raised the exact ELBO by less
            than ``1e-5`` per matrix entry (``LoadingsConvergence(elbo_tol=)``).
            ``"adam"``: minibatch stochastic gradient steps (Adam) on the same closed-form
            ELBO (:class:`~spexlvm.train.SpexLVMTrainingPlan`), the default until
            2026-12-04. Coordinate ascent became the default when it met the rule written
            for the switch on fresh draws of the choice data (``benchmarks/RESULTS.md``,
            "Coordinate ascent as the default engine, a fourth and a fifth look"); the
            Adam engine stays for fits that need its warm-up settings or a stochastic
            optimiser.
        **trainer_kwargs
            Passed to :class:`~scvi.train.Trainer` (and on to Lightning).

        Notes
        -----
        The data are never loaded whole: statistics, initialisation and training read
        chunks or minibatches of cells, so an AnnData read with ``backed="r"`` (dense or
        CSR ``X``), or holding a zarr or dask array, trains in the memory of a few
        minibatches; a sparse matrix is densified one minibatch at a time. The time per
        epoch is measured on the first steps and logged (logger ``spexlvm``, level INFO)
        with the longest the fit can take; a progress bar shows the ELBO.
        """
        sync_verbosity()
        if "devices" in trainer_kwargs:  # Lightning's name for `device`
            devices = trainer_kwargs.pop("devices")
            if device != "auto" and device != devices:
                raise ValueError(f"Pass either device={device!r} or devices={devices!r}.")
            device = devices
        n_obs, n_vars = self.summary_stats.n_cells, self.summary_stats.n_vars
        plan = schedule(
            n_obs,
            default_batch_size(n_obs, n_vars) if batch_size is None else batch_size,
            max_epochs=max_epochs,
            lr=lr,
            plan_kwargs=plan_kwargs,
            n_annotated=len(self.gene_set_names_),
            n_free=self.n_sparse + self.n_dense,
            early_stopping=early_stopping,
            tol=tol,
            patience=patience,
            engine=engine,
        )
        self.engine_ = engine
        callbacks = list(trainer_kwargs.pop("callbacks", None) or []) + plan.callbacks
        run = TrainingRun(
            fingerprint=self._fingerprint(engine) if checkpoint_dir is not None else None,
            strategy=strategy,
            device=device,
            trainer_kwargs=trainer_kwargs,
            checkpoint_dir=checkpoint_dir,
            checkpoint_interval=checkpoint_interval,
            resume=resume,
            block_size=block_size,
            steps_per_epoch=plan.steps_per_epoch,
        )
        if run.finished_info is not None:
            self.history_, self.convergence_, self.converged_ = run.restore_finished(self.module)
            self.is_trained_ = True
            self._orient_factors()
            return
        callbacks.extend(run.callbacks())
        trainer_kwargs = run.trainer_kwargs(trainer_kwargs)
        trainer_kwargs.setdefault("log_every_n_steps", max(1, min(50, plan.steps_per_epoch)))
        logger.log(
            logging.INFO if is_rank_zero() else logging.DEBUG,
            "Training %s for at most %d epochs of %d minibatch(es) of %d cells on %s.",
            type(self).__name__,
            plan.max_epochs,
            plan.steps_per_epoch,
            plan.batch_size,
            accelerator
            if accelerator != "auto"
            else ("gpu" if torch.cuda.is_available() else "cpu"),
        )
        run.log_start(
            plan.batch_size,
            reader=RowReader(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)),
            n_factors=self.module.n_factors,
        )
        with quiet_lightning(), run.context() as extra:
            super().train(
                max_epochs=plan.max_epochs,
                accelerator=accelerator,
                device=device,
                train_size=1.0,
                batch_size=plan.batch_size,
                early_stopping=False,
                plan_kwargs=plan.plan_kwargs,
                training_plan=CAVITrainingPlan(self.module, **plan.plan_kwargs)
                if engine == "cavi"
                else None,
                callbacks=callbacks,
                datasplitter_kwargs=run.datasplitter_kwargs(),
                **extra,
                **trainer_kwargs,
            )
        convergence = plan.convergence
        self.history_ = run.finish(self.history_, convergence, plan.max_epochs)
        self.convergence_ = convergence.history if convergence is not None else []
        self.converged_ = bool(convergence is not None and convergence.stopped_epoch is not None)
        if convergence is not None and not self.converged_ and is_rank_zero():
            warnings.warn(
                convergence.unsettled_message(plan.max_epochs, self.factor_names),
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        self._orient_factors()

    def _fingerprint(self, engine: str = "adam") -> dict[str, Any]:
        """What must match for a checkpoint to continue this fit (see :mod:`spexlvm.train`).

        The model class and settings, the genes, cells and factors, and digests of the
        per-gene statistics and slab widths computed from the data and the annotation.
        """
        module = self.module
        init = getattr(self, "init_params_", {}) or {}
        settings = {
            k: v
            for part in ("non_kwargs", "kwargs")
            for k, v in (init.get(part) or {}).items()
            if k != "adata"
        }
        if not getattr(module, "n_covariates", 0):  # a fit without covariates: as before
            settings.pop("covariate_prior_scale", None)
        setup = self.adata_manager.registry.get("setup_args", {})
        out = {
            "model": type(self).__name__,
            "settings": json.loads(json.dumps(settings, default=str)),
            "layer": str(setup.get("layer") or ""),
            "n_obs": int(self.summary_stats.n_cells),
            "n_vars": int(self.summary_stats.n_vars),
            "var_names": digest(self.adata.var_names),
            "obs_names": digest(self.adata.obs_names),
            "factor_names": [str(n) for n in self.factor_names],
            "data": digest(torch.cat([module.gene_mean.flatten(), module.data_scale.flatten()])),
            "annotation": digest(module.slab),
        }
        if getattr(module, "n_covariates", 0):  # only then: older fingerprints stay valid
            out["covariates"] = [str(c) for c in self.covariate_names_]
        if engine != "adam":  # only then, as the covariates
            out["engine"] = engine
        return out

    @torch.no_grad()
    def _orient_factors(self) -> None:
        """Flip factors so that a positive score means the annotated genes go up.

        The likelihood and the prior are symmetric under ``(x_k, w_k) -> (-x_k, -w_k)``
        (with the scores' prior correlations of factor k flipped too), so the flip changes
        no fit; the scores are computed from the loadings, so flipping the loadings flips
        them too.

        Annotated factors: the covariance that the model implies between the set's genes
        and the factor's score, ``sum_g s_g Cov(y_g, x_k) = sum_g s_g (W R)_gk`` over the
        set's members (the membership mask of :func:`spexlvm.pp.factor_membership`, as
        used by :func:`spexlvm.tl.refine` and :func:`spexlvm.tl.gene_set_test`; ``s_g``
        the gene's sign in a signed network, ``varm[mask_key + "_signs"]``, see
        :func:`spexlvm.pp.get_signs`, ``+1`` for unsigned sets; ``R`` the scores' prior
        correlation), is > 0: a positive score means the ``+1`` genes go up and the ``-1``
        genes down. With independent scores (``R = I``, the paper's prior) this is the sum
        of the members' loadings. With correlated scores it also counts what the factor
        shares with related sets' factors, so that a factor whose own loadings shrank to
        nothing (switched off) still gets the sign of the data, not of its leftover noise.
        The sum is unchanged by other factors' flips (their loadings and correlations flip
        together), so one pass orients every factor. Unannotated factors: the largest
        absolute loading is positive.
        """
        w = self.module.w_loc
        n_annotated = len(self.gene_set_names_)
        signs = torch.ones(w.shape[1], device=w.device)
        if n_annotated:
            members = torch.as_tensor(
                self._membership(signed=True), dtype=w.dtype, device=w.device
            )
            implied = w @ self.module.score_prior_cov().to(w)[:, :n_annotated]
            signs[:n_annotated] = torch.where((implied * members).sum(0) < 0, -1.0, 1.0)
        for k in range(n_annotated, w.shape[1]):
            signs[k] = torch.sign(w[torch.argmax(w[:, k].abs()), k]) or 1.0
        self.module.flip_factors(signs)

    def _membership(self, *, signed: bool = False) -> np.ndarray:
        """The membership mask of the annotated factors (genes x sets).

        Read from the registered AnnData (:func:`spexlvm.pp.factor_membership`); a model
        loaded without the annotation in ``adata`` falls back to the genes with a wide
        slab in the prior. ``signed``: the signs of a signed network on the members
        (:func:`spexlvm.pp.get_signs`; +1 without one).
        """
        mask_key = self.adata_manager.registry["setup_args"]["mask_key"]
        n_annotated = len(self.gene_set_names_)
        try:
            mask, names = factor_membership(self.adata, mask_key)
        except (KeyError, ValueError):
            mask, names = None, None
        if mask is None or list(names) != [str(n) for n in self.gene_set_names_]:
            return (self.module.slab[:, :n_annotated] >= 0.5).cpu().numpy()
        if signed:
            return get_signs(self.adata, mask, key=mask_key)
        return mask

    # ------------------------------------------------------------------ results
    @property
    def factor_names(self) -> list[str]:
        """Factor names: gene-set names, then ``sparse_1..S``, ``dense_1..D``.

        A factor of gene sets merged by :func:`spexlvm.pp.add_gene_sets` (``nested="merge"``
        or ``"resolve"``) is named after all its members (``"LARGER + NESTED"``);
        :func:`spexlvm.tl.factor_name` finds it from any member's name.
        """
        return (
            [str(n) for n in self.gene_set_names_]
            + [f"{SPARSE_PREFIX}{i + 1}" for i in range(self.n_sparse)]
            + [f"{DENSE_PREFIX}{i + 1}" for i in range(self.n_dense)]
        )

    def _batches(
        self, adata: AnnData, batch_size: int | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Consecutive chunks of cells of the registered input of a validated AnnData.

        Streamed from any storage (read ahead in a thread when on disk); only a chunk is
        densified at a time. Yields the chunk and its covariate design (``None`` without
        covariates).
        """
        if batch_size is None:
            batch_size = default_batch_size(adata.n_obs, self.summary_stats.n_vars)
        manager = self.get_anndata_manager(adata, required=True)
        reader = RowReader(manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        fields = obs_fields(manager) if self.module.n_covariates else {}
        for rows, x in reader.chunks(batch_size):
            design = None
            if fields:
                design = self.module.covariate_design({k: v[rows] for k, v in fields.items()})
            yield x, design

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """scvi-tools' validation, after clear errors for the covariates of new cells."""
        covariates = getattr(self, "covariate_names_", ())
        if adata is not None and adata is not self.adata and len(covariates):
            manager = self.adata_manager
            registry = manager.registry if manager is not None else self.registry_
            setup = registry["setup_args"]
            fields = registry["field_registries"]
            categories = {}
            # (an unused field is registered with an empty state)
            state = fields.get(REGISTRY_KEYS.BATCH_KEY, {}).get("state_registry", {})
            if "categorical_mapping" in state:
                categories[setup["batch_key"]] = np.asarray(state["categorical_mapping"])
            state = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
            categories.update({k: np.asarray(v) for k, v in state.get("mappings", {}).items()})
            check_covariate_columns(
                adata,
                setup.get("batch_key"),
                setup.get("categorical_covariate_keys"),
                setup.get("continuous_covariate_keys"),
                categories=categories,
            )
        return super()._validate_anndata(adata, copy_if_view)

    @torch.inference_mode()
    def get_factors(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Posterior mean of the cell scores.

        For cells the model was not trained on (``adata`` with the same genes), this
        projects them with the learned loadings, without retraining.

        Parameters
        ----------
        adata
            AnnData with the same genes as the training data; defaults to it.
        batch_size
            Cells per minibatch.

        Returns
        -------
        Cells x factors, columns named by :attr:`factor_names`. For a factor of merged
        gene sets, ``get_factors()[spexlvm.tl.factor_name(adata, member)]`` selects it by
        any member's name.
        """
        adata_ = self._validate_anndata(adata)
        scores = self.get_latent_representation(adata_, batch_size=batch_size)
        return pd.DataFrame(scores, index=adata_.obs_names.copy(), columns=self.factor_names)

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        give_mean: bool = True,
    ) -> np.ndarray:
        """The cell scores, cells x factors (scvi-tools' name for :meth:`get_factors`).

        The scores' posterior given the learned loadings and noise is Gaussian and computed
        exactly (a K x K solve per cell, :meth:`SpexLVMModule.score_posterior`); for the
        training cells its mean is what :func:`spexlvm.tl.fit` wrote to
        ``adata.obsm["X_spexlvm"]``, for other cells (same genes) it projects them
        without retraining.

        Parameters
        ----------
        adata
            AnnData with the same genes as the training data; defaults to it.
        indices
            Positions of the cells to return (all when ``None``); every cell is computed.
        batch_size
            Cells per minibatch.
        give_mean
            The posterior mean; ``False`` draws one sample from the posterior instead.

        Returns
        -------
        A float32 array, cells x factors in the order of :attr:`factor_names`
        (:func:`spexlvm.get.factors` gives them with names, as an AnnData).
        """
        self._check_if_trained(warn=True)
        adata_ = self._validate_anndata(adata)
        self.module.eval()
        score = self.module.get_scores if give_mean else self.module.sample_scores
        chunks = [score(x, design).cpu() for x, design in self._batches(adata_, batch_size)]
        out = torch.cat(chunks).numpy()
        return out if indices is None else out[np.asarray(indices)]

    @torch.inference_mode()
    def get_loadings(self) -> pd.DataFrame:
        """Posterior mean of the loadings, in the units of the input (genes x factors)."""
        w = (self.module.w_loc * self.module.data_scale).cpu().numpy()
        return pd.DataFrame(w, index=self.adata.var_names.copy(), columns=self.factor_names)

    @torch.inference_mode()
    def get_loadings_sd(
        self,
        kind: Literal["mean_field", "joint"] = "mean_field",
        *,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Posterior standard deviation of the loadings, in input units (genes x factors).

        Parameters
        ----------
        kind
            ``"mean_field"`` (default, what :func:`spexlvm.tl.write_results` stores): the
            trained factor ``q(w_gk)`` of the mean-field posterior. ``"joint"``: the
            marginal standard deviations of each gene's loadings under a full K x K
            Gaussian posterior given the training cells' scores
            (:meth:`SpexLVMModule.joint_loadings_var`), never smaller than the mean-field
            ones given the same scores; larger where two factors can trade a gene's effect.
            One pass over the training data plus ``G K^3 / 3``. On the synthetic data of
            ``benchmarks/decoys.py`` it changed no call of :func:`spexlvm.tl.refine`
            (the scores are nearly uncorrelated there): measured, not the default.
        batch_size
            Cells per minibatch of the pass (``"joint"``).
        """
        if kind not in ("joint", "mean_field"):
            raise ValueError(f"kind must be 'joint' or 'mean_field', got {kind!r}.")
        module = self.module
        if kind == "mean_field":
            var = module._sd(module.w_log_sd) ** 2
        else:
            self._check_if_trained(warn=True)
            adata_ = self._validate_anndata(None)
            module.eval()
            moment = None
            for x, design in self._batches(adata_, batch_size):
                part = module.score_second_moment(x, design)
                moment = part if moment is None else moment + part
            var = module.joint_loadings_var(moment)
        sd = (torch.sqrt(var) * module.data_scale).cpu().numpy()
        return pd.DataFrame(sd, index=self.adata.var_names.copy(), columns=self.factor_names)

    @torch.inference_mode()
    def get_factor_scales(self) -> pd.DataFrame:
        """Posterior of the per-factor scale (log-normal): median and 90% interval.

        A factor whose scale collapsed towards zero was switched off (pruned) by the data.
        """
        loc = self.module.phi_loc.detach().cpu()
        sd = self.module._sd(self.module.phi_log_sd).detach().cpu()
        return pd.DataFrame(
            {
                "median": torch.exp(loc).numpy(),
                "q05": torch.exp(loc - 1.6449 * sd).numpy(),
                "q95": torch.exp(loc + 1.6449 * sd).numpy(),
            },
            index=self.factor_names,
        )

    @torch.inference_mode()
    def get_r2(self, adata: AnnData | None = None, batch_size: int | None = None) -> pd.Series:
        """Variance explained by each factor (R²) and by all together.

        ``R²_k = 1 - SS_res / SS_tot`` over the observed entries of the centred data, with
        the factor's own rank-1 reconstruction ``x_k w_k^T`` (posterior means).

        Returns
        -------
        R² per factor, named by :attr:`factor_names`; ``attrs["total"]`` holds the R² of
        the full reconstruction (known covariates included). With known covariates,
        ``attrs["covariates"]`` holds the R² of each covariate key (``{key: R²}``, its
        columns' reconstruction ``c_key B_key^T``, computed like a factor's) and
        ``attrs["factors_total"]`` the R² of the factors together, on the data less the
        covariate effects' reconstruction. ``attrs["score_var"]`` holds each factor's
        posterior variance of the scores, averaged over the cells: the scores'
        uncertainty, so that ``mean(z_k^2) + score_var_k`` estimates the variance of the
        factor itself (the posterior means ``z`` are shrunk towards zero).
        """
        self._check_if_trained(warn=True)
        module = self.module
        w = module.w_loc
        k = w.shape[1]
        keys = [str(c) for c in self.covariate_keys_]
        groups = {key: [j for j, c in enumerate(keys) if c == key] for key in dict.fromkeys(keys)}
        acc = R2Accumulator()  # the one R² computation (also tl's and pl's)
        wd = w.double()
        ss_left = 0.0  # what the covariates leave
        ss_res_cov = dict.fromkeys(groups, 0.0)
        score_var = torch.zeros(k, dtype=torch.float64, device=w.device)
        n_cells = 0
        for x, design in self._batches(self._validate_anndata(adata), batch_size):
            x = x.to(w.device)
            y, observed = module._prepare(x)
            post = module.score_posterior(x, complete=observed is None, design=design)
            scores, cov = post["means"], post["cov"]
            if cov.dim() == 2:  # one covariance shared by the cells
                score_var += torch.diagonal(cov).double() * x.shape[0]
            else:
                score_var += torch.diagonal(cov, dim1=-2, dim2=-1).double().sum(0)
            n_cells += x.shape[0]
            o = None if observed is None else observed.to(torch.float64)
            yd = y.double()
            effects = None
            if design is not None:
                design = design.to(w.device)
                b = module.cov_loc
                for key, cols in groups.items():
                    effect = design[:, cols] @ b[:, cols].T
                    ss_res_cov[key] += float(((_mask(y - effect, o)) ** 2).sum().double())
                effects = design @ b.T
                ss_left += float((_mask(y - effects, o) ** 2).sum().double())
                effects = effects.double()
            acc.add(yd, o, scores.double(), wd, effects)
        r2_factors, r2_total = acc.r2()
        ss_tot = acc.ss_tot
        r2 = r2_factors.cpu().numpy() if ss_tot > 0 else np.zeros(k)
        out = pd.Series(r2, index=self.factor_names, name="r2")
        out.attrs["total"] = float(r2_total)
        out.attrs["score_var"] = (score_var / max(n_cells, 1)).cpu().numpy()
        if groups:
            tot = float(ss_tot)
            out.attrs["covariates"] = {
                key: (1.0 - res / tot) if tot > 0 else 0.0 for key, res in ss_res_cov.items()
            }
            out.attrs["factors_total"] = (
                float(1.0 - acc.ss_res_total / ss_left) if ss_left > 0 else 0.0
            )
        return out

    @torch.inference_mode()
    def get_covariate_effects(self) -> pd.DataFrame:
        """Posterior mean of the known covariates' effects ``B``, in input units.

        Genes x design columns: ``key[level]`` for each level of a categorical covariate
        but its first (the shift of that level's cells relative to the first level's),
        and each continuous covariate's key (the change per unit of the covariate). Empty
        (no columns) without covariates.
        """
        if not len(self.covariate_names_):
            return pd.DataFrame(index=self.adata.var_names.copy())
        b = self.module.cov_loc * self.module.data_scale / self.module.cov_scale
        return pd.DataFrame(
            b.cpu().numpy(),
            index=self.adata.var_names.copy(),
            columns=[str(c) for c in self.covariate_names_],
        )

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Directory given to :meth:`save`.
        adata
            AnnData with the same genes as the training data. It does not need the
            gene-set annotation in ``varm``: the model carries it.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.
        """
        import os

        from scvi.model.base._save_load import _load_saved_files

        prefix = kwargs.get("prefix") or ""
        model_file = os.path.join(dir_path, f"{prefix}model.pt")
        if not os.path.isfile(model_file):
            raise FileNotFoundError(
                f"No saved model at {model_file!r}: pass the directory given to `model.save`."
            )
        try:
            attr_dict, var_names, _, _ = _load_saved_files(
                dir_path, load_adata=False, prefix=kwargs.get("prefix"), map_location="cpu"
            )
        except FileNotFoundError:
            raise
        except Exception as err:  # torch / pickle errors of a damaged file
            raise ValueError(
                f"Could not read a saved model from {dir_path!r} ({type(err).__name__}: {err}). "
                "The file is corrupt or truncated, or not a spexlvm model: save the model again "
                "with `model.save(dir_path, overwrite=True)`."
            ) from err
        if "gene_set_names_" not in attr_dict:
            raise ValueError(f"{dir_path!r} holds a saved scvi-tools model, but not a SpexLVM.")
        _check_version(str(attr_dict.get("spexlvm_version_", "0")), dir_path)
        if adata is not None:
            saved = np.asarray(var_names, dtype=str)
            given = np.asarray(adata.var_names, dtype=str)
            if saved.shape != given.shape or not np.array_equal(saved, given):
                missing = np.setdiff1d(saved, given)
                raise ValueError(
                    f"The AnnData's genes differ from the model's ({given.size} vs {saved.size} "
                    f"genes; {missing.size} of the model's genes missing, e.g. "
                    f"{missing[:5].tolist()}). Subset and order the AnnData like the training "
                    "data: `adata[:, genes]` with the genes the model was trained on, in order."
                )
        token = _LOADING.set(attr_dict)
        try:
            return super().load(dir_path, adata=adata, **kwargs)
        finally:
            _LOADING.reset(token)
