"""``SpexLVMModule``: the closed-form ELBO against Pyro's Monte Carlo ELBO, its gradient,
the quadrature, the minibatch estimator and the missing-value path."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from spexlvm import AnalyticELBO, SpexLVMModule
from spexlvm._module import _expected_softplus, all_finite

N, G, K = 11, 7, 3
NAN_ENTRIES = ((1, 2), (5, 6))
#: Covariates of the tests with covariates: a batch of 3 levels, a donor of 2 and one
#: continuous covariate (P = 2 + 1 + 1 design columns).
COV_LEVELS = (3, 2)


def _covariates(n: int = N, seed: int = 5) -> dict[str, torch.Tensor]:
    """Registered covariate tensors of ``n`` cells, as the data loader yields them."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "batch": torch.arange(n)[:, None] % COV_LEVELS[0],
        "extra_categorical_covs": torch.randint(0, COV_LEVELS[1], (n, 1), generator=gen),
        "extra_continuous_covs": torch.randn(n, 1, generator=gen),
    }


def _data(n: int = N, *, missing: bool = False, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, K, generator=gen) @ torch.randn(K, G, generator=gen)
    x = x + 0.5 * torch.randn(n, G, generator=gen) + 2.0
    if missing:
        for i, j in NAN_ENTRIES:
            x[i, j] = float("nan")
    return x


def _slab(low: float = 0.3, *, per_gene_dense: bool = False) -> torch.Tensor:
    """Two annotated factors (overlapping sets) and one dense factor (Gaussian prior).

    The dense factor's prior scale is ``0.8`` (times the factor scale, or the gene's noise
    sd); with ``per_gene_dense`` smaller on annotated genes (as ``dense_annotated`` makes it).
    """
    mask = torch.zeros(G, K)
    mask[:3, 0] = 1.0
    mask[2:5, 1] = 1.0
    slab = torch.clamp(mask + low, 1e-4, 1.0)
    slab[:, 2] = 0.8
    if per_gene_dense:
        slab[:, 2] = torch.where(mask.sum(1) > 0, 0.8 * max(low, 0.1), 0.8)
    return slab


def _module(
    x: torch.Tensor,
    slab: torch.Tensor,
    *,
    seed: int = 0,
    covariates: bool = False,
    noise_scaled: bool = False,
    slab_df: float = 1.0,
    score_corr: torch.Tensor | None = None,
    learn_overlap: bool = False,
    overlap_max: float = 1.0,
    shared_scale: torch.Tensor | None = None,
) -> SpexLVMModule:
    """The module with its data constants from ``x`` and perturbed variational parameters
    (with ``covariates``: the design of :func:`_covariates`, centred and scaled; with
    ``noise_scaled``: the g-prior of the dense factor)."""
    torch.manual_seed(seed)
    n = x.shape[0]
    mean = torch.nanmean(x, 0)
    yc = torch.nan_to_num(x - mean)
    cnt = torch.isfinite(x).sum(0).float()
    cov_kwargs = {}
    if covariates:
        cov_kwargs = {
            "covariate_levels": COV_LEVELS,
            "n_continuous": 1,
            "covariate_centre": torch.tensor([0.3, 0.2, 0.4, -0.1]),
            "covariate_scale": torch.tensor([1.0, 1.0, 1.0, 1.3]),
            "covariate_prior_scale": 0.7,
            "init_covariate_effects": torch.randn(G, 4),
        }
    m = SpexLVMModule(
        n, slab, mean, 1.0, cnt, torch.randn(G, K) * 0.5, torch.ones(G) * 0.5,
        gene_sumsq=(yc**2).sum(0), dense=torch.tensor([False, False, True]),
        dense_noise_scaled=noise_scaled, slab_df=slab_df, score_overlap_corr=score_corr,
        score_overlap=0.0 if score_corr is None else min(0.5, overlap_max / 2),
        learn_score_overlap=learn_overlap, score_overlap_max=overlap_max,
        shared_local_scale=shared_scale, **cov_kwargs,
    )  # fmt: skip
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _design(m: SpexLVMModule, n: int = N) -> torch.Tensor | None:
    return m.covariate_design(_covariates(n)) if m.n_covariates else None


def _elbo(m: SpexLVMModule, x: torch.Tensor, design: torch.Tensor | None = None) -> float:
    if design is None:
        design = _design(m, x.shape[0])
    with torch.no_grad():
        return float(m.analytic_elbo(x, design)["elbo"])


