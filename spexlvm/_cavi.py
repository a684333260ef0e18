"""Coordinate ascent on the ELBO of :class:`~spexlvm._module.SpexLVMModule` (``engine="cavi"``).

The same model, variational family and ELBO as the gradient engine (``engine="adam"``),
optimised differently. One pass through the data computes the exact sufficient statistics
of the cell scores' optimal posterior given the current global factors (summed over the
minibatches, and over the processes under DDP); the global factors are then updated in
closed form where the ELBO allows it, each update a coordinate (block) ascent step:

* ``q(w)`` (and, with known covariates, ``q(B)``): the ELBO is quadratic in the loading
  means, so their optimum is one linear system per gene, ``(E[rho_g] S + diag(E[1/v_g]))
  mu_g = E[rho_g] (Y^T M)_g`` (``rho_g`` the gene's noise precision), jointly over the
  factors (the mean-field family still fits the means of collinear factors jointly; only
  the variances are per factor, ``1 / (E[rho_g] S_kk + E[1/v_gk])``);
* ``q(precision_g)``: the rate of its Gamma is closed form given the expected squared
  error;
* the horseshoe scales (log-normal factors, not conjugate): a few Adam steps on the
  ELBO in which every loading sits at its single-coordinate optimum given the scales
  (:func:`collapsed_scale_loss`; no data needed), so that a loading and its scale move
  together instead of in the slow zig-zag of alternating updates; then ``q(w)`` in closed
  form again. A step that lowered the ELBO is undone (:func:`update`), so the ELBO never
  goes down from pass to pass.

Each pass is exact whatever the number of cells, so the number of passes to converge does
not grow with N (minibatch SVI with a fixed learning rate needs more passes as the
likelihood outweighs the prior). The statistics of a pass cost the two ``N x G x K``
products of a gradient step; the updates cost ``G K^2`` per conjugate-gradient iteration
(or ``G K^3 / 3`` for a direct solve when ``K`` is small).
"""

from __future__ import annotations

import copy

import torch

from ._module import SpexLVMModule, overlap_logit

#: Largest system (factors + covariate columns) solved directly (Cholesky) per gene;
#: larger ones use preconditioned conjugate gradients warm-started at the current means.
DIRECT_SOLVE_MAX = 48


