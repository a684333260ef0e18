"""Where the fit starts: the loadings, noise and covariate effects before training.

Each annotated factor starts at its gene set's leading principal axis (on a sample of
cells, each gene standardised), the unannotated factors at the leading axes of what the
gene sets leave, the covariate effects at a ridge regression (:func:`initial_loadings`);
:func:`covariate_encoding` turns the registered covariates into design columns.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._constants import REGISTRY_KEYS
from ._data import RowReader, obs_fields
from ._module import one_hot_design
from ._utils import user_stacklevel

if TYPE_CHECKING:
    from scvi.data import AnnDataManager

#: Cells used to initialise the loadings.
_N_INIT_CELLS = 1000
#: Initial size of the unannotated factors, relative to the residual's principal axes.
_FREE_INIT_SCALE = 0.1


def masked_power_iteration(y: torch.Tensor, mask: torch.Tensor, n_iter: int = 15) -> torch.Tensor:
    """Leading principal axis of each gene set's columns of ``y`` (cells x genes).

    Returns loadings (genes x sets) supported on each set, scaled so that a unit-variance
    score reproduces the set's leading variance, and oriented so that they sum to > 0.
    """
    m = mask.to(y.dtype)
    v = m / m.norm(dim=0).clamp_min(1e-12)
    for _ in range(n_iter):
        v = m * (y.T @ (y @ v))
        v = v / v.norm(dim=0).clamp_min(1e-12)
    scores = y @ v
    sd = scores.norm(dim=0) / math.sqrt(max(y.shape[0], 1))
    sign = torch.where(v.sum(0) < 0, -1.0, 1.0)
    return v * sd * sign


def standardised_set_axes(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each gene set's leading axis on standardised genes, as loadings of ``y``.

    :func:`masked_power_iteration` of ``y`` with each gene divided by its standard
    deviation (the axis of the set's correlation matrix, not its covariance matrix),
    times each gene's standard deviation: a unit-variance score along the axis then
    reproduces the set's leading variance in ``y``'s units. The likelihood weighs each
    gene by its own noise precision, so a few high-variance genes that belong to
    another programme should not choose a set's start; on the synthetic choice data
    they did, and the factor of such a set started on the other programme
    (``benchmarks/joint_init.py``). Constant genes stay at zero.
    """
    # one sampled cell: no spread (torch's sample sd would be NaN)
    sd = y.std(0) if y.shape[0] > 1 else torch.zeros(y.shape[1], dtype=y.dtype)
    safe = torch.where(sd > 0, sd, torch.ones_like(sd))
    return sd[:, None] * masked_power_iteration(y / safe, mask)