# --------------------------------------------------------------------------- ELBO vs Pyro
@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
@pytest.mark.parametrize(
    ("low", "noise_scaled"),
    [(0.3, False), (0.01, False), (0.3, True), (0.01, True)],
    ids=["slab0.3", "slab0.01", "slab0.3-gprior", "slab0.01-gprior"],
)
def test_analytic_elbo_matches_trace_elbo(missing, low, noise_scaled, covariates):
    """Closed-form ELBO == Pyro's ``Trace_ELBO`` on the module's own model and guide
    (dense prior: scaled by a factor scale, or by each gene's noise: a g-prior)."""
    x = _data(missing=missing)
    m = _module(
        x, _slab(low, per_gene_dense=True), covariates=covariates, noise_scaled=noise_scaled
    )
    assert bool(m.has_missing) is missing
    design = _design(m)
    analytic = _elbo(m, x)
    pyro.set_rng_seed(0)
    trace_elbo = pyro.infer.Trace_ELBO(
        num_particles=200, vectorize_particles=True, max_plate_nesting=2
    )
    kwargs = {"design": design} if covariates else {}
    with torch.no_grad():
        values = np.array([-trace_elbo.loss(m.model, m.guide, x, **kwargs) for _ in range(30)])
    mc, se = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    print(f"\n[ELBO {low=} {missing=}] analytic {analytic:.3f}, Trace_ELBO {mc:.3f} +- {se:.3f}")
    assert abs(analytic - mc) < 4 * se


_SITE_TERMS = {
    "tau": "kl_tau",
    "factor_scale": "kl_factor_scale",
    "lambda": "kl_lambda",
    "c_aux": "kl_c_aux",
    "precision": "kl_precision",
    "x": "kl_x",
    "y": "log_likelihood",
}


@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_analytic_elbo_terms_match_sampled_sites(missing, covariates):
    """Term by term: E_q[log p - log q] of each light-tailed site, by sampling, equals the
    closed-form term (the loadings' term is heavy-tailed; the total test covers it)."""
    x = _data(missing=missing)
    m = _module(x, _slab(0.3), covariates=covariates)
    design = _design(m)
    with torch.no_grad():
        terms = m.analytic_elbo(x, design)
    n_particles = 20000
    pyro.set_rng_seed(1)
    with torch.no_grad(), pyro.plate("particles", n_particles, dim=-3):
        guide = poutine.trace(m.guide).get_trace(x, design)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x, design)
    sites = dict(_SITE_TERMS)
    if covariates:
        sites["covariate_effects"] = "kl_covariates"
    else:
        assert "covariate_effects" not in guide.nodes and "kl_covariates" not in terms
    for site, term in sites.items():
        node = model.nodes[site]
        value = node["fn"].log_prob(node["value"])
        if site != "y":
            value = value - guide.nodes[site]["fn"].log_prob(guide.nodes[site]["value"])
        per_particle = value.reshape(n_particles, -1).sum(1).double()
        mc = per_particle.mean().item()
        se = (per_particle.std() / math.sqrt(n_particles)).item()
        expected = float(terms[term]) * (1.0 if term == "log_likelihood" else -1.0)
        assert abs(expected - mc) < 4 * se + 1e-4, (site, expected, mc, se)


@pytest.mark.parametrize("slab_df", [1.0, 4.0, 25.0])
def test_slab_df_term_matches_sampled_site(slab_df):
    """``c_aux ~ InverseGamma(df/2, df/2)``: the closed-form KL of ``c_aux`` equals
    E_q[log q - log p] by sampling the Pyro guide and model, for any ``slab_df``."""
    x = _data()
    m = _module(x, _slab(0.3), slab_df=slab_df)
    with torch.no_grad():
        terms = m.analytic_elbo(x, None)
    n_particles = 20000
    pyro.set_rng_seed(2)
    with torch.no_grad(), pyro.plate("particles", n_particles, dim=-3):
        guide = poutine.trace(m.guide).get_trace(x, None)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x, None)
    node = model.nodes["c_aux"]
    value = node["fn"].log_prob(node["value"]) - guide.nodes["c_aux"]["fn"].log_prob(
        guide.nodes["c_aux"]["value"]
    )
    per_particle = value.reshape(n_particles, -1).sum(1).double()
    se = (per_particle.std() / math.sqrt(n_particles)).item()
    assert abs(-float(terms["kl_c_aux"]) - per_particle.mean().item()) < 4 * se + 1e-4
    with pytest.raises(ValueError, match="slab_df must be positive"):
        _module(x, _slab(0.3), slab_df=0.0)


#: The overlap of the two annotated factors' sets (C): the scores' prior correlation is
#: R = (1 - rho) I + rho C (rho = 0.5, perturbed by the test module's noise).
SCORE_CORR = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _score_r(m: SpexLVMModule) -> torch.Tensor:
    """``R = (1 - rho) I + rho C`` at the module's (perturbed) ``rho``."""
    rho = float(m.score_overlap())
    return (1.0 - rho) * torch.eye(3) + rho * SCORE_CORR


