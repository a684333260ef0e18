"""The spex-LVM Pyro module: the generative model, its variational family and its ELBO.

The model (paper section 2; the architecture page of the docs, ``docs/architecture.md``,
"The model") is written as a Pyro program in
:meth:`SpexLVMModule.model`; the variational family is the Pyro program
:meth:`SpexLVMModule.guide`. Training maximises the same ELBO that Pyro's
:class:`~pyro.infer.Trace_ELBO` estimates by sampling, but evaluated in closed form by
:meth:`SpexLVMModule.analytic_elbo` (see :class:`AnalyticELBO`):

* the expected Gaussian log-likelihood under the mean-field posterior of the loadings,
* cell scores whose posterior is the *optimal* Gaussian given the loadings (a K x K
  linear solve, no per-cell parameters: minibatches can stream and new cells project),
* the regularised horseshoe expectations in closed form; the two that involve
  ``E[softplus(z)]`` for a normal z use a six-component normal-mixture form of the
  logistic, exact to 1e-7 per entry whatever the mean and variance of z,
* optional known covariates (batches, donors, library size, ...) as fixed effects
  ``C B^T`` with a Gaussian prior on ``B`` and a Gaussian posterior (see
  :meth:`SpexLVMModule.covariate_design`).

The result is a deterministic, low-variance objective whose gradient needs two
``B x G x K`` matrix products per minibatch.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import ELBO
from scvi.module.base import PyroBaseModuleClass, auto_move_data
from torch import nn

from ._constants import REGISTRY_KEYS

_LOG_2PI = math.log(2.0 * math.pi)
# bounds of the log standard deviations of the log-normal and normal factors of q
_LOG_SD_MIN, _LOG_SD_MAX = -9.0, 3.0


class _SharedScaleMVN(dist.MultivariateNormal):
    """Multivariate normal whose draws multiply by one shared Cholesky factor as one matmul.

    Cell scores share one K x K covariance over the minibatch. The stock ``rsample``
    multiplies it into every cell's noise vector as a batch of broadcast matrix-vector
    products: 27 s instead of 0.5 s for 8,388 cells at K = 1,000. Same draws as the
    stock one (same noise, same Cholesky factor).
    """

    def rsample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        scale_tril = self._unbroadcasted_scale_tril
        if scale_tril.dim() != 2:
            return super().rsample(sample_shape)
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        return self.loc + eps @ scale_tril.mT


# The logistic density as a mixture of six centred normals (weight a_i, standard deviation
# sigma_i): sigmoid(x) ~ sum_i a_i Phi(x / sigma_i) within 1.4e-7 and softplus(x) ~
# sum_i a_i E[relu(x + sigma_i e)], e ~ N(0, 1), within 9.2e-8, for every real x (fitted
# towards minimax in float64 on x in [0, 45] by benchmarks/logistic_mixture.py, checked on
# a finer grid of [0, 50]; the errors are odd or even in x and vanish beyond). Expectations
# under a normal distribution then have a closed form whose error is bounded by the same
# numbers whatever the mean and standard deviation (see :class:`_ExpectedSoftplus`).
_LOGISTIC_MIXTURE = (
    (0.022211581501891352, 0.8381584123889824),
    (0.19328051103809135, 1.1378123504290016),
    (0.3875530561183693, 1.5362827323768362),
    (0.30023551591674336, 2.0811689791740675),
    (0.09057413439221734, 2.8172410180164813),
    (0.0061452010326871484, 3.8285953255747156),
)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


class _ExpectedSoftplus(torch.autograd.Function):
    """``E[softplus(z)]``, z ~ N(mean, sd^2), in closed form up to an error below 1e-7.

    With the logistic density written as a mixture of normals N(0, sigma_i^2) (weights
    a_i), ``softplus(z) = E[relu(z + e)]`` with e from the mixture, so
    ``E[softplus(z)] = sum_i a_i (mean Phi(mean / S_i) + S_i phi(mean / S_i))`` with
    ``S_i = sqrt(sd^2 + sigma_i^2)``. The derivatives are ``sum_i a_i Phi(mean / S_i)``
    (mean) and ``sum_i a_i phi(mean / S_i) sd / S_i`` (sd): the exact derivatives of the
    value, within 1.4e-7 of ``E[sigmoid(z)]`` and 1.1e-7 of ``E[sigmoid(z) (z - mean) / sd]``
    (the mixture's error on the sigmoid, times ``E|t|`` for the latter).

    Fused: one pass per mixture component accumulates the value and both derivatives, so
    no ``... x n_components`` tensor is built (0.88-0.98x the CPU time of the 12-node
    Gauss-Hermite rule it replaces; benchmarks/quadrature_error.py).
    """

    @staticmethod
    def forward(ctx, mean, sd):
        var = sd * sd
        value = torch.zeros_like(mean)  # sum_i a_i S_i phi_i until the last line
        d_mean = torch.zeros_like(mean)
        d_sd = torch.zeros_like(mean)
        total_sd = torch.empty_like(mean)
        inv_sd = torch.empty_like(mean)
        u = torch.empty_like(mean)
        tmp = torch.empty_like(mean)
        for weight, scale in _LOGISTIC_MIXTURE:
            torch.sqrt(torch.add(var, scale * scale, out=total_sd), out=total_sd)
            torch.reciprocal(total_sd, out=inv_sd)
            torch.mul(mean, inv_sd, out=u).mul_(-_SQRT_HALF)  # -mean / (S_i sqrt(2))
            # Phi(mean / S_i) = erfc(u) / 2
            d_mean.add_(torch.special.erfc(u, out=tmp), alpha=0.5 * weight)
            # sqrt(2 pi) phi(mean / S_i) = exp(-u^2)
            torch.exp(torch.mul(u, u, out=tmp).neg_(), out=tmp)
            value.addcmul_(total_sd, tmp, value=weight * _INV_SQRT_2PI)
            d_sd.addcmul_(inv_sd, tmp, value=weight * _INV_SQRT_2PI)
        value.addcmul_(mean, d_mean)
        d_sd.mul_(sd)
        ctx.save_for_backward(d_mean, d_sd)
        return value

    @staticmethod
    def backward(ctx, grad):
        d_mean, d_sd = ctx.saved_tensors
        return grad * d_mean, grad * d_sd


def _expected_softplus(mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """``E[log(1 + exp(z))]`` for z ~ N(mean, sd^2), within 1e-7 (:class:`_ExpectedSoftplus`)."""
    mean, sd = torch.broadcast_tensors(mean, sd)
    return _ExpectedSoftplus.apply(mean, sd)


def overlap_logit(rho: float, largest: float = 1.0) -> float:
    """The logit that gives ``rho = largest * sigmoid(logit)``.

    ``rho / largest`` is clipped to ``[1e-4, 1 - 1e-6]``, so that the logit is finite.
    """
    share = min(max(rho / largest, 1e-4), 1.0 - 1e-6)
    return math.log(share / (1.0 - share))


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is finite (no NaN, no infinity).

    A non-finite entry makes the sum non-finite, so a finite sum settles it with one
    reduction; only a sum that overflowed (or a tensor with a non-finite entry) is checked
    entry by entry. ``torch.isfinite(x).all()`` alone builds a mask of the whole tensor: at
    the paper's size (10,000 x 8,000, one thread) ``torch.isfinite`` took 5.0 s of a
    ``tl.fit``, nearly all of it in three such checks (``benchmarks/fit_profile.py``).
    """
    if not x.numel():
        return True
    if bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def _column_sumsq(x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_n (x_ng - shift_g)^2`` in one pass over ``x``, a few rows at a time.

    No copy of ``x`` (the minibatch can hold 2^27 entries): on the CPU 64 rows at a time
    (the cost of ``x.sum(0)``), elsewhere blocks of 2^24 entries.
    """
    n, g = x.shape
    rows = 64 if x.device.type == "cpu" else 2**24 // max(g, 1)
    rows = max(1, min(rows, n))
    acc = torch.zeros(rows, g, dtype=x.dtype, device=x.device)
    diff = torch.empty_like(acc)
    for block in x.split(rows):
        k = block.shape[0]
        d = block if shift is None else torch.sub(block, shift, out=diff[:k])
        acc[:k].addcmul_(d, d)
    return acc.sum(0)


def one_hot_design(
    tensors: dict[str, torch.Tensor], levels: tuple[int, ...], n_continuous: int
) -> torch.Tensor:
    """The raw covariate design of some cells (before centring and scaling).

    ``tensors`` holds scvi-tools' registered covariates: the batch codes (``"batch"``),
    the other categorical codes (``"extra_categorical_covs"``) and the continuous values
    (``"extra_continuous_covs"``). Each categorical covariate (``levels[j]`` levels, the
    batch first) gives one-hot columns of its levels but the first (the reference level);
    the continuous covariates follow.
    """
    parts = [
        tensors[key].reshape(tensors[key].shape[0], -1)
        for key in (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CAT_COVS_KEY)
        if key in tensors
    ]
    codes = torch.cat(parts, 1).long() if parts else None
    n_codes = 0 if codes is None else codes.shape[1]
    if n_codes != len(levels):
        raise ValueError(
            f"The minibatch holds {n_codes} categorical covariate(s), the model "
            f"{len(levels)}: register the AnnData with the same keys."
        )
    columns = [F.one_hot(codes[:, j], n)[:, 1:].float() for j, n in enumerate(levels)]
    if n_continuous:
        cont = tensors[REGISTRY_KEYS.CONT_COVS_KEY]
        columns.append(cont.reshape(cont.shape[0], -1).float())
    return torch.cat(columns, 1)


def _lognormal_entropy(loc: torch.Tensor, log_sd: torch.Tensor) -> torch.Tensor:
    return loc + log_sd + 0.5 * (1.0 + _LOG_2PI)


class SpexLVMModule(PyroBaseModuleClass):
    """spex-LVM: factor analysis with a gene-set informed regularised horseshoe prior.

    ``Y = X W^T + noise`` for centred, scaled log-expression ``Y`` (cells x genes),
    ``K = A + S + D`` factors (annotated, sparse unannotated, dense unannotated).

    Parameters
    ----------
    n_obs
        Number of training cells (scales the minibatch likelihood).
    slab
        Slab widths ``s_{g,k}`` (genes x factors).
    gene_mean
        Per-gene mean of the input, subtracted before the model sees it.
    data_scale
        Global scale of the centred input; the model sees ``(x - mean) / scale``.
    n_observed
        Per-gene number of observed (non-NaN) training cells.
    init_loadings
        Initial loading means (genes x factors, on the model's scale).
    init_noise_var
        Initial per-gene noise variance (on the model's scale).
    dense
        Bool per factor: ``True`` for dense factors, whose loadings have a Gaussian prior
        instead of the horseshoe: ``N(0, (factor_scale_k s_gk)^2)``, or with
        ``dense_noise_scaled`` ``N(0, s_gk^2 / precision_g)``.
    dense_noise_scaled
        Whether the dense factors' prior scale is relative to each gene's noise: loadings
        ``N(0, s_gk^2 / precision_g)`` (a g-prior: ``s_gk^2 = g / n_obs``), with no factor
        scale. ``False``: ``N(0, (factor_scale_k s_gk)^2)`` (spexlvm 0.1).
    gene_sumsq
        Per-gene sum of squares of the centred, scaled training data (a constant of the
        ELBO, used exactly instead of its minibatch estimate).
    slab_df
        Degrees of freedom of the slab: ``c_aux ~ InverseGamma(slab_df / 2, slab_df / 2)``
        (1: the paper's Cauchy slab).
    noise_prior
        Shape and rate of the Gamma prior on the per-gene noise precision.
    n_quadrature
        Deprecated and ignored: the horseshoe expectations no longer use Gauss-Hermite
        quadrature (see :class:`_ExpectedSoftplus`).
    covariate_levels
        Number of levels of each categorical covariate (the batch first, then the other
        categorical covariates). Each enters the design ``C`` as one-hot columns of its
        levels but the first (the reference level), centred over the training cells.
    n_continuous
        Number of continuous covariates (standardised columns of ``C``).
    covariate_centre, covariate_scale
        Centring and scaling of the design columns (``P`` each): the model sees
        ``(c - centre) / scale``.
    covariate_prior_scale
        Standard deviation ``s`` of the Gaussian prior ``B_gp ~ N(0, s^2)`` of the covariate
        effects (model scale).
    init_covariate_effects
        Initial posterior means of the covariate effects (genes x ``P``).
    score_overlap_corr
        ``C`` (K x K, unit diagonal, positive semi-definite): how much the factors' gene
        sets overlap. The cell scores have the prior ``x_n ~ N(0, R)`` with
        ``R = (1 - rho) I + rho C``. ``None``: the identity (independent scores, the
        paper's prior, whatever ``rho``).
    score_overlap
        ``rho`` in [0, 1): fixed, or the start when learned.
    learn_score_overlap
        Whether ``rho`` is learned by maximising the ELBO (a point estimate, empirical
        Bayes) instead of fixed.
    score_overlap_max
        Upper bound of ``rho`` in (0, 1]: ``rho = score_overlap_max * sigmoid(logit)``.
        Learned without a bound, ``rho`` can creep towards 1 (``R -> C``), where the
        scores of related sets become near copies of one another; see
        :class:`~spexlvm.SpexLVM`.
    """

    def __init__(
        self,
        n_obs: int,
        slab: torch.Tensor,
        gene_mean: torch.Tensor,
        data_scale: float,
        n_observed: torch.Tensor,
        init_loadings: torch.Tensor,
        init_noise_var: torch.Tensor,
        *,
        gene_sumsq: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
        dense_noise_scaled: bool = False,
        slab_df: float = 1.0,
        noise_prior: tuple[float, float] = (1.0, 1.0),
        n_quadrature: int | None = None,
        covariate_levels: tuple[int, ...] = (),
        n_continuous: int = 0,
        covariate_centre: torch.Tensor | None = None,
        covariate_scale: torch.Tensor | None = None,
        covariate_prior_scale: float = 1.0,
        init_covariate_effects: torch.Tensor | None = None,
        score_overlap_corr: torch.Tensor | None = None,
        score_overlap: float = 0.0,
        learn_score_overlap: bool = False,
        score_overlap_max: float = 1.0,
        shared_local_scale: torch.Tensor | None = None,
    ):
        super().__init__()
        n_vars, n_factors = slab.shape
        self.n_obs = int(n_obs)
        self.n_vars = int(n_vars)
        self.n_factors = int(n_factors)
        f32 = torch.float32

        self.register_buffer("slab", slab.to(f32))
        self.register_buffer("log_slab", torch.log(slab.to(f32)))
        self.register_buffer(
            "dense",
            torch.zeros(n_factors, dtype=torch.bool) if dense is None else dense.to(torch.bool),
        )
        # a setting, not state: not in the state dict, so that models saved before it load
        self.register_buffer(
            "dense_noise_scaled", torch.tensor(bool(dense_noise_scaled)), persistent=False
        )
        if not slab_df > 0:
            raise ValueError(f"slab_df must be positive, got {slab_df!r}.")
        # a setting (c_aux ~ InverseGamma(df / 2, df / 2)), not state, as dense_noise_scaled
        self.register_buffer("slab_df", torch.tensor(float(slab_df)), persistent=False)
        self.register_buffer("gene_mean", gene_mean.to(f32))
        self.register_buffer("data_scale", torch.tensor(float(data_scale), dtype=f32))
        a0, b0 = noise_prior
        self.register_buffer("noise_prior_shape", torch.tensor(float(a0), dtype=f32))
        self.register_buffer("noise_prior_rate", torch.tensor(float(b0), dtype=f32))
        # the optimal shape of q(precision_g) is known in closed form: a0 + n_g / 2
        self.register_buffer("prec_shape", a0 + 0.5 * n_observed.to(f32))
        if n_quadrature is not None:
            warnings.warn(
                "SpexLVMModule(n_quadrature=...) is deprecated and ignored: the expectations "
                "it set are now exact to 1e-7 without quadrature. Drop the argument.",
                FutureWarning,
                stacklevel=2,
            )
        # data constants of the ELBO: whether any value is missing and sum_n y_ng^2
        self.register_buffer("has_missing", torch.tensor(bool((n_observed < n_obs).any())))
        self.register_buffer(
            "gene_sumsq",
            torch.zeros(n_vars, dtype=f32) if gene_sumsq is None else gene_sumsq.to(f32),
        )

        gk = (n_vars, n_factors)
        # q(w) = Normal(w_loc, exp(w_log_sd))
        self.w_loc = nn.Parameter(init_loadings.to(f32).clone())
        self.w_log_sd = nn.Parameter(torch.full(gk, math.log(0.05)))
        # q(lambda), q(c_aux), q(factor_scale), q(tau): log-normal
        self.lam_loc = nn.Parameter(torch.zeros(gk))
        self.lam_log_sd = nn.Parameter(torch.full(gk, math.log(0.5)))
        self.caux_loc = nn.Parameter(torch.zeros(gk))
        self.caux_log_sd = nn.Parameter(torch.full(gk, math.log(0.5)))
        self.phi_loc = nn.Parameter(torch.zeros(n_factors))
        self.phi_log_sd = nn.Parameter(torch.full((n_factors,), math.log(0.5)))
        self.tau_loc = nn.Parameter(torch.zeros(()))
        self.tau_log_sd = nn.Parameter(torch.full((), math.log(0.5)))
        # q(precision_g) = Gamma(prec_shape_g, exp(prec_log_rate_g))
        self.prec_log_rate = nn.Parameter(
            torch.log(self.prec_shape * init_noise_var.to(f32).clamp_min(1e-4))
        )
        self._init_covariates(
            covariate_levels,
            n_continuous,
            covariate_centre,
            covariate_scale,
            covariate_prior_scale,
            init_covariate_effects,
        )
        self._init_score_prior(
            score_overlap_corr, score_overlap, learn_score_overlap, score_overlap_max
        )
        self._init_shared_local_scale(shared_local_scale)

    def _init_score_prior(
        self, overlap_corr: torch.Tensor | None, overlap: float, learn: bool, largest: float = 1.0
    ) -> None:
        """The scores' prior ``N(0, R)``, ``R = (1 - rho) I + rho C``, ``rho <= largest``.

        ``C`` is kept as its eigendecomposition, so that ``R^-1`` and ``log |R|`` are exact
        and cheap for any ``rho`` (eigenvalues ``d_i = 1 - rho + rho lambda_i``).

        ``C``'s eigenvectors are state (:meth:`flip_factors` changes their signs), so are
        ``rho`` (learned or fixed): models saved before the prior existed load with
        independent scores (:meth:`_load_from_state_dict`).
        """
        k = self.n_factors
        corr = torch.eye(k, dtype=torch.float64) if overlap_corr is None else overlap_corr
        corr = corr.to(torch.float64)
        if corr.shape != (k, k) or not torch.allclose(corr, corr.T):
            raise ValueError(f"score_overlap_corr must be a symmetric {k} x {k} matrix.")
        if not torch.allclose(torch.diagonal(corr), torch.ones(k, dtype=corr.dtype)):
            raise ValueError("score_overlap_corr must have a unit diagonal.")
        eig, basis = torch.linalg.eigh(corr)
        if float(eig.min()) < -1e-6:
            raise ValueError("score_overlap_corr must be positive semi-definite.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"score_overlap must lie in [0, 1), got {overlap!r}.")
        if not 0.0 < largest <= 1.0:
            raise ValueError(f"score_overlap_max must lie in (0, 1], got {largest!r}.")
        if overlap >= largest:
            raise ValueError(
                f"score_overlap={overlap!r} must be below score_overlap_max={largest!r}: "
                "rho starts below its bound."
            )
        self.register_buffer("score_overlap_basis", basis.float())
        self.register_buffer("score_overlap_eig", eig.clamp_min(0.0).float())
        # rho's bound (state: a saved model keeps it; models saved before it: no bound)
        self.register_buffer("score_overlap_max", torch.tensor(float(largest)))
        overlapping = not torch.allclose(corr, torch.eye(k, dtype=corr.dtype))
        # rho = largest * sigmoid(logit): learned by the ELBO (empirical Bayes; only when
        # some sets overlap: otherwise rho changes nothing) or fixed
        logit = overlap_logit(overlap, largest)
        self.score_overlap_logit = nn.Parameter(
            torch.tensor(logit), requires_grad=bool(learn and overlapping)
        )
        # rho exactly 0 unless asked: independent scores as in the paper
        self.register_buffer("score_overlap_on", torch.tensor(overlap > 0.0 or learn))
        self.register_buffer("score_overlap_any", torch.tensor(overlapping))
        self._read_score_prior_flags()

    def _init_shared_local_scale(self, groups: torch.Tensor | None) -> None:
        """One horseshoe local scale per gene for the entries in ``groups`` (genes x factors).

        Entry ``(g, k)`` in ``groups`` has the local scale ``lambda_g`` (shared by every
        such entry of gene g) instead of its own ``lambda_gk``: a gene that several gene
        sets hold is then either on in all of their factors or off in all, and the
        Gaussian given the scales lets the factors share its loading instead of the
        horseshoe giving it to one of them. The entries' own ``lambda_gk`` are then not in
        the model (nor in the ELBO).
        """
        g, k = self.n_vars, self.n_factors
        mask = torch.zeros(g, k, dtype=torch.bool) if groups is None else groups.to(torch.bool)
        if mask.shape != (g, k):
            raise ValueError(f"shared_local_scale must be a {g} x {k} mask.")
        self.register_buffer("lam_shared", mask)
        # genes with a shared scale (derived from the mask, so not saved)
        self.register_buffer("lam_shared_genes", mask.any(1), persistent=False)
        self.lam_gene_loc = nn.Parameter(torch.zeros(g))
        self.lam_gene_log_sd = nn.Parameter(torch.full((g,), math.log(0.5)))
        self._read_shared_scale_flag()

    def _read_shared_scale_flag(self) -> None:
        self._shared_scale = bool(self.lam_shared.any())
        self.lam_shared_genes = self.lam_shared.any(1)
        # the genes' scales are parameters only where some loading shares them
        self.lam_gene_loc.requires_grad_(self._shared_scale)
        self.lam_gene_log_sd.requires_grad_(self._shared_scale)

    def local_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and clamped log sd of ``q(log lambda)`` for every loading (genes x factors)."""
        loc, lsd = self.lam_loc, self._log_sd(self.lam_log_sd)
        if not self._shared_scale:
            return loc, lsd
        gene_lsd = self._log_sd(self.lam_gene_log_sd)
        loc = torch.where(self.lam_shared, self.lam_gene_loc[:, None], loc)
        return loc, torch.where(self.lam_shared, gene_lsd[:, None], lsd)

    def _read_score_prior_flags(self) -> None:
        # the two flags as Python bools, read on every step without a device sync
        self._overlap_on = bool(self.score_overlap_on)
        self._correlated = self._overlap_on and bool(self.score_overlap_any)

    @property
    def learn_score_overlap(self) -> bool:
        """Whether ``rho`` is learned (by the ELBO) rather than fixed."""
        return bool(self.score_overlap_logit.requires_grad)

    def score_overlap(self) -> torch.Tensor:
        """``rho``, the weight of the sets' overlap in the scores' prior correlation."""
        if not self._overlap_on:
            return torch.zeros((), device=self.score_overlap_logit.device)
        return self.score_overlap_max * torch.sigmoid(self.score_overlap_logit)

    @property
    def correlated_scores(self) -> bool:
        """Whether the scores' prior correlation is not the identity."""
        return self._correlated

    def _score_prior_eigenvalues(self) -> torch.Tensor:
        rho = self.score_overlap()
        return (1.0 - rho + rho * self.score_overlap_eig).clamp_min(1e-6)

    def score_prior_precision(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``R^-1`` (K x K) and ``log |R|`` of the scores' prior; differentiable in ``rho``.

        With ``rho`` fixed the result is computed once (``K^3``) and kept until the prior
        changes (a flip, a state dict loaded, a move to another device); with ``rho``
        learned it is computed at every call.
        """
        v = self.score_overlap_basis
        if not self.correlated_scores:
            eye = torch.eye(self.n_factors, device=v.device)
            return eye, torch.zeros((), device=v.device)
        logit = self.score_overlap_logit
        top = self.score_overlap_max
        key = (v.data_ptr(), v._version, logit.data_ptr(), logit._version, top._version, v.device)
        cache = getattr(self, "_score_prior_cache", None)
        if not logit.requires_grad and cache is not None and cache[0] == key:
            return cache[1], cache[2]
        d = self._score_prior_eigenvalues()
        prec, logdet = (v / d) @ v.T, torch.log(d).sum()
        if not logit.requires_grad:
            self._score_prior_cache = (key, prec, logdet)
        return prec, logdet

    #: Variational parameters whose last axis is the factor axis (the loadings, their
    #: horseshoe scales and the factor scales).
    FACTOR_PARAMETERS = (
        "w_loc",
        "w_log_sd",
        "lam_loc",
        "lam_log_sd",
        "caux_loc",
        "caux_log_sd",
        "phi_loc",
        "phi_log_sd",
    )

    def factor_parameters(self) -> list[nn.Parameter]:
        """The parameters of :attr:`FACTOR_PARAMETERS`, by name.

        :class:`~spexlvm.train.FactorwiseAdam` counts their steps per factor. Named, not
        told by shape: a per-gene parameter has ``n_factors`` entries too when
        ``n_vars == n_factors``.
        """
        return [getattr(self, name) for name in self.FACTOR_PARAMETERS]

    def score_prior_cov(self) -> torch.Tensor:
        """``R``, the scores' prior covariance (K x K)."""
        v = self.score_overlap_basis
        return (v * self._score_prior_eigenvalues()) @ v.T

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved before the scores' prior correlation: independent scores
        k = self.n_factors
        dev = self.score_overlap_basis.device
        state_dict.setdefault(prefix + "score_overlap_basis", torch.eye(k, device=dev))
        state_dict.setdefault(prefix + "score_overlap_eig", torch.ones(k, device=dev))
        state_dict.setdefault(prefix + "score_overlap_logit", torch.tensor(-9.21, device=dev))
        state_dict.setdefault(prefix + "score_overlap_on", torch.tensor(False, device=dev))
        state_dict.setdefault(prefix + "score_overlap_any", torch.tensor(False, device=dev))
        # models saved before rho had a bound: none
        state_dict.setdefault(prefix + "score_overlap_max", torch.tensor(1.0, device=dev))
        # models saved before the shared local scales: every loading its own
        g = self.n_vars
        state_dict.setdefault(
            prefix + "lam_shared", torch.zeros(g, k, dtype=torch.bool, device=dev)
        )
        state_dict.setdefault(prefix + "lam_gene_loc", torch.zeros(g, device=dev))
        state_dict.setdefault(
            prefix + "lam_gene_log_sd", torch.full((g,), math.log(0.5), device=dev)
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._read_score_prior_flags()
        self._read_shared_scale_flag()

    @torch.no_grad()
    def flip_factors(self, signs: torch.Tensor) -> None:
        """Flip factors' signs (``signs``: +1 / -1 per factor) in q(w) and the scores' prior.

        The model is symmetric under ``(x_k, w_k) -> (-x_k, -w_k)`` when the prior
        correlations of factor k flip with it (``C -> D C D``: the eigenvectors' rows flip),
        so the fit is unchanged.
        """
        signs = signs.to(self.w_loc)
        self.w_loc.mul_(signs)
        self.score_overlap_basis.mul_(signs[:, None])

    def score_kl_shift(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """How much ``kl_x`` changed since the statistics were taken, differentiable in rho.

        ``kl_x`` of ``stats`` under the current ``rho`` minus its value under the ``rho``
        the statistics were taken with (0 with independent scores).

        The score posterior is held fixed (it was optimal for the old ``rho``); this is the
        whole dependence of the ELBO on ``rho``. ``stats``: summed over any minibatches
        (``moment`` = sum_n E[x_n x_n^T], ``prior_quad``, ``prior_logdet_n``, ``n_cells``).
        0 unless ``rho`` is learned (a fixed ``rho`` never changes).
        """
        if not (self.learn_score_overlap and self.correlated_scores):
            return torch.zeros((), device=self.score_overlap_basis.device)
        prec, logdet = self.score_prior_precision()
        moment = stats["moment"].to(prec.dtype)
        quad = (prec * moment).sum() - stats["prior_quad"]
        return 0.5 * (quad + stats["n_cells"] * logdet - stats["prior_logdet_n"])

    def _init_covariates(
        self,
        levels: tuple[int, ...],
        n_continuous: int,
        centre: torch.Tensor | None,
        scale: torch.Tensor | None,
        prior_scale: float,
        init: torch.Tensor | None,
    ) -> None:
        """Buffers and variational parameters of the covariate effects (none without any)."""
        self.covariate_levels = tuple(int(n) for n in levels)
        if any(n < 1 for n in self.covariate_levels) or n_continuous < 0:
            raise ValueError("Covariate levels must be positive and n_continuous >= 0.")
        self.n_continuous = int(n_continuous)
        self.n_covariates = sum(n - 1 for n in self.covariate_levels) + self.n_continuous
        if not self.n_covariates:
            return
        f32, p = torch.float32, self.n_covariates
        self.register_buffer(
            "cov_centre", torch.zeros(p, dtype=f32) if centre is None else centre.to(f32)
        )
        self.register_buffer(
            "cov_scale", torch.ones(p, dtype=f32) if scale is None else scale.to(f32)
        )
        self.register_buffer("cov_prior_scale", torch.tensor(float(prior_scale), dtype=f32))
        # q(B) = Normal(cov_loc, exp(cov_log_sd)), genes x design columns
        self.cov_loc = nn.Parameter(
            torch.zeros(self.n_vars, p, dtype=f32) if init is None else init.to(f32).clone()
        )
        self.cov_log_sd = nn.Parameter(torch.full((self.n_vars, p), math.log(0.05)))

    # ------------------------------------------------------------------ scvi hooks
    def _get_fn_args_from_batch(self, tensor_dict: dict[str, torch.Tensor]):
        if not self.n_covariates:
            return (tensor_dict["X"],), {}
        return (tensor_dict["X"],), {"design": self.covariate_design(tensor_dict)}

    def covariate_design(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The design ``C`` (cells x ``P``) of a minibatch from its registered covariates.

        ``tensors`` holds the codes of the batch (``"batch"``, cells x 1) and of the other
        categorical covariates (``"extra_categorical_covs"``, cells x n) and the continuous
        covariates (``"extra_continuous_covs"``), as scvi-tools registers them. Each
        categorical covariate gives one-hot columns of its levels but the first; every
        column is centred and scaled with the training cells' statistics. ``None`` when the
        model has no covariates.
        """
        if not self.n_covariates:
            return None
        design = one_hot_design(tensors, self.covariate_levels, self.n_continuous)
        design = design.to(device=self.cov_centre.device, dtype=self.cov_centre.dtype)
        return (design - self.cov_centre) / self.cov_scale

    def covariate_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the covariate effects (genes x ``P``, model scale)."""
        return self.cov_loc, self._sd(self.cov_log_sd) ** 2

    def covariate_kl(self) -> torch.Tensor:
        """``KL(q(B) || p(B))`` of the covariate effects, Gaussian prior ``N(0, s^2)``."""
        log_sd = self._log_sd(self.cov_log_sd)
        s2 = self.cov_prior_scale**2
        kl = (
            torch.log(self.cov_prior_scale)
            - log_sd
            + 0.5 * (torch.exp(2.0 * log_sd) + self.cov_loc**2) / s2
            - 0.5
        )
        return kl.sum()

    def _covariate_sq_err(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the covariates add to the minibatch's per-gene expected squared error.

        :meth:`expected_log_likelihood` is that of the model without covariates;
        :meth:`analytic_elbo` adds ``-1/2 E[precision_g]`` times this (scaled) per gene.

        ``E sum_n o (y - c B^T - x W^T)^2`` minus the same without covariates:
        ``-2 b.(Y^T C) + sum_n o (c b)^2 + sum_n o c^2 var(b) + 2 w.(sum_n o (c b) m_n)``.
        """
        b, b_var = self.covariate_moments()
        mu = self.w_loc
        cov = stats["cov"]
        if "cc" in cov and cov["cc"].dim() == 2:  # complete data: P x P and P x K
            cc = cov["cc"]
            out = ((b @ cc) * b).sum(-1) + b_var @ torch.diagonal(cc)
            out = out + 2.0 * (mu * (b @ cov["cm"])).sum(-1)
        elif "cc" in cov:  # summed per gene (G x P x P, G x P x K; coordinate ascent)
            cc = cov["cc"]
            out = torch.einsum("gp,gpq,gq->g", b, cc, b)
            out = out + (b_var * torch.diagonal(cc, dim1=-2, dim2=-1)).sum(-1)
            out = out + 2.0 * torch.einsum("gk,gpk,gp->g", mu, cov["cm"], b)
        else:  # missing values: per cell and gene
            effect = cov["design"] @ b.T
            effect_o = effect * cov["observed"]
            out = (effect_o * effect).sum(0) + (b_var * cov["c2o"]).sum(-1)
            out = out + 2.0 * (mu * (effect_o.T @ cov["means"])).sum(-1)
        return out - 2.0 * (b * cov["yc"]).sum(-1)

    @property
    def model(self):
        """The generative model, a Pyro program (see :meth:`_model`)."""
        return self._model

    @property
    def guide(self):
        """The variational family, a Pyro program (see :meth:`_guide`)."""
        return self._guide

    def on_load(self, model, **kwargs):
        """Nothing to warm up: every parameter is an ``nn.Parameter`` restored from the state."""
        pyro.clear_param_store()

    # ------------------------------------------------------------------ helpers
    def _prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Centre and scale a minibatch; return values (NaN -> 0) and the observed mask."""
        y = (x.to(torch.float32) - self.gene_mean) / self.data_scale
        if all_finite(y):
            return y, None
        observed = torch.isfinite(y)
        return torch.where(observed, y, torch.zeros((), dtype=y.dtype, device=y.device)), observed

    def _sd(self, log_sd: torch.Tensor) -> torch.Tensor:
        return torch.exp(log_sd.clamp(_LOG_SD_MIN, _LOG_SD_MAX))

    def _log_sd(self, log_sd: torch.Tensor) -> torch.Tensor:
        return log_sd.clamp(_LOG_SD_MIN, _LOG_SD_MAX)

    def expected_precision(self) -> torch.Tensor:
        """Posterior mean of the per-gene noise precision (model scale)."""
        return self.prec_shape * torch.exp(-self.prec_log_rate)

    def loadings_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the loadings (model scale)."""
        return self.w_loc, self._sd(self.w_log_sd) ** 2

    def horseshoe_scale(
        self, tau: torch.Tensor, phi: torch.Tensor, lam: torch.Tensor, caux: torch.Tensor
    ) -> torch.Tensor:
        """Prior standard deviation of the loadings under the regularised horseshoe.

        ``sd = c u / sqrt(c^2 + u^2)`` with ``u = tau * phi_k * lambda_gk`` and
        ``c^2 = c_aux * s^2`` (Piironen & Vehtari 2017), written as
        ``1 / sd^2 = 1 / u^2 + 1 / c^2``. Dense factors have ``sd = phi_k s_gk`` (a Gaussian
        prior: a horseshoe with slab 1 everywhere would be as sparse as an annotated factor
        and free to take over a gene set's signal, false negatives included).
        """
        u2 = (tau * phi * lam) ** 2
        c2 = caux * self.slab**2
        return torch.where(self.dense, phi * self.slab, torch.rsqrt(1.0 / u2 + 1.0 / c2))

    def prior_scale(
        self,
        tau: torch.Tensor,
        phi: torch.Tensor,
        lam: torch.Tensor,
        caux: torch.Tensor,
        prec: torch.Tensor,
    ) -> torch.Tensor:
        """Prior standard deviation of every loading (genes x factors).

        :meth:`horseshoe_scale`, except that with ``dense_noise_scaled`` the dense factors'
        loadings have ``sd = s_gk / sqrt(precision_g)`` (a g-prior: the prior variance of a
        dense loading is ``g`` times its sampling variance from ``n_obs`` cells).
        """
        sd = self.horseshoe_scale(tau, phi, lam, caux)
        if not bool(self.dense_noise_scaled):
            return sd
        # precision: (G,) or, with vectorised particles, (..., 1, G) -> (..., G, 1)
        p = prec if prec.dim() == 1 else prec.squeeze(-2)
        return torch.where(self.dense, self.slab * torch.rsqrt(p.unsqueeze(-1)), sd)

    # ------------------------------------------------------------------ q(x | y)
    @torch.no_grad()
    def score_posterior(
        self,
        x: torch.Tensor,
        *,
        complete: bool | None = None,
        design: torch.Tensor | None = None,
    ) -> dict:
        """Optimal Gaussian posterior of the cell scores given q(W) and q(precision).

        Parameters
        ----------
        x
            Minibatch of raw input (cells x genes), NaN where missing.
        complete
            Whether ``x`` is known to have no missing values; ``None`` checks.
        design
            The cells' covariate design (:meth:`covariate_design`); required when the model
            has covariates. The scores explain ``y - C E[B]^T``.

        Returns
        -------
        A dict with ``means`` (B x K), ``cov`` (K x K shared, or B x K x K with missing
        values), ``logdet`` (log-determinant of the precision: scalar or B) and, with
        missing values, ``y`` (centred, scaled, 0 where missing; the covariate effects not
        subtracted) and ``observed`` (bool).
        Without missing values the centring is folded into the products: no elementwise
        pass over the minibatch.
        """
        mu, var = self.loadings_moments()
        p = self.expected_precision()
        x = x.to(mu.dtype)
        if self.n_covariates and design is None:
            raise ValueError("The model has covariates: pass the cells' `design`.")
        if complete is None:
            complete = all_finite(x)
        prior = self.score_prior_precision()[0].detach().to(mu.dtype)
        pmu = mu * p[:, None]
        if complete:
            prec = prior + mu.T @ pmu + torch.diag(p @ var)
            chol = torch.linalg.cholesky(prec)
            cov = torch.cholesky_inverse(chol)
            # (x - mean) / scale @ P mu, without forming the centred batch
            rhs = (x @ pmu - self.gene_mean @ pmu) / self.data_scale
            if self.n_covariates:
                rhs = rhs - design.to(mu.dtype) @ (self.cov_loc.T @ pmu)
            return {
                "means": rhs @ cov,
                "cov": cov,
                "logdet": 2.0 * torch.log(torch.diagonal(chol)).sum(),
            }
        y, observed = self._prepare(x)
        if observed is None:
            observed = torch.ones_like(y, dtype=torch.bool)
        o = observed.to(mu.dtype) * p
        # precision_n = R^-1 + sum_g o_ng p_g (mu_g mu_g^T + diag var_g)
        prec = prior + torch.einsum("bg,gk,gl->bkl", o, mu, mu) + torch.diag_embed(o @ var)
        chol = torch.linalg.cholesky(prec)
        cov = torch.cholesky_inverse(chol)
        y_fit = y
        if self.n_covariates:
            y_fit = y - (design.to(mu.dtype) @ self.cov_loc.T) * observed
        means = torch.einsum("bkl,bl->bk", cov, (y_fit * p) @ mu)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return {"means": means, "cov": cov, "logdet": logdet, "y": y, "observed": observed}

    @auto_move_data
    def get_scores(self, x: torch.Tensor, design: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means of the cell scores of a minibatch of raw input (cells x genes)."""
        return self.score_posterior(x, design=design)["means"]

    @auto_move_data
    def sample_scores(self, x: torch.Tensor, design: torch.Tensor | None = None) -> torch.Tensor:
        """One draw of the cell scores from their posterior (:meth:`score_posterior`)."""
        post = self.score_posterior(x, design=design)
        means, chol = post["means"], torch.linalg.cholesky(post["cov"])
        eps = torch.randn_like(means)
        if chol.dim() == 2:  # one covariance shared by the cells
            return means + eps @ chol.T
        return means + torch.einsum("bkl,bl->bk", chol, eps)

    # ------------------------------------------------------------------ Pyro programs
    def _model(self, x: torch.Tensor, design: torch.Tensor | None = None):
        """Generative model (paper eq. 2-5), as a Pyro program."""
        y, observed = self._prepare(x)
        n_batch = y.shape[0]
        dev = y.device
        one = torch.ones((), device=dev)
        tau = pyro.sample("tau", dist.HalfCauchy(one))
        with pyro.plate("genes_noise", self.n_vars, dim=-1):
            prec = pyro.sample(
                "precision", dist.Gamma(self.noise_prior_shape, self.noise_prior_rate)
            )
            if self._shared_scale:
                lam_gene = pyro.sample("lambda_gene", dist.HalfCauchy(one))
        with pyro.plate("factors", self.n_factors, dim=-1):
            phi = pyro.sample("factor_scale", dist.HalfCauchy(one))
            with pyro.plate("genes", self.n_vars, dim=-2):
                lam_prior = dist.HalfCauchy(one)
                if self._shared_scale:  # an entry's own scale only where it is not shared
                    lam_prior = lam_prior.expand(self.lam_shared.shape).mask(~self.lam_shared)
                lam = pyro.sample("lambda", lam_prior)
                if self._shared_scale:
                    # (G,) or, with vectorised particles, (..., 1, G) -> (..., G, 1)
                    g_lam = lam_gene if lam_gene.dim() == 1 else lam_gene.squeeze(-2)
                    lam = torch.where(self.lam_shared, g_lam.unsqueeze(-1), lam)
                half_df = 0.5 * self.slab_df.to(dev) * one
                caux = pyro.sample("c_aux", dist.InverseGamma(half_df, half_df))
                w_sd = self.prior_scale(tau, phi, lam, caux, prec)
                w = pyro.sample("w", dist.Normal(torch.zeros((), device=dev), w_sd))
        if self.n_covariates:
            with (
                pyro.plate("covariate_columns", self.n_covariates, dim=-1),
                pyro.plate("genes_covariates", self.n_vars, dim=-2),
            ):
                b = pyro.sample(
                    "covariate_effects",
                    dist.Normal(torch.zeros((), device=dev), self.cov_prior_scale),
                )
        with pyro.plate("cells", self.n_obs, subsample=torch.arange(n_batch, device=dev), dim=-1):
            if self.correlated_scores:
                prior_x = dist.MultivariateNormal(
                    torch.zeros(self.n_factors, device=dev),
                    covariance_matrix=self.score_prior_cov(),
                ).expand([n_batch])
            else:
                prior_x = (
                    dist.Normal(torch.zeros((), device=dev), one)
                    .expand([n_batch, self.n_factors])
                    .to_event(1)
                )
            z = pyro.sample("x", prior_x)
            # (..., B, K) @ (..., K, G); the leading dims allow vectorised particles
            w_t = w.transpose(-1, -2)
            loc = z @ (w_t.unsqueeze(-3) if w.dim() > 2 else w_t)
            if self.n_covariates:  # known effects: + C B^T
                b_t = b.transpose(-1, -2)
                loc = loc + design @ (b_t.unsqueeze(-3) if b.dim() > 2 else b_t)
            lik = dist.Normal(loc, torch.rsqrt(prec).unsqueeze(-2))
            if observed is not None:
                lik = lik.mask(observed)
            pyro.sample("y", lik.to_event(1), obs=y)

    def _guide(self, x: torch.Tensor, design: torch.Tensor | None = None):
        """Mean-field variational family, as a Pyro program (cell scores in closed form)."""
        n_batch = x.shape[0]
        pyro.sample("tau", dist.LogNormal(self.tau_loc, self._sd(self.tau_log_sd)))
        with pyro.plate("factors", self.n_factors, dim=-1):
            pyro.sample("factor_scale", dist.LogNormal(self.phi_loc, self._sd(self.phi_log_sd)))
            with pyro.plate("genes", self.n_vars, dim=-2):
                q_lam = dist.LogNormal(self.lam_loc, self._sd(self.lam_log_sd))
                if self._shared_scale:
                    q_lam = q_lam.mask(~self.lam_shared)
                pyro.sample("lambda", q_lam)
                pyro.sample("c_aux", dist.LogNormal(self.caux_loc, self._sd(self.caux_log_sd)))
                pyro.sample("w", dist.Normal(self.w_loc, self._sd(self.w_log_sd)))
        with pyro.plate("genes_noise", self.n_vars, dim=-1):
            pyro.sample("precision", dist.Gamma(self.prec_shape, torch.exp(self.prec_log_rate)))
            if self._shared_scale:
                pyro.sample(
                    "lambda_gene",
                    dist.LogNormal(self.lam_gene_loc, self._sd(self.lam_gene_log_sd)),
                )
        if self.n_covariates:
            with (
                pyro.plate("covariate_columns", self.n_covariates, dim=-1),
                pyro.plate("genes_covariates", self.n_vars, dim=-2),
            ):
                pyro.sample(
                    "covariate_effects", dist.Normal(self.cov_loc, self._sd(self.cov_log_sd))
                )
        with pyro.plate(
            "cells", self.n_obs, subsample=torch.arange(n_batch, device=x.device), dim=-1
        ):
            post = self.score_posterior(x, design=design)
            # no argument validation: it checks the covariance, broadcast to B x K x K, for
            # symmetry, i.e. materialises it (33 GB for 8,388 cells and K = 1,000)
            pyro.sample(
                "x",
                _SharedScaleMVN(post["means"], covariance_matrix=post["cov"], validate_args=False),
            )

    # ------------------------------------------------------------------ closed-form ELBO
    def prior_precision_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``E[1 / v_gk]`` and ``E[log(1 / v_gk)]`` of the loadings' prior variances under q.

        ``v_gk`` is the prior variance of ``w_gk`` given the scales (:meth:`prior_scale`);
        the expectations are over the posterior of the horseshoe scales (and, for dense
        factors with the g-prior, of the noise precision). Genes x factors each.
        """
        tau_lsd = self._log_sd(self.tau_log_sd)
        lam_loc, lam_lsd = self.local_scale()
        caux_lsd = self._log_sd(self.caux_log_sd)
        phi_lsd = self._log_sd(self.phi_log_sd)
        lam_v, caux_v = torch.exp(2 * lam_lsd), torch.exp(2 * caux_lsd)
        phi_v, tau_v = torch.exp(2 * phi_lsd), torch.exp(2 * tau_lsd)
        # log(1/u^2) ~ N(a_mean, a_var), log(1/c^2) ~ N(b_mean, b_var) under q
        a_mean = -2.0 * (self.tau_loc + self.phi_loc + lam_loc)
        a_var = 4.0 * (tau_v + phi_v + lam_v)
        b_mean = -self.caux_loc - 2.0 * self.log_slab
        b_var = caux_v
        e_inv_v = torch.exp(a_mean + 0.5 * a_var) + torch.exp(b_mean + 0.5 * b_var)
        # log(1/v) = a + softplus(b - a)
        e_log_inv_v = a_mean + _expected_softplus(b_mean - a_mean, torch.sqrt(a_var + b_var))
        if bool(self.dense.any()):
            # dense factors: v = phi_k^2 s^2, log(1/v) ~ N(-2 m_phi - 2 log s, 4 s_phi^2)
            d_mean = -2.0 * (self.phi_loc + self.log_slab)
            if bool(self.dense_noise_scaled):
                # g-prior: v = s^2 / precision_g, precision_g ~ Gamma(shape_g, rate_g) under q
                e_prec = self.expected_precision()[:, None]
                e_log_prec = (torch.digamma(self.prec_shape) - self.prec_log_rate)[:, None]
                d_inv = e_prec * torch.exp(-2.0 * self.log_slab)
                d_log_inv = e_log_prec - 2.0 * self.log_slab
            else:
                d_inv, d_log_inv = torch.exp(d_mean + 2.0 * phi_v), d_mean
            e_inv_v = torch.where(self.dense, d_inv, e_inv_v)
            e_log_inv_v = torch.where(self.dense, d_log_inv, e_log_inv_v)
        return e_inv_v, e_log_inv_v

    @auto_move_data
    @torch.no_grad()
    def score_second_moment(
        self, x: torch.Tensor, design: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_n E[z_n z_n^T]`` over a minibatch's cells (K x K), under the score posterior."""
        post = self.score_posterior(x, design=design)
        means, cov = post["means"], post["cov"]
        out = means.T @ means
        return out + (cov * means.shape[0] if cov.dim() == 2 else cov.sum(0))

    @torch.no_grad()
    def joint_loadings_var(self, score_moment: torch.Tensor) -> torch.Tensor:
        """Marginal posterior variances of the loadings with a full K x K posterior per gene.

        Given the cells' scores, the loadings of gene g have a Gaussian posterior with
        precision ``E[precision_g] sum_n E[z_n z_n^T] + diag(E[1 / v_gk])``; its inverse's
        diagonal is returned (genes x factors, model scale). The mean-field factor
        ``q(w_gk)`` fits the inverse of the precision's diagonal instead, which ignores
        that collinear factors (overlapping gene sets, a dense factor along a set's axis)
        can trade a gene's effect between them: it is overconfident exactly where two
        factors compete. ``score_moment`` is ``sum_n E[z_n z_n^T]`` over the training
        cells (:meth:`score_second_moment`); with missing values each gene's share of it is
        taken in proportion to its observed cells. Cost ``G K^3 / 3``, in chunks of genes.
        """
        prec = self.expected_precision()
        n_observed = 2.0 * (self.prec_shape - self.noise_prior_shape)
        weight = prec * (n_observed / max(self.n_obs, 1))
        prior, _ = self.prior_precision_moments()
        k = self.n_factors
        out = torch.empty_like(prior)
        chunk = max(1, 2**24 // max(k * k, 1))
        eye = torch.eye(k, dtype=prior.dtype, device=prior.device).bool()
        moment = score_moment.to(prior.dtype)
        for start in range(0, self.n_vars, chunk):
            sl = slice(start, start + chunk)
            lam = weight[sl, None, None] * moment
            lam[:, eye] += prior[sl]
            chol, info = torch.linalg.cholesky_ex(lam)
            if bool((info != 0).any()):  # not positive definite in float32: jitter
                lam[:, eye] += 1e-6 * lam[:, eye].abs().amax(-1, keepdim=True)
                chol = torch.linalg.cholesky(lam)
            out[sl] = torch.diagonal(torch.cholesky_inverse(chol), dim1=-2, dim2=-1)
        return out

    def global_kl(
        self,
        loadings: tuple[torch.Tensor, torch.Tensor] | None = None,
        prior_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """KL divergences of the global latent variables (loadings, horseshoe scales, noise).

        ``loadings``: means and variances of ``q(w)`` to use instead of the module's own.
        ``prior_moments``: :meth:`prior_precision_moments` of the current scales, when the
        caller has them already (they are not computed again).
        """
        if loadings is None:
            mu, var = self.loadings_moments()
            w_log_sd = self._log_sd(self.w_log_sd)
        else:
            mu, var = loadings
            w_log_sd = 0.5 * torch.log(var)
        lam_lsd, caux_lsd = self._log_sd(self.lam_log_sd), self._log_sd(self.caux_log_sd)
        phi_lsd, tau_lsd = self._log_sd(self.phi_log_sd), self._log_sd(self.tau_log_sd)
        caux_v = torch.exp(2 * caux_lsd)
        if prior_moments is None:
            prior_moments = self.prior_precision_moments()
        e_inv_v, e_log_inv_v = prior_moments
        # KL(q(w) || p(w | scales)), expected over q(scales)
        kl_w = -0.5 - w_log_sd - 0.5 * e_log_inv_v + 0.5 * (mu**2 + var) * e_inv_v

        def kl_half_cauchy(loc, log_sd):
            # E_q[log q] - E_q[log HalfCauchy(z; 1)], z ~ LogNormal(loc, sd)
            e_log_p = math.log(2.0 / math.pi) - _expected_softplus(
                2.0 * loc, 2.0 * torch.exp(log_sd)
            )
            return -_lognormal_entropy(loc, log_sd) - e_log_p

        kl_lam = kl_half_cauchy(self.lam_loc, lam_lsd)
        if self._shared_scale:  # an entry's own scale only where it is not shared
            kl_gene = kl_half_cauchy(self.lam_gene_loc, self._log_sd(self.lam_gene_log_sd))
            kl_lam = (
                torch.where(self.lam_shared, 0.0, kl_lam).sum()
                + kl_gene[self.lam_shared_genes].sum()
            )
        kl_phi = kl_half_cauchy(self.phi_loc, phi_lsd)
        kl_tau = kl_half_cauchy(self.tau_loc, tau_lsd)
        # c_aux ~ InverseGamma(df/2, df/2): E_q[log p] in closed form
        h = 0.5 * self.slab_df
        e_log_p_caux = (
            h * torch.log(h)
            - torch.lgamma(h)
            - (h + 1.0) * self.caux_loc
            - h * torch.exp(-self.caux_loc + 0.5 * caux_v)
        )
        kl_caux = -_lognormal_entropy(self.caux_loc, caux_lsd) - e_log_p_caux
        q_prec = dist.Gamma(self.prec_shape, torch.exp(self.prec_log_rate))
        p_prec = dist.Gamma(self.noise_prior_shape, self.noise_prior_rate)
        kl_prec = torch.distributions.kl_divergence(q_prec, p_prec)
        return {
            "kl_w": kl_w.sum(),
            "kl_lambda": kl_lam.sum(),
            "kl_c_aux": kl_caux.sum(),
            "kl_factor_scale": kl_phi.sum(),
            "kl_tau": kl_tau,
            "kl_precision": kl_prec.sum(),
        }

    @torch.no_grad()
    def _minibatch_statistics(
        self, x: torch.Tensor, design: torch.Tensor | None = None, *, sumsq: bool = True
    ) -> dict[str, torch.Tensor]:
        """Sufficient statistics of a minibatch under the optimal q(x).

        ``ym = Y^T M`` (G x K), ``second = sum_n o_ng (m_n m_n^T + S_n)`` (K x K, or G x K x K
        with missing values), the summed KL of the cell scores, unless the minibatch is
        the whole training set ``sumsq = sum_n o_ng y_ng^2`` (G) of the minibatch (for the
        whole set the exact constant ``gene_sumsq`` is used instead) and, with covariates,
        ``cov``: the statistics of the design that :meth:`_covariate_sq_err` needs.
        ``sumsq=False`` skips the minibatch's sum of squares (a pass over the minibatch)
        for callers that use the exact constant ``gene_sumsq`` (coordinate ascent).
        """
        post = self.score_posterior(x, complete=not bool(self.has_missing), design=design)
        means, cov, logdet = post["means"], post["cov"], post["logdet"]
        n_batch, k = means.shape
        if "y" not in post:
            # Y^T M with Y = (x - mean) / scale, again without centring the batch
            ym = x.to(means.dtype).T @ means - torch.outer(self.gene_mean, means.sum(0))
            ym = ym / self.data_scale
            second = means.T @ means + n_batch * cov
            moment = second  # sum_n E[x_n x_n^T]
            logdet = n_batch * logdet
            if sumsq and n_batch != self.n_obs:
                batch_sumsq = _column_sumsq(x.to(means.dtype), self.gene_mean) / self.data_scale**2
        else:
            y, o = post["y"], post["observed"].to(means.dtype)
            ym = y.T @ means
            second = torch.einsum("bg,bkl->gkl", o, means[:, :, None] * means[:, None, :] + cov)
            moment = means.T @ means + cov.sum(0)
            if sumsq and n_batch != self.n_obs:
                batch_sumsq = _column_sumsq(y)  # y is 0 where missing
        # KL(N(m_n, S_n) || N(0, R)) summed: tr(R^-1 E[x x^T]) - K + log|R| + log|S_n^-1|
        prior, prior_logdet = self.score_prior_precision()
        prior_quad = (prior.to(means.dtype) * moment).sum()
        kl_x = 0.5 * (prior_quad - n_batch * (k - prior_logdet) + logdet.sum())
        out = {"ym": ym, "second": second, "kl_x": kl_x}
        if self.learn_score_overlap:  # what the ELBO's dependence on a learned rho needs
            out.update(
                moment=moment,
                prior_quad=prior_quad,
                prior_logdet_n=n_batch * prior_logdet,
                n_cells=torch.tensor(float(n_batch), device=means.device),
            )
        if sumsq and n_batch != self.n_obs:
            out["sumsq"] = batch_sumsq
        if self.n_covariates:
            c = design.to(means.dtype)
            if "y" not in post:
                yc = x.to(means.dtype).T @ c - torch.outer(self.gene_mean, c.sum(0))
                out["cov"] = {"yc": yc / self.data_scale, "cc": c.T @ c, "cm": c.T @ means}
            else:
                o = post["observed"].to(means.dtype)
                out["cov"] = {
                    "yc": post["y"].T @ c,
                    "design": c,
                    "observed": o,
                    "means": means,
                    "c2o": o.T @ (c * c),
                }
        return out

    def loadings_sq_err(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The factors' part of each gene's expected squared error, from score statistics.

        ``E[w_g^T Q_g w_g] - 2 mu_g . (Y^T M)_g`` under q(w), with ``Q`` the scores' summed
        second moment (``stats["second"]``, K x K or per gene) and ``Y^T M``
        (``stats["ym"]``); add ``sum_n o_ng y_ng^2`` for the squared error.
        """
        mu, var = self.loadings_moments()
        second, ym = stats["second"], stats["ym"]
        if second.dim() == 2:
            quad = ((mu @ second) * mu).sum(-1) + var @ torch.diagonal(second)
        else:
            quad = torch.einsum("gk,gkl,gl->g", mu, second, mu) + (
                var * torch.diagonal(second, dim1=-2, dim2=-1)
            ).sum(-1)
        return quad - 2.0 * (mu * ym).sum(-1)

    def expected_log_likelihood(
        self, stats: dict[str, torch.Tensor], scale: float
    ) -> torch.Tensor:
        """Expected log-likelihood of the training data under q, from minibatch statistics.

        ``scale`` (``n_obs / batch size``) scales the minibatch sums, the minibatch's own
        ``sum_n y_ng^2`` included (``stats["sumsq"]``), so every gene's squared error is a
        sum of squares over the same cells, never negative, and varies little from batch
        to batch. The constants (``gene_sumsq`` for the whole training set, the number of
        observed values per gene) are exact. The cell-score posterior is optimal given the
        global factors, so (envelope theorem) its parameters are held fixed when
        differentiating and the gradient is exact.
        """
        p = self.expected_precision()
        e_log_p = torch.digamma(self.prec_shape) - self.prec_log_rate
        n_g = 2.0 * (self.prec_shape - self.noise_prior_shape)
        sumsq = stats.get("sumsq")
        fit = self.loadings_sq_err(stats)
        # without the minibatch's own sum (the whole training set): the exact constant
        sq_err = self.gene_sumsq + scale * fit if sumsq is None else scale * (sumsq + fit)
        return 0.5 * (n_g * (e_log_p - _LOG_2PI)).sum() - 0.5 * (p * sq_err).sum()

    def analytic_elbo(
        self, x: torch.Tensor, design: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The ELBO of :meth:`model` / :meth:`guide` for a minibatch of the training data.

        Minibatch terms are scaled by ``n_obs / batch size``, so the value is an unbiased
        estimate of the full-data ELBO (exact for a full batch). ``design``: the cells'
        covariates (:meth:`covariate_design`), when the model has any.
        """
        stats = self._minibatch_statistics(x, design)
        scale = self.n_obs / x.shape[0]
        ell = self.expected_log_likelihood(stats, scale)
        terms = self.global_kl()
        if self.n_covariates:  # known covariates: the likelihood of y - C B^T, KL of q(B)
            ell = (
                ell
                - 0.5 * scale * (self.expected_precision() * self._covariate_sq_err(stats)).sum()
            )
            terms["kl_covariates"] = self.covariate_kl()
        kl_x = scale * (stats["kl_x"] + self.score_kl_shift(stats))  # + 0, with rho's gradient
        elbo = ell - kl_x - sum(terms.values())
        return {"elbo": elbo, "log_likelihood": ell, "kl_x": kl_x, **terms}


class AnalyticELBO(ELBO):
    """The ELBO of :class:`SpexLVMModule`, evaluated in closed form.

    A drop-in :class:`pyro.infer.ELBO` for the module's ``model`` and ``guide``: it gives
    the quantity that :class:`~pyro.infer.Trace_ELBO` estimates by sampling, without
    the sampling noise.
    """

    @staticmethod
    def _module(model) -> SpexLVMModule:
        module = getattr(model, "__self__", None)
        if not isinstance(module, SpexLVMModule):
            raise TypeError("AnalyticELBO works with the `model` of a SpexLVMModule only.")
        return module

    def _get_trace(self, model, guide, args, kwargs):  # pragma: no cover - not sampled
        raise NotImplementedError("AnalyticELBO evaluates the ELBO in closed form; no traces.")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Negative ELBO, differentiable with respect to the variational parameters."""
        return -self._module(model).analytic_elbo(*args, **kwargs)["elbo"]

    def loss(self, model, guide, *args, **kwargs) -> float:
        """Negative ELBO as a float."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Negative ELBO; accumulates its gradients."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())