@torch.no_grad()
def initial_loadings(
    x: RowReader,
    mean: np.ndarray,
    scale: float,
    mask: np.ndarray,
    n_sparse: int,
    n_dense: int,
    *,
    covariates: dict | None = None,
    signs: np.ndarray | None = None,
    exclusive: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Start each annotated factor at its gene set's leading principal axis.

    The axis is that of the set's standardised genes (:func:`standardised_set_axes`).

    Returns the loadings, the noise variances, the covariate effects (``None`` without
    covariates) and, with ``signs`` (genes x sets: +1 / -1 for members, 0 otherwise), the
    correlation of the sets' signed mean expression over the same sampled cells, after
    the covariates (:func:`set_mean_correlation`, with ``exclusive``; else ``None``).

    With known covariates, their effects start at a ridge regression of the sampled
    cells on the design (prior precision 1 / s^2 with s = 1), and the factors start
    from what the covariates leave.

    Unannotated factors start at the leading principal axes of what the annotated
    factors leave unexplained: dense ones at the first axes, sparse ones at the next
    axes restricted to their top genes. (Starting a dense factor at the data's first
    axis lets it take signal that belongs to gene sets.) Loadings that start at zero
    would get no gradient: the closed-form scores would be zero too.
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
    # random cells (on disk: in a few contiguous blocks at random positions)
    index = x.sample_index(_N_INIT_CELLS, rng)
    block = x.take(index).numpy()
    y = (block - mean) / scale
    y = torch.as_tensor(np.nan_to_num(y, nan=0.0), dtype=torch.float32)
    init_b = None
    if covariates is not None and covariates["n_columns"]:
        design = torch.as_tensor(covariates["design"](index), dtype=torch.float32)
        # ridge: (C^T C + I) B^T = C^T Y (noise variance ~ prior variance ~ 1)
        gram = design.T @ design + torch.eye(design.shape[1])
        b = torch.linalg.solve(gram, design.T @ y).T
        y = y - design @ b.T
        init_b = b.numpy()
    corr = None if signs is None else set_mean_correlation(y, signs, exclusive)
    parts = []
    residual = y
    if mask.shape[1]:
        annotated = standardised_set_axes(y, torch.as_tensor(mask))
        parts.append(annotated)
        # what the annotated factors leave unexplained (least-squares fit of their scores)
        residual = y - (y @ torch.linalg.pinv(annotated).T) @ annotated.T
    n_free = n_sparse + n_dense
    if n_free:
        # unannotated factors start at the leading axes of the residual: dense factors
        # take the first ones, sparse factors the next ones restricted to their top genes
        free = torch.zeros(y.shape[1], n_free)
        q = min(n_free, min(y.shape) - 1)
        if q > 0:
            _, s, v = torch.svd_lowrank(residual, q=q, niter=4)
            # small, so that they grow into what the gene sets leave and do not take
            # over the gene sets' signal
            axes = (v * (_FREE_INIT_SCALE * s / math.sqrt(y.shape[0]))).T
            columns = list(range(n_sparse, n_free)) + list(range(n_sparse))
            n_top = max(5, int(0.05 * y.shape[1]))
            for col, axis in zip(columns, axes, strict=False):
                if col < n_sparse:
                    keep = torch.topk(axis.abs(), min(n_top, axis.numel())).indices
                    axis = torch.zeros_like(axis).index_copy_(0, keep, axis[keep])
                free[:, col] = axis
        # an axis that could not be computed starts small and random
        empty = free.abs().sum(0) == 0
        free[:, empty] = 0.01 * torch.randn(y.shape[1], int(empty.sum()))
        parts.append(free)
    init = torch.cat(parts, dim=1)
    residual_var = (y - (y @ init) @ torch.linalg.pinv(init) if init.numel() else y).var(0)
    noise_var = torch.clamp(residual_var, min=1e-3).numpy()
    return init.numpy(), noise_var, init_b, corr


def set_mean_correlation(
    y: torch.Tensor, signs: np.ndarray, exclusive: bool = False
) -> np.ndarray:
    """Correlation over cells of the gene sets' signed mean expression (sets x sets).

    ``y``: centred cells x genes (missing values 0); ``signs``: genes x sets, +1 / -1 for a
    member, 0 otherwise. Set k's mean is ``sum_g s_gk y_ng / n_k``: the score of
    ``sc.tl.score_genes`` without its control genes. The result is a correlation matrix
    (positive semi-definite, unit diagonal); a set whose mean does not vary over the cells
    is uncorrelated with every other.

    With ``exclusive``, two sets that share genes are compared on the genes they do *not*
    share: the correlation of the mean of ``k - l`` with the mean of ``l - k`` (a set
    inside the other: the smaller set's mean with the mean of the rest of the larger one;
    identical sets: 1). Shared genes make two means correlated whether or not the rest of
    the sets move with them; compared without them, a child set nested in a broad parent
    is related to it only when the parent's other genes follow the child's programme.
    Sets without shared genes get the plain correlation. The pairwise correlations are
    then projected onto the nearest correlation matrix (negative eigenvalues clipped,
    unit diagonal restored), so that the prior stays positive definite.
    """
    s = torch.as_tensor(np.asarray(signs), dtype=torch.float64)
    yd = y.double()
    sums = yd @ s
    corr = _column_correlation(sums, sums)
    if exclusive and s.shape[1] > 1:
        member = (s != 0).double()
        shared = member.T @ member  # genes two sets share
        size = torch.diagonal(shared)
        for k in range(s.shape[1]):
            others = torch.nonzero(shared[k] > 0).flatten()
            others = others[others != k]
            if not others.numel():
                continue
            genes = torch.nonzero(member[:, k]).flatten()
            yk = yd[:, genes]
            # sums over the shared genes, with k's signs and with each other set's signs
            shared_k = (yk * s[genes, k]) @ member[genes][:, others]
            shared_l = yk @ s[genes][:, others]
            only_k = size[k] - shared[k, others]
            only_l = size[others] - shared[k, others]
            a = torch.where(only_k[None, :] > 0, sums[:, k : k + 1] - shared_k, sums[:, [k]])
            b = torch.where(only_l[None, :] > 0, sums[:, others] - shared_l, sums[:, others])
            # a set inside the other: the smaller one (all of it) against the rest
            r = _column_correlation(a, b, paired=True)
            r = torch.where((only_k == 0) & (only_l == 0), torch.ones_like(r), r)
            corr[k, others] = r
        corr = 0.5 * (corr + corr.T)
        eig, vec = torch.linalg.eigh(corr)
        corr = (vec * eig.clamp_min(1e-6)) @ vec.T
        d = torch.sqrt(torch.diagonal(corr))
        corr = corr / d[:, None] / d[None, :]
    corr = corr.clamp(-1.0, 1.0)
    corr.fill_diagonal_(1.0)
    return corr.numpy()


def _column_correlation(a: torch.Tensor, b: torch.Tensor, paired: bool = False) -> torch.Tensor:
    """Correlation over rows of the columns of ``a`` with those of ``b``.

    All pairs, or column i with column i when ``paired``; a constant column correlates 0.
    """
    a = a - a.mean(0)
    b = b - b.mean(0)

    def inverse_sd(m: torch.Tensor) -> torch.Tensor:
        sd = torch.sqrt((m * m).sum(0))
        ok = sd > 1e-12 * float(sd.max().clamp_min(1e-300))
        return torch.where(ok, 1.0 / torch.where(ok, sd, 1.0), 0.0)

    ia, ib = inverse_sd(a), inverse_sd(b)
    if paired:
        return (a * b).sum(0) * ia * ib
    return (a.T @ b) * ia[:, None] * ib[None, :]


def covariate_encoding(adata_manager: AnnDataManager, loading: bool) -> dict[str, Any]:
    """How the registered covariates become design columns (see :meth:`SpexLVM.setup_anndata`).

    ``levels`` (per categorical covariate, batch first), ``n_continuous``, ``columns``
    (names of the design columns, e.g. ``batch[b2]``), ``keys`` (the covariate key of
    each column), ``centre`` / ``scale`` (over the training cells; placeholders when
    a saved model is loaded) and ``design(index)``: the centred, scaled design of
    training cells.
    """
    setup = adata_manager.registry["setup_args"]
    registered = adata_manager.data_registry
    cat_keys, levels, names = [], [], []
    if REGISTRY_KEYS.BATCH_KEY in registered:
        state = adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        cat_keys.append(str(setup["batch_key"]))
        names.append(np.asarray(state.categorical_mapping))
    if REGISTRY_KEYS.CAT_COVS_KEY in registered:
        state = adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        for key in state.field_keys:
            cat_keys.append(str(key))
            names.append(np.asarray(state.mappings[key]))
    levels = [len(n) for n in names]
    single = [k for k, n in zip(cat_keys, levels, strict=True) if n < 2]
    if single and not loading:
        warnings.warn(
            f"Categorical covariate(s) {single} have a single category in these cells: "
            "there is no effect to fit. Drop them from batch_key / "
            "categorical_covariate_keys.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    cont_keys = []
    if REGISTRY_KEYS.CONT_COVS_KEY in registered:
        state = adata_manager.get_state_registry(REGISTRY_KEYS.CONT_COVS_KEY)
        cont_keys = [str(c) for c in state.columns]
    columns, keys, column_levels = [], [], []
    for key, cats in zip(cat_keys, names, strict=True):
        columns += [f"{key}[{c}]" for c in cats[1:]]
        keys += [key] * (len(cats) - 1)
        column_levels += [str(c) for c in cats[1:]]
    columns += cont_keys
    keys += cont_keys
    column_levels += [""] * len(cont_keys)
    out: dict[str, Any] = {
        "levels": tuple(levels),
        "n_continuous": len(cont_keys),
        "columns": columns,
        "keys": keys,
        "column_levels": column_levels,
        "n_columns": len(columns),
    }
    if not columns or loading:
        out["centre"] = np.zeros(len(columns))
        out["scale"] = np.ones(len(columns))
        return out
    fields = {k: v.numpy() for k, v in obs_fields(adata_manager).items()}

    def raw(index: np.ndarray | slice) -> np.ndarray:
        return one_hot_design(
            {k: torch.as_tensor(v[index]) for k, v in fields.items()},
            out["levels"],
            out["n_continuous"],
        ).numpy()

    full = raw(slice(None)).astype(np.float64)
    centre = full.mean(0)
    sd = np.ones(len(columns))
    if cont_keys:
        sd[-len(cont_keys) :] = full[:, -len(cont_keys) :].std(0)
        constant = [k for k, v in zip(cont_keys, sd[-len(cont_keys) :], strict=True) if v == 0]
        if constant:
            raise ValueError(
                f"Continuous covariate(s) {constant} are constant over the cells: they "
                "explain nothing. Drop them from continuous_covariate_keys."
            )
    out["centre"], out["scale"] = centre, sd
    out["design"] = lambda index: (raw(index) - centre) / sd
    return out