@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_correlated_score_prior_matches_trace_elbo_and_its_site(missing, covariates):
    """``x_n ~ N(0, R)``: the closed-form ELBO equals Pyro's ``Trace_ELBO`` of the module's
    own model (a multivariate normal prior) and guide, and ``kl_x`` the sampled site."""
    x = _data(missing=missing)
    m = _module(x, _slab(0.3), covariates=covariates, score_corr=SCORE_CORR)
    assert m.correlated_scores
    design = _design(m)
    kwargs = {"design": design} if covariates else {}
    pyro.set_rng_seed(3)
    trace_elbo = pyro.infer.Trace_ELBO(
        num_particles=200, vectorize_particles=True, max_plate_nesting=2
    )
    with torch.no_grad():
        values = np.array([-trace_elbo.loss(m.model, m.guide, x, **kwargs) for _ in range(30)])
    mc, se = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    assert abs(_elbo(m, x) - mc) < 4 * se
    n_particles = 20000
    with torch.no_grad(), pyro.plate("particles", n_particles, dim=-3):
        guide = poutine.trace(m.guide).get_trace(x, design)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x, design)
        terms = m.analytic_elbo(x, design)
    value = model.nodes["x"]["fn"].log_prob(model.nodes["x"]["value"])
    value = value - guide.nodes["x"]["fn"].log_prob(guide.nodes["x"]["value"])
    per_particle = value.reshape(n_particles, -1).sum(1).double()
    se = (per_particle.std() / math.sqrt(n_particles)).item()
    assert abs(-float(terms["kl_x"]) - per_particle.mean().item()) < 4 * se + 1e-4
    # the prior changes the ELBO: the same parameters under independent scores differ
    independent = _module(x, _slab(0.3), covariates=covariates)
    assert abs(_elbo(independent, x) - _elbo(m, x)) > 1e-3


def _shared_scale_mask() -> torch.Tensor:
    """The in-set entries of :func:`_slab`'s two annotated factors (gene 2 is in both)."""
    shared = torch.zeros(G, K, dtype=torch.bool)
    shared[:3, 0] = True
    shared[2:5, 1] = True
    return shared


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_shared_local_scale_matches_trace_elbo_and_its_sites(missing):
    """One local scale per gene for its in-set loadings: the closed-form ELBO equals Pyro's
    ``Trace_ELBO`` of the module's own model and guide, ``kl_lambda`` the two sampled
    sites together, and the prior precision of the shared entries of a gene is one value."""
    x = _data(missing=missing)
    shared = _shared_scale_mask()
    m = _module(x, _slab(0.3), shared_scale=shared)
    pyro.set_rng_seed(1)
    trace_elbo = pyro.infer.Trace_ELBO(
        num_particles=200, vectorize_particles=True, max_plate_nesting=2
    )
    with torch.no_grad():
        values = np.array([-trace_elbo.loss(m.model, m.guide, x) for _ in range(30)])
    mc, se = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    assert abs(_elbo(m, x) - mc) < 4 * se
    n_particles = 20000
    with torch.no_grad(), pyro.plate("particles", n_particles, dim=-3):
        guide = poutine.trace(m.guide).get_trace(x)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
        kl = float(m.global_kl()["kl_lambda"])
    value = 0.0
    for site in ("lambda", "lambda_gene"):
        lp = model.nodes[site]["fn"].log_prob(model.nodes[site]["value"])
        lq = guide.nodes[site]["fn"].log_prob(guide.nodes[site]["value"])
        diff = (lp - lq).reshape(n_particles, -1)
        if site == "lambda":  # an entry's own scale is in the model only where not shared
            diff = diff[:, ~shared.reshape(-1)]
        else:
            diff = diff[:, shared.any(1)]
        value = value + diff.sum(1).double()
    se = (value.std() / math.sqrt(n_particles)).item()
    assert abs(-kl - value.mean().item()) < 4 * se + 1e-4
    # a gene's in-set loadings read its one scale; a gene in no set keeps its own
    loc, _ = m.local_scale()
    assert torch.equal(loc[2, 0], loc[2, 1]) and torch.equal(loc[2, 0], m.lam_gene_loc[2])
    assert torch.equal(loc[6], m.lam_loc[6])
    # and it is another model: the same parameters without sharing give another ELBO
    assert abs(_elbo(_module(x, _slab(0.3)), x) - _elbo(m, x)) > 1e-3


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_flip_factors_leaves_the_fit_unchanged(missing):
    """Flipping a factor in q(w) and in the scores' prior correlation is a symmetry: the
    ELBO is unchanged and the flipped factor's scores change sign; flipping q(w) alone
    (the prior correlation kept) changes the ELBO."""
    x = _data(missing=missing)
    m = _module(x, _slab(0.3), score_corr=SCORE_CORR)
    with torch.no_grad():
        before, scores = _elbo(m, x), m.get_scores(x)
        signs = torch.tensor([1.0, -1.0, 1.0])
        m.flip_factors(signs)
        np.testing.assert_allclose(_elbo(m, x), before, rtol=1e-6)
        torch.testing.assert_close(m.get_scores(x), scores * signs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            m.score_prior_cov(), _score_r(m) * torch.outer(signs, signs), rtol=1e-5, atol=1e-6
        )
        m.w_loc.mul_(signs)  # q(w) back, prior correlation still flipped: another model
        assert abs(_elbo(m, x) - before) > 1e-3