@torch.no_grad()
def minibatch_statistics(
    module: SpexLVMModule, x: torch.Tensor, design: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Sums over a minibatch's cells of what the coordinate updates need.

    ``ym`` (G x K), ``second`` (K x K, or G x K x K with missing values), ``kl_x`` and,
    with covariates, ``yc`` (G x P), ``cc`` (P x P or G x P x P) and ``cm`` (P x K or
    G x P x K). Summing the dicts of the minibatches of a pass gives the statistics of
    the whole training set.
    """
    stats = module._minibatch_statistics(x, design, sumsq=False)
    keys = ("ym", "second", "kl_x", "moment", "prior_quad", "prior_logdet_n", "n_cells")
    out = {k: stats[k] for k in keys if k in stats}
    if module.n_covariates:
        cov = stats["cov"]
        out["yc"] = cov["yc"]
        if "cc" in cov:
            out["cc"], out["cm"] = cov["cc"], cov["cm"]
        else:  # missing values: per gene, over the cells where the gene is observed
            c, o, m = cov["design"], cov["observed"], cov["means"]
            out["cc"] = torch.einsum("ng,np,nq->gpq", o, c, c)
            out["cm"] = torch.einsum("ng,np,nk->gpk", o, c, m)
    return out


def add_statistics(
    total: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``total + new`` entry by entry (``total`` updated in place; ``None``: a copy of new)."""
    if total is None:
        return {k: v.clone() for k, v in new.items()}
    for k, v in new.items():
        total[k].add_(v)
    return total


def _system(module: SpexLVMModule, stats: dict[str, torch.Tensor]):
    """Per-gene quadratic form of the ELBO in the loading (and covariate-effect) means.

    The ELBO is ``-1/2 u^T H_g u + u^T r_g`` per gene, with ``H_g = E[rho_g] Q_g +
    diag(prior precisions)`` (``rho_g`` the noise precision). Returns ``(matvec, diag,
    rhs, q, prior, p)``: ``matvec(U)`` gives ``H_g u_g`` for every gene (rows of ``U``),
    ``diag`` the diagonals of ``H``, ``rhs`` the ``r_g``, ``q`` the ``Q`` (shared or per
    gene), ``prior`` the prior precisions and ``p`` the ``E[rho_g]``.
    """
    e_inv_v, _ = module.prior_precision_moments()
    p = module.expected_precision()
    second, ym = stats["second"], stats["ym"]
    prior = e_inv_v
    rhs = ym
    if module.n_covariates:
        n_cov = module.n_covariates
        cc, cm = stats["cc"], stats["cm"]
        prior = torch.cat([prior, (module.cov_prior_scale**-2).expand(module.n_vars, n_cov)], 1)
        rhs = torch.cat([ym, stats["yc"]], 1)
        if second.dim() == 2:  # complete data: one Q for every gene
            q = torch.cat([torch.cat([second, cm.T], 1), torch.cat([cm, cc], 1)], 0)
        else:
            q = torch.cat([torch.cat([second, cm.mT], 2), torch.cat([cm, cc], 2)], 1)
    else:
        q = second
    rhs = p[:, None] * rhs
    if q.dim() == 2:
        diag = p[:, None] * torch.diagonal(q) + prior

        def matvec(u: torch.Tensor) -> torch.Tensor:
            return p[:, None] * (u @ q) + prior * u

    else:
        diag = p[:, None] * torch.diagonal(q, dim1=-2, dim2=-1) + prior

        def matvec(u: torch.Tensor) -> torch.Tensor:
            return p[:, None] * torch.einsum("gkl,gl->gk", q, u) + prior * u

    return matvec, diag, rhs, q, prior, p


def _pcg(matvec, diag, rhs, start, *, tol: float = 1e-5, max_iter: int = 200) -> torch.Tensor:
    """Jacobi-preconditioned conjugate gradients for every gene's system at once.

    Solves ``H_g u_g = r_g`` from ``start``; every iteration lowers each gene's quadratic
    ``1/2 u^T H u - u^T r`` (CG is a descent method), so the ELBO never decreases even if
    it stops early. Stops when every gene's residual is below ``tol`` of its right-hand
    side.
    """
    u = start.clone()
    r = rhs - matvec(u)
    z = r / diag
    d = z.clone()
    rz = (r * z).sum(1)
    target = tol * torch.linalg.norm(rhs, dim=1).clamp_min(1e-30)
    for _ in range(max_iter):
        if bool((torch.linalg.norm(r, dim=1) <= target).all()):
            break
        hd = matvec(d)
        dhd = (d * hd).sum(1)
        alpha = torch.where(dhd > 0, rz / dhd.clamp_min(1e-30), torch.zeros_like(dhd))
        u.add_(alpha[:, None] * d)
        r.sub_(alpha[:, None] * hd)
        z = r / diag
        rz_new = (r * z).sum(1)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        d = z + beta[:, None] * d
        rz = rz_new
    return u


@torch.no_grad()
def update_loadings(module: SpexLVMModule, stats: dict[str, torch.Tensor]) -> None:
    """Closed-form ``q(w)`` (and ``q(B)``) given the statistics, ``q(precision)`` and scales.

    The means solve each gene's system jointly over factors and covariate columns (a
    direct solve for small systems, else conjugate gradients from the current means);
    the variances are the mean-field optimum ``1 / diag(H_g)``.
    """
    matvec, diag, rhs, q, prior, p = _system(module, stats)
    k = module.n_factors
    start = module.w_loc.detach()
    if module.n_covariates:
        start = torch.cat([start, module.cov_loc.detach()], 1)
    size = start.shape[1]
    if size <= DIRECT_SOLVE_MAX:
        h = p[:, None, None] * (q if q.dim() == 3 else q.expand(module.n_vars, size, size))
        h = h + torch.diag_embed(prior)
        chol, info = torch.linalg.cholesky_ex(h)
        if bool((info != 0).any()):  # not positive definite in float32: jitter
            h = h + torch.diag_embed(1e-6 * diag)
            chol = torch.linalg.cholesky(h)
        means = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    else:
        means = _pcg(matvec, diag, rhs, start)
    log_sd = -0.5 * torch.log(diag)
    module.w_loc.copy_(means[:, :k])
    module.w_log_sd.copy_(log_sd[:, :k])
    if module.n_covariates:
        module.cov_loc.copy_(means[:, k:])
        module.cov_log_sd.copy_(log_sd[:, k:])


def _covariate_stats(stats: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The statistics in the form :meth:`SpexLVMModule._covariate_sq_err` reads."""
    return {"cov": {"yc": stats["yc"], "cc": stats["cc"], "cm": stats["cm"]}}


def expected_sq_error(module: SpexLVMModule, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """``E sum_n o_ng (y_ng - c_n b_g - z_n w_g)^2`` per gene under q, from the statistics."""
    out = module.gene_sumsq + module.loadings_sq_err(stats)
    if module.n_covariates:
        out = out + module._covariate_sq_err(_covariate_stats(stats))
    return out


@torch.no_grad()
def update_noise(module: SpexLVMModule, stats: dict[str, torch.Tensor]) -> None:
    """Closed-form rate of ``q(precision_g)`` (its shape is fixed at ``a0 + n_g / 2``).

    The optimum of the ELBO in the rate ``b`` at fixed shape ``a`` is
    ``b = (b0 + E[sq. error] / 2 + d) a / (a0 + n_g / 2 + n_d / 2)``, where the g-prior of
    ``n_d`` dense factors adds ``d = sum_k E[w_gk^2] / (2 s_gk^2)`` (their prior variance
    is relative to the noise); without it ``b = b0 + E[sq. error] / 2``.
    """
    rate = module.noise_prior_rate + 0.5 * expected_sq_error(module, stats).clamp_min(0.0)
    if bool(module.dense_noise_scaled) and bool(module.dense.any()):
        mu, var = module.loadings_moments()
        dense = module.dense
        extra = (0.5 * (mu[:, dense] ** 2 + var[:, dense]) / module.slab[:, dense] ** 2).sum(1)
        shape = module.prec_shape
        rate = (rate + extra) * shape / (shape + 0.5 * float(dense.sum()))
    module.prec_log_rate.copy_(torch.log(rate.clamp_min(1e-12)))


def scale_parameters(module: SpexLVMModule) -> list[torch.nn.Parameter]:
    """The variational parameters of the horseshoe scales (updated by gradient steps)."""
    shared = [module.lam_gene_loc, module.lam_gene_log_sd] if module._shared_scale else []
    return [
        module.lam_loc,
        module.lam_log_sd,
        *shared,
        module.caux_loc,
        module.caux_log_sd,
        module.phi_loc,
        module.phi_log_sd,
        module.tau_loc,
        module.tau_log_sd,
    ]


def scale_loss(module: SpexLVMModule) -> torch.Tensor:
    """The part of the negative ELBO that depends on the horseshoe scales (no data)."""
    terms = module.global_kl()
    return (
        terms["kl_w"]
        + terms["kl_lambda"]
        + terms["kl_c_aux"]
        + terms["kl_factor_scale"]
        + terms["kl_tau"]
    )


def collapsed_scale_loss(module: SpexLVMModule, fixed: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative ELBO in the scales with each loading at its own optimum given them.

    Every ``q(w_gk)`` is set to its single-coordinate optimum given the scales and the
    other loadings (``fixed``: ``p`` the expected noise precisions, ``s_kk`` the diagonal
    of the scores' second moment, ``r`` the residual statistic ``(Y^T M)_gk - sum_{l != k}
    S_kl mu_gl``), so that a scale step moves its loading with it: no zig-zag between
    loadings and scales, which is what makes plain coordinate ascent slow where the prior
    and the data weigh alike. The module's ``q(w)`` is not changed (:func:`update`
    solves it jointly afterwards).
    """
    moments = module.prior_precision_moments()
    p, s_kk, r = fixed["p"], fixed["s_kk"], fixed["r"]
    var = 1.0 / (p[:, None] * s_kk + moments[0])
    mu = p[:, None] * r * var
    lik = -0.5 * (p[:, None] * (s_kk * (mu * mu + var) - 2.0 * mu * r)).sum()
    terms = module.global_kl(loadings=(mu, var), prior_moments=moments)
    kl = (
        terms["kl_w"]
        + terms["kl_lambda"]
        + terms["kl_c_aux"]
        + terms["kl_factor_scale"]
        + terms["kl_tau"]
    )
    return kl - lik


def _residual_statistics(
    module: SpexLVMModule, stats: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """What :func:`collapsed_scale_loss` holds fixed, from a pass's statistics."""
    second = stats["second"]
    mu = module.w_loc.detach().clone()
    s_kk = torch.diagonal(second, dim1=-2, dim2=-1)
    if second.dim() == 2:
        r = stats["ym"] - mu @ second + mu * s_kk
    else:
        r = stats["ym"] - torch.einsum("gkl,gl->gk", second, mu) + mu * s_kk
    if module.n_covariates:
        b, cm = module.cov_loc.detach(), stats["cm"]
        r = r - (b @ cm if cm.dim() == 2 else torch.einsum("gp,gpk->gk", b, cm))
    return {"p": module.expected_precision(), "s_kk": s_kk, "r": r}


def update_scales(
    module: SpexLVMModule,
    optimizer: torch.optim.Optimizer,
    n_steps: int,
    stats: dict[str, torch.Tensor] | None = None,
    rel_tol: float = 0.0,
) -> None:
    """Up to ``n_steps`` optimiser steps on the scales' terms of the ELBO.

    Without ``stats`` the loadings are held fixed; with a pass's statistics each step is
    taken with every loading at its single-coordinate optimum given the new scales
    (:func:`collapsed_scale_loss`; the module's ``q(w)`` is left for the caller to
    solve). With ``rel_tol > 0`` the steps stop early once one lowered the loss by less
    than ``rel_tol`` times its size (late passes, whose scales are nearly optimal, then
    cost a few steps instead of ``n_steps``).
    """
    fixed = None
    if stats is not None:
        with torch.no_grad():
            fixed = _residual_statistics(module, stats)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    previous = None
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = scale_loss(module) if fixed is None else collapsed_scale_loss(module, fixed)
            torch.autograd.backward(loss, inputs=params)
        if rel_tol > 0:  # one device sync per step, only when it is needed
            value = float(loss.detach())
            if previous is not None and previous - value < rel_tol * abs(value):
                break  # the previous step hardly helped: this step's gradient is not taken
            previous = value
        optimizer.step()


def global_terms(module: SpexLVMModule) -> torch.Tensor:
    """The KL divergences of every global factor, summed (covariate effects included)."""
    kl = sum(module.global_kl().values())
    if module.n_covariates:
        kl = kl + module.covariate_kl()
    return kl


class GlobalTermsCache:
    """:func:`global_terms`, computed again only after a global factor has changed.

    The ELBO at the start of a pass needs the global KL terms, which depend only on the
    global factors; they are the same as at the end of the previous pass's update, which
    already computed them. The key is every parameter's and buffer's storage and in-place
    version counter, so any change (an update, an optimiser step, a restored state) is
    seen. Values are detached: use it where no gradient is needed.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    @staticmethod
    def _state(module: SpexLVMModule) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))

    def __call__(self, module: SpexLVMModule) -> torch.Tensor:
        key = self._state(module)
        if self._value is None or key != self._key:
            with torch.no_grad():
                self._value = global_terms(module)
            self._key = key
        return self._value


def elbo_from_statistics(
    module: SpexLVMModule,
    stats: dict[str, torch.Tensor],
    cache: GlobalTermsCache | None = None,
) -> torch.Tensor:
    """The ELBO of the training set, from a whole pass's statistics.

    With the statistics of the current parameters this is the ELBO with the scores'
    optimal posterior (:meth:`~spexlvm._module.SpexLVMModule.analytic_elbo` of the whole
    training set); after an update of the global factors it is the ELBO with the scores'
    posterior of the pass, the objective that each update maximises. Differentiable,
    unless ``cache`` (:class:`GlobalTermsCache`) supplies the global KL terms.
    """
    # the whole training set (no minibatch sum of squares): scale 1, exact constants
    ell = module.expected_log_likelihood(stats, 1.0)
    kl = global_terms(module) if cache is None else cache(module)
    if module.n_covariates:
        cov_err = module._covariate_sq_err(_covariate_stats(stats))
        ell = ell - 0.5 * (module.expected_precision() * cov_err).sum()
    return ell - stats["kl_x"] - kl


@torch.no_grad()
def update_score_overlap(module: SpexLVMModule, stats: dict[str, torch.Tensor]) -> None:
    """``rho`` of the scores' prior at its optimum given the pass's score posterior.

    The ELBO depends on ``rho`` only through ``-0.5 (tr(R^-1 M) + N log |R|)`` with
    ``M = sum_n E[x_n x_n^T]``; in the eigenbasis of the overlap ``C`` this is
    ``-0.5 sum_i (m_i / d_i + N log d_i)``, ``d_i = 1 - rho + rho lambda_i``, maximised by a
    grid search refined twice (exact to ~1e-5 in ``rho``) over ``[0, min(0.999,
    score_overlap_max)]``. ``stats``' ``kl_x`` is brought up
    to date. Nothing happens unless ``rho`` is learned.
    """
    if not (module.learn_score_overlap and module.correlated_scores):
        return
    v, lam = module.score_overlap_basis.double(), module.score_overlap_eig.double()
    m = torch.einsum("ki,kl,li->i", v, stats["moment"].double(), v)
    n = stats["n_cells"].double()

    def objective(rho: torch.Tensor) -> torch.Tensor:  # rho: (R,) -> (R,)
        d = (1.0 - rho[:, None] + rho[:, None] * lam).clamp_min(1e-6)
        return (m / d).sum(-1) + n * torch.log(d).sum(-1)

    top = min(0.999, float(module.score_overlap_max))
    lo, hi = 0.0, top
    for _ in range(3):
        grid = torch.linspace(lo, hi, 101, dtype=torch.float64, device=lam.device)
        best = int(torch.argmin(objective(grid)))
        step = (hi - lo) / 100
        lo, hi = max(0.0, float(grid[best]) - step), min(top, float(grid[best]) + step)
    rho = min(max(float(grid[best]), 1e-4), top)
    module.score_overlap_logit.copy_(
        torch.tensor(overlap_logit(rho, float(module.score_overlap_max)))
    )
    shift = module.score_kl_shift(stats)
    prec, logdet = module.score_prior_precision()
    stats["kl_x"] = stats["kl_x"] + shift
    stats["prior_quad"] = (prec * stats["moment"]).sum()
    stats["prior_logdet_n"] = stats["n_cells"] * logdet


def update(
    module: SpexLVMModule,
    stats: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    scale_steps: int,
    scale_rel_tol: float = 0.0,
    cache: GlobalTermsCache | None = None,
) -> torch.Tensor:
    """One coordinate-ascent update of every global factor from a pass's statistics.

    ``q(w)`` (and ``q(B)``), ``q(precision)`` and a learned ``rho`` of the scores' prior
    (:func:`update_score_overlap`) in closed form, then up to
    ``scale_steps`` optimiser steps on the scales with the loadings following them
    (:func:`update_scales` with the statistics), then ``q(w)`` in closed form again. The
    ELBO with the pass's score posterior is checked at the end: if the scale steps lowered
    it (a step on the surrogate in which every loading moves alone can overshoot for
    strongly collinear factors), they are undone and replaced by steps with the loadings
    fixed; if those lower it too (an Adam step can overshoot), the scales stay as they
    were. The ELBO therefore never decreases. Returns the ELBO after the update (with the
    pass's scores). ``cache`` (:class:`GlobalTermsCache`) keeps the global KL terms of
    the final state for the next pass's ELBO.
    """
    update_loadings(module, stats)
    update_noise(module, stats)
    update_score_overlap(module, stats)
    if optimizer is None or not scale_steps:
        with torch.no_grad():
            return elbo_from_statistics(module, stats, cache)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with torch.no_grad():
        before = elbo_from_statistics(module, stats, cache)
        saved = [p.detach().clone() for p in params]
        saved_w = (module.w_loc.detach().clone(), module.w_log_sd.detach().clone())
        saved_opt = copy.deepcopy(optimizer.state_dict())

    def restore() -> None:
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
            module.w_loc.copy_(saved_w[0])
            module.w_log_sd.copy_(saved_w[1])
        optimizer.load_state_dict(saved_opt)

    update_scales(module, optimizer, scale_steps, stats, scale_rel_tol)
    update_loadings(module, stats)
    with torch.no_grad():
        after = elbo_from_statistics(module, stats, cache)
    if bool(after >= before):
        return after
    restore()
    update_scales(module, optimizer, scale_steps, rel_tol=scale_rel_tol)
    with torch.no_grad():
        after = elbo_from_statistics(module, stats, cache)
    if bool(after >= before):
        return after
    restore()
    return before