def test_score_prior_checks_and_old_state_dicts():
    """An overlap matrix that is not symmetric positive semi-definite with a unit diagonal
    is refused; a state dict saved before the prior existed loads with independent scores."""
    x = _data()
    with pytest.raises(ValueError, match="positive semi-definite"):
        _module(x, _slab(0.3), score_corr=torch.tensor([[1.0, 2, 0], [2, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="symmetric 3 x 3"):
        _module(x, _slab(0.3), score_corr=torch.eye(2))
    with pytest.raises(ValueError, match="unit diagonal"):
        _module(x, _slab(0.3), score_corr=2 * torch.eye(3))
    m = _module(x, _slab(0.3), score_corr=SCORE_CORR)
    assert 0.1 < float(m.score_overlap()) < 0.9
    torch.testing.assert_close(m.score_prior_cov(), _score_r(m), rtol=1e-5, atol=1e-6)
    state = {
        k: v for k, v in _module(x, _slab(0.3)).state_dict().items() if "score_overlap" not in k
    }
    m.load_state_dict(state)
    assert not m.correlated_scores


def test_learned_score_overlap_gradient_and_closed_form_update():
    """With ``rho`` learned, the closed-form ELBO's gradient in ``rho``'s logit matches
    finite differences (the score posterior held at its optimum for the old ``rho``), and
    coordinate ascent's ``rho`` update (a grid search) raises the ELBO of the pass's
    statistics to the best value over ``rho``."""
    from spexlvm._cavi import elbo_from_statistics, minibatch_statistics, update_score_overlap

    x = _data(n=40)
    m = _module(x, _slab(0.3), score_corr=SCORE_CORR, learn_overlap=True).double()
    assert m.learn_score_overlap and m.score_overlap_logit.requires_grad
    stats = m._minibatch_statistics(x.double())

    def elbo_at(logit: float) -> float:
        with torch.no_grad():
            m.score_overlap_logit.fill_(logit)
            out = m.expected_log_likelihood(stats, 1.0) - stats["kl_x"] - m.score_kl_shift(stats)
            return float(out)

    m.score_overlap_logit.data.fill_(0.3)
    m.zero_grad()
    elbo = m.expected_log_likelihood(stats, 1.0) - stats["kl_x"] - m.score_kl_shift(stats)
    elbo.backward()
    h = 1e-5
    fd = (elbo_at(0.3 + h) - elbo_at(0.3 - h)) / (2 * h)
    np.testing.assert_allclose(float(m.score_overlap_logit.grad), fd, rtol=1e-5, atol=1e-8)

    m.score_overlap_logit.data.fill_(0.3)
    pass_stats = minibatch_statistics(m, x.double())
    fixed = {k: v.clone() for k, v in pass_stats.items()}

    def total_at(rho: float) -> float:  # the pass's ELBO at another rho, scores fixed
        with torch.no_grad():
            m.score_overlap_logit.fill_(math.log(rho / (1 - rho)))
            return float(elbo_from_statistics(m, fixed) - m.score_kl_shift(fixed))

    before = total_at(float(torch.sigmoid(torch.tensor(0.3))))
    best = max(total_at(r) for r in np.linspace(1e-3, 0.999, 400))
    m.score_overlap_logit.data.fill_(0.3)
    update_score_overlap(m, pass_stats)
    with torch.no_grad():
        after = float(elbo_from_statistics(m, pass_stats))
        assert after == pytest.approx(total_at(float(m.score_overlap())), rel=1e-9)
    assert after > before
    assert after >= best - 1e-6 * abs(best)


def test_score_overlap_bound():
    """``score_overlap_max`` bounds the learned ``rho`` whatever its logit: the gradient
    step and coordinate ascent's closed-form update both stay below it, a bad bound or a
    start above it is refused, and a state dict saved before the bound loads without one."""
    from spexlvm._cavi import minibatch_statistics, update_score_overlap

    x = _data(n=40)
    m = _module(x, _slab(0.3), score_corr=SCORE_CORR, learn_overlap=True, overlap_max=0.2)
    for logit in (-5.0, 0.0, 5.0, 40.0):
        m.score_overlap_logit.data.fill_(logit)
        rho = float(m.score_overlap().detach())
        assert 0.0 < rho <= 0.2 + 1e-7  # (float32)
        prec, logdet = m.score_prior_precision()  # R from the bounded rho
        r = (1 - rho) * torch.eye(K) + rho * SCORE_CORR
        torch.testing.assert_close(prec, torch.linalg.inv(r), rtol=1e-4, atol=1e-5)
        assert float(logdet) == pytest.approx(float(torch.logdet(r)), abs=1e-4)
    m = m.double()
    free = _module(x, _slab(0.3), score_corr=SCORE_CORR, learn_overlap=True).double()
    m.load_state_dict({**free.state_dict(), "score_overlap_max": torch.tensor(0.2)})
    stats = minibatch_statistics(free, x.double())
    update_score_overlap(free, {k: v.clone() for k, v in stats.items()})
    update_score_overlap(m, stats)
    # the unbounded optimum lies above the bound, the bounded one on it
    assert float(free.score_overlap().detach()) > 0.2
    assert float(m.score_overlap().detach()) == pytest.approx(0.2, abs=1e-3)
    with pytest.raises(ValueError, match=r"score_overlap_max must lie in \(0, 1\]"):
        _module(x, _slab(0.3), score_corr=SCORE_CORR, overlap_max=1.5)
    with pytest.raises(ValueError, match="must be below score_overlap_max"):
        SpexLVMModule(
            40, _slab(0.3), torch.zeros(G), 1.0, torch.full((G,), 40.0), torch.zeros(G, K),
            torch.ones(G), score_overlap_corr=SCORE_CORR, score_overlap=0.5,
            score_overlap_max=0.4,
        )  # fmt: skip
    old = {k: v for k, v in m.state_dict().items() if k != "score_overlap_max"}
    m.load_state_dict(old)
    assert float(m.score_overlap_max) == 1.0


def test_analytic_elbo_loss_interface():
    x = _data()
    m = _module(x, _slab())
    loss_fn = AnalyticELBO()
    assert loss_fn.loss(m.model, m.guide, x) == pytest.approx(-_elbo(m, x), rel=1e-6)
    m.zero_grad()
    loss = loss_fn.loss_and_grads(m.model, m.guide, x)
    assert loss == pytest.approx(-_elbo(m, x), rel=1e-6)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in m.parameters()
        if p.requires_grad  # rho of the scores' prior is fixed here
    )
    with pytest.raises(TypeError, match="SpexLVMModule"):
        loss_fn.loss(lambda x: None, m.guide, x)


# --------------------------------------------------------------------------- gradient
@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_elbo_gradient_w_loc_finite_differences(missing, covariates):
    """d ELBO / d w_loc (autograd, cell-score posterior held fixed: envelope theorem)
    equals central finite differences of the ELBO (which re-optimises the scores)."""
    x = _data(missing=missing)
    m = _module(x, _slab(), covariates=covariates).double()  # every tensor in float64
    d = None if not covariates else _design(m)
    m.zero_grad()
    m.analytic_elbo(x, d)["elbo"].backward()
    grad = m.w_loc.grad.clone()
    fd = torch.zeros_like(grad)
    h = 1e-6
    with torch.no_grad():
        for i in range(G):
            for j in range(K):
                m.w_loc[i, j] += h
                up = float(m.analytic_elbo(x, d)["elbo"])
                m.w_loc[i, j] -= 2 * h
                down = float(m.analytic_elbo(x, d)["elbo"])
                m.w_loc[i, j] += h
                fd[i, j] = (up - down) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("overlap", [False, True], ids=["", "learned-overlap"])
@pytest.mark.parametrize("noise_scaled", [False, True], ids=["ard", "gprior"])
@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_elbo_gradient_all_parameters_directional(missing, covariates, noise_scaled, overlap):
    """Directional derivatives of every variational parameter (float64); with covariates
    the covariate effects' too (the scores depend on them: envelope theorem again); with a
    learned overlap of the scores' prior, its ``rho`` too."""
    x = _data(missing=missing)
    m = _module(
        x,
        _slab(),
        covariates=covariates,
        noise_scaled=noise_scaled,
        score_corr=SCORE_CORR if overlap else None,
        learn_overlap=overlap,
    ).double()
    d = None if not covariates else _design(m)
    m.zero_grad()
    m.analytic_elbo(x, d)["elbo"].backward()
    gen = torch.Generator().manual_seed(3)
    h = 1e-6
    names = {name for name, _ in m.named_parameters()}
    assert covariates == ("cov_loc" in names)
    assert overlap == m.score_overlap_logit.requires_grad
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        d_p = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        with torch.no_grad():
            p.add_(h * d_p)
            up = float(m.analytic_elbo(x, d)["elbo"])
            p.sub_(2 * h * d_p)
            down = float(m.analytic_elbo(x, d)["elbo"])
            p.add_(h * d_p)
        fd = (up - down) / (2 * h)
        assert float((p.grad * d_p).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-5), name


def test_elbo_gradient_float32_directional():
    """The same check in the module's own precision (float32), with a loose tolerance."""
    x = _data()
    m = _module(x, _slab())
    m.zero_grad()
    m.analytic_elbo(x)["elbo"].backward()
    d = torch.randn(G, K, generator=torch.Generator().manual_seed(4))
    eps = 3e-3
    with torch.no_grad():
        m.w_loc.add_(eps * d)
        up = _elbo(m, x)
        m.w_loc.sub_(2 * eps * d)
        down = _elbo(m, x)
        m.w_loc.add_(eps * d)
    assert float((m.w_loc.grad * d).sum()) == pytest.approx((up - down) / (2 * eps), rel=2e-3)


# --------------------------------------------------------------------------- E[softplus]
_SDS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
_MEANS = (*(float(m) for m in range(-30, 31, 3)), -0.5, 0.5, 1.5)


def _softplus_quad(m: float, s: float) -> tuple[float, float, float]:
    """E[softplus(z)], E[sigmoid(z)] and E[sigmoid(z) t] for z = m + s t, t ~ N(0, 1), by
    ``scipy.integrate.quad`` (float64), with break points where softplus bends."""
    from scipy import integrate, special

    def quad(f):
        kink = -m / s
        points = [p for p in (kink - 20.0 / s, kink, kink + 20.0 / s) if -12.0 < p < 12.0]
        integrand = lambda t: f(m + s * t, t) * math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
        return integrate.quad(
            integrand, -12.0, 12.0, points=points or None, limit=500, epsabs=1e-13, epsrel=1e-12
        )[0]

    softplus = lambda z: max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return (
        quad(lambda z, t: softplus(z)),
        quad(lambda z, t: special.expit(z)),
        quad(lambda z, t: special.expit(z) * t),
    )


def test_expected_softplus_matches_scipy_quad():
    """Value and both derivatives within 2e-7 of adaptive quadrature for sd 0.1-30 and
    means -30..30 (the 12-node Gauss-Hermite rule it replaces was off by 1e-2 at sd 5 and
    0.5 at sd 30; benchmarks/quadrature_error.py)."""
    mean, sd = torch.meshgrid(
        torch.tensor(_MEANS, dtype=torch.float64),
        torch.tensor(_SDS, dtype=torch.float64),
        indexing="ij",
    )
    mean.requires_grad_()
    sd.requires_grad_()
    value = _expected_softplus(mean, sd)
    value.sum().backward()
    ref = torch.tensor([[_softplus_quad(m, s) for s in _SDS] for m in _MEANS], dtype=torch.float64)
    for got, expected in zip((value.detach(), mean.grad, sd.grad), ref.unbind(-1), strict=True):
        torch.testing.assert_close(got, expected, atol=2e-7, rtol=0.0)


def test_expected_softplus_error_bound_at_zero_sd():
    """At sd -> 0 the closed form is the mixture's softplus and sigmoid themselves: their
    sup error over the reals is the bound for every mean and sd (9.2e-8 and 1.4e-7)."""
    m = torch.linspace(-60.0, 60.0, 240001, dtype=torch.float64, requires_grad=True)
    value = _expected_softplus(m, torch.zeros_like(m))
    value.sum().backward()
    exact = torch.nn.functional.softplus(m.detach())
    assert float((value.detach() - exact).abs().max()) < 1e-7
    assert float((m.grad - torch.sigmoid(m.detach())).abs().max()) < 1.4e-7


def test_expected_softplus_gradcheck():
    """The custom backward equals autograd's finite differences (float64)."""
    mean = torch.tensor([-25.0, -3.0, -0.4, 0.0, 0.7, 4.0, 28.0], dtype=torch.float64)
    sd = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0, 15.0, 30.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        _expected_softplus, (mean.requires_grad_(), sd.requires_grad_())
    )


def test_expected_softplus_float32_broadcast_monte_carlo():
    """Float32, broadcast shapes, against Monte Carlo; tiny and huge sds stay finite."""
    mean = torch.tensor([[-2.0], [0.0], [3.0]])
    sd = torch.tensor([[0.2, 1.0, 1.8, 12.0]])
    value = _expected_softplus(mean, sd)
    assert value.shape == (3, 4)
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(400000, generator=gen, dtype=torch.float64)
    mc = torch.nn.functional.softplus(mean.double()[..., None] + sd.double()[..., None] * t)
    se = mc.std(-1) / math.sqrt(t.numel())
    assert ((value.double() - mc.mean(-1)).abs() < 4 * se + 1e-5).all()
    extreme = _expected_softplus(
        torch.tensor([-80.0, 0.0, 80.0]), torch.tensor([1e-4, 1e-4, 60.0])
    )
    assert torch.isfinite(extreme).all()
    assert float(extreme[1]) == pytest.approx(math.log(2.0), abs=1e-6)


def test_module_n_quadrature_is_deprecated():
    x = _data()
    slab = _slab()
    args = (N, slab, x.mean(0), 1.0, torch.full((G,), float(N)), torch.zeros(G, K), torch.ones(G))
    with pytest.warns(FutureWarning, match="n_quadrature"):
        SpexLVMModule(*args, n_quadrature=12)


# --------------------------------------------------------------------------- minibatches
@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_minibatch_elbo_unbiased(missing, covariates):
    """Minibatch ELBOs (scaled by n_obs / B) over a partition average to the full ELBO."""
    n, batch = 12, 4
    x = _data(n, missing=missing, seed=2)
    m = _module(x, _slab(), covariates=covariates)
    d = _design(m, n)
    full = _elbo(m, x, d)

    def part(index):
        return _elbo(m, x[index], None if d is None else d[index])

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    parts = [part(perm[i : i + batch]) for i in range(0, n, batch)]
    assert np.mean(parts) == pytest.approx(full, rel=1e-5)
    assert np.std(parts) > 0  # the batches do differ
    # unequal batches: weighted by their share of the cells
    sizes = [5, 4, 3]
    bounds = np.cumsum([0, *sizes])
    weighted = sum(
        s / n * part(perm[a:b]) for s, a, b in zip(sizes, bounds[:-1], bounds[1:], strict=True)
    )
    assert weighted == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_minibatch_sumsq_is_the_batch_own(missing):
    """A minibatch's statistics carry its own sum of squares of the centred, scaled,
    observed values; the whole training set uses the exact constant instead."""
    x = _data(missing=missing)
    m = _module(x, _slab()).double()
    with torch.no_grad():
        m.data_scale.fill_(1.7)
        batch = x[2:7].double()
        stats = m._minibatch_statistics(batch)
        y = torch.nan_to_num((batch - m.gene_mean) / m.data_scale)
        torch.testing.assert_close(stats["sumsq"], (y**2).sum(0), rtol=1e-12, atol=0.0)
        assert "sumsq" not in m._minibatch_statistics(x.double())


def test_minibatch_squared_error_strong_signal():
    """With a gene explained to R^2 ~ 0.99, the per-gene squared error of every minibatch
    is non-negative and the minibatch ELBO varies far less than with the full-data sum of
    y^2 plus minibatch cross terms (the estimator before, also unbiased)."""
    gen = torch.Generator().manual_seed(5)
    n, batch = 60, 6
    w = 2.0 * torch.randn(G, K, generator=gen)
    x = torch.randn(n, K, generator=gen) @ w.T + 0.1 * torch.randn(n, G, generator=gen)
    m = _module(x, _slab())
    with torch.no_grad():
        m.w_loc.copy_(w)
        m.w_log_sd.fill_(math.log(0.01))
        m.prec_log_rate.copy_(torch.log(m.prec_shape * 0.01))
        mu, var = m.loadings_moments()
        elbos = {"own": [], "full_data_sumsq": []}
        for start in range(0, n, batch):
            stats = m._minibatch_statistics(x[start : start + batch])
            second, ym = stats["second"], stats["ym"]
            fit = ((mu @ second) * mu).sum(-1) + var @ torch.diagonal(second)
            fit = fit - 2.0 * (mu * ym).sum(-1)
            scale = n / batch
            assert (scale * (stats["sumsq"] + fit) >= 0).all()
            old = {k: v for k, v in stats.items() if k != "sumsq"}
            for key, st in (("own", stats), ("full_data_sumsq", old)):
                ell = m.expected_log_likelihood(st, scale)
                elbos[key].append(float(ell - scale * st["kl_x"]))
    own, old = np.array(elbos["own"]), np.array(elbos["full_data_sumsq"])
    print(f"\n[minibatch ELBO sd] own {own.std():.3g}, full-data sum {old.std():.3g}")
    assert own.mean() == pytest.approx(old.mean(), rel=1e-4)  # same expectation
    assert own.std() < 0.1 * old.std()


# --------------------------------------------------------------------------- missing values
@pytest.mark.parametrize(
    ("bad", "expected"),
    [(None, True), (math.nan, False), (math.inf, False), (-math.inf, False)],
    ids=["finite", "nan", "inf", "-inf"],
)
def test_all_finite_one_reduction_and_its_fallback(bad, expected):
    x = torch.randn(50, 40)
    if bad is not None:
        x[7, 3] = bad
    assert all_finite(x) is expected
    assert all_finite(x.double()) is expected
    # finite entries whose sum overflows: the entry-by-entry check decides
    big = torch.full((4, 3), 3e38)
    assert not bool(torch.isfinite(big.sum()))
    assert all_finite(big) is True
    big[1, 1] = math.nan
    assert all_finite(big) is False
    assert all_finite(torch.empty(0, 5)) is True


def test_score_posterior_checks_for_missing_values_itself():
    """``complete=None`` finds the missing entries (the score of a cell with one uses only
    its observed genes) and takes the complete path without them."""
    x = _data()
    m = _module(x, _slab())
    found = m.score_posterior(x)
    assert "observed" not in found
    torch.testing.assert_close(found["means"], m.score_posterior(x, complete=True)["means"])
    x_nan = x.clone()
    x_nan[2, 1] = math.nan
    post = m.score_posterior(x_nan)
    assert not bool(post["observed"][2, 1])
    assert bool(torch.isfinite(post["means"]).all())


def test_score_posterior_missing_path_matches_complete_path():
    x = _data()
    m = _module(x, _slab())
    complete = m.score_posterior(x, complete=True)
    masked = m.score_posterior(x, complete=False)
    torch.testing.assert_close(masked["means"], complete["means"], rtol=1e-4, atol=1e-5)
    assert masked["cov"].shape == (N, K, K)
    torch.testing.assert_close(
        masked["cov"], complete["cov"].expand(N, K, K), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        masked["logdet"], complete["logdet"].expand(N), rtol=1e-5, atol=1e-5
    )
    assert bool(masked["observed"].all())


@pytest.mark.parametrize("covariates", [False, True], ids=["", "covariates"])
def test_elbo_missing_path_matches_complete_path(covariates):
    """The whole ELBO through the missing-value statistics equals the complete one."""
    x = _data()
    m = _module(x, _slab(), covariates=covariates)
    d = _design(m)
    assert not bool(m.has_missing)
    with torch.no_grad():
        reference = {k: float(v) for k, v in m.analytic_elbo(x, d).items()}
    m.has_missing.fill_(True)
    with torch.no_grad():
        via_missing = {k: float(v) for k, v in m.analytic_elbo(x, d).items()}
    for key, value in reference.items():
        assert via_missing[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key


def test_missing_entries_are_ignored():
    """Whatever the missing entries would have held, the scores and the ELBO are the same:
    with NaN, and with the entries replaced by other values but masked by the module."""
    x = _data(missing=True)
    m = _module(x, _slab())
    post = m.score_posterior(x)
    assert not post["observed"][NAN_ENTRIES[0]]
    assert torch.isfinite(post["means"]).all()
    # the cell with a NaN is scored from its observed genes only: a model of those genes
    i, j = NAN_ENTRIES[0]
    keep = [g for g in range(G) if g != j]
    mu, var = m.loadings_moments()
    p = m.expected_precision()
    prec = torch.eye(K) + (mu[keep] * p[keep, None]).T @ mu[keep] + torch.diag(p[keep] @ var[keep])
    y = (x[i, keep] - m.gene_mean[keep]) / m.data_scale
    expected = torch.linalg.solve(prec, (mu[keep] * p[keep, None]).T @ y)
    torch.testing.assert_close(post["means"][i], expected, rtol=1e-4, atol=1e-5)
    assert np.isfinite(_elbo(m, x))


def test_guide_scores_do_not_validate_broadcast_covariance():
    """The guide's score site shares one K x K covariance over the minibatch; argument
    validation would check it broadcast to B x K x K for symmetry, i.e. materialise it
    (33 GB for the default 8,388-cell minibatch at K = 1,000: out of memory)."""
    x = _data()
    m = _module(x, _slab(0.3))
    with torch.no_grad(), pyro.validation_enabled(True):
        guide = poutine.trace(m.guide).get_trace(x)
    fn = guide.nodes["x"]["fn"]
    assert fn._unbroadcasted_scale_tril.shape == (K, K)
    assert not fn._validate_args


def test_guide_scores_draw_like_the_stock_multivariate_normal():
    """The guide's score draws (one matmul with the shared Cholesky factor) equal the stock
    ``MultivariateNormal.rsample`` (a batch of broadcast matrix-vector products)."""
    x = _data()
    m = _module(x, _slab(0.3))
    with torch.no_grad():
        guide = poutine.trace(m.guide).get_trace(x)
        fn = guide.nodes["x"]["fn"]
        stock = torch.distributions.MultivariateNormal(fn.loc, scale_tril=fn.scale_tril)
        for shape in ((), (4,)):
            torch.manual_seed(3)
            ours = fn.rsample(torch.Size(shape))
            torch.manual_seed(3)
            ref = stock.rsample(torch.Size(shape))
            assert ours.shape == ref.shape == (*shape, N, K)
            torch.testing.assert_close(ours, ref)


# --------------------------------------------------------------------------- covariates
def test_covariate_design_columns():
    """One-hot columns of every level but the first, then the continuous columns; each
    centred and scaled with the module's statistics."""
    x = _data()
    m = _module(x, _slab(), covariates=True)
    cov = _covariates()
    d = m.covariate_design(cov)
    assert d.shape == (N, 4)
    raw = torch.cat(
        [
            (cov["batch"] == 1).float(),
            (cov["batch"] == 2).float(),
            (cov["extra_categorical_covs"] == 1).float(),
            cov["extra_continuous_covs"],
        ],
        1,
    )
    torch.testing.assert_close(d, (raw - m.cov_centre) / m.cov_scale)
    with pytest.raises(ValueError, match="categorical covariate"):
        m.covariate_design({"batch": cov["batch"]})
    with pytest.raises(ValueError, match="design"):
        m.score_posterior(x)


def test_scores_explain_data_minus_covariate_effects():
    """The cell-score posterior of data with covariates is that of ``y - C E[B]^T`` without
    them (complete and missing-value paths)."""
    x = _data(missing=True)
    m = _module(x, _slab(), covariates=True)
    d = _design(m)
    shifted = x - (d @ m.cov_loc.T).detach() * m.data_scale
    plain = _module(x, _slab(), covariates=False)
    plain.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("cov_")}, strict=True
    )
    with torch.no_grad():
        for complete_x, sub in ((x, shifted), (x[[0, 2, 3]], shifted[[0, 2, 3]])):
            index = [0, 2, 3] if complete_x.shape[0] == 3 else slice(None)
            ours = m.score_posterior(complete_x, design=d[index])["means"]
            ref = plain.score_posterior(sub)["means"]
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
