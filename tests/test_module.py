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
from spexlvm._module import _expected_softplus, _gauss_hermite

N, G, K = 11, 7, 3
NAN_ENTRIES = ((1, 2), (5, 6))


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
    x: torch.Tensor, slab: torch.Tensor, *, seed: int = 0, noise_scaled: bool = False
) -> SpexLVMModule:
    """The module with its data constants from ``x`` and perturbed variational parameters."""
    torch.manual_seed(seed)
    n = x.shape[0]
    mean = torch.nanmean(x, 0)
    yc = torch.nan_to_num(x - mean)
    cnt = torch.isfinite(x).sum(0).float()
    m = SpexLVMModule(
        n, slab, mean, 1.0, cnt, torch.randn(G, K) * 0.5, torch.ones(G) * 0.5,
        gene_sumsq=(yc**2).sum(0), dense=torch.tensor([False, False, True]),
        dense_noise_scaled=noise_scaled,
    )  # fmt: skip
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _elbo(m: SpexLVMModule, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(m.analytic_elbo(x)["elbo"])


# --------------------------------------------------------------------------- ELBO vs Pyro
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
@pytest.mark.parametrize(
    ("low", "noise_scaled"),
    [(0.3, False), (0.01, False), (0.3, True), (0.01, True)],
    ids=["slab0.3", "slab0.01", "slab0.3-gprior", "slab0.01-gprior"],
)
def test_analytic_elbo_matches_trace_elbo(missing, low, noise_scaled):
    """Closed-form ELBO == Pyro's ``Trace_ELBO`` on the module's own model and guide
    (dense prior: scaled by a factor scale, or by each gene's noise: a g-prior)."""
    x = _data(missing=missing)
    m = _module(x, _slab(low, per_gene_dense=True), noise_scaled=noise_scaled)
    assert bool(m.has_missing) is missing
    analytic = _elbo(m, x)
    pyro.set_rng_seed(0)
    trace_elbo = pyro.infer.Trace_ELBO(
        num_particles=200, vectorize_particles=True, max_plate_nesting=2
    )
    with torch.no_grad():
        values = np.array([-trace_elbo.loss(m.model, m.guide, x) for _ in range(30)])
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


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_analytic_elbo_terms_match_sampled_sites(missing):
    """Term by term: E_q[log p - log q] of each light-tailed site, by sampling, equals the
    closed-form term (the loadings' term is heavy-tailed; the total test covers it)."""
    x = _data(missing=missing)
    m = _module(x, _slab(0.3))
    with torch.no_grad():
        terms = m.analytic_elbo(x)
    n_particles = 20000
    pyro.set_rng_seed(1)
    with torch.no_grad(), pyro.plate("particles", n_particles, dim=-3):
        guide = poutine.trace(m.guide).get_trace(x)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    for site, term in _SITE_TERMS.items():
        node = model.nodes[site]
        value = node["fn"].log_prob(node["value"])
        if site != "y":
            value = value - guide.nodes[site]["fn"].log_prob(guide.nodes[site]["value"])
        per_particle = value.reshape(n_particles, -1).sum(1).double()
        mc = per_particle.mean().item()
        se = (per_particle.std() / math.sqrt(n_particles)).item()
        expected = float(terms[term]) * (1.0 if term == "log_likelihood" else -1.0)
        assert abs(expected - mc) < 4 * se + 1e-4, (site, expected, mc, se)


def test_analytic_elbo_loss_interface():
    x = _data()
    m = _module(x, _slab())
    loss_fn = AnalyticELBO()
    assert loss_fn.loss(m.model, m.guide, x) == pytest.approx(-_elbo(m, x), rel=1e-6)
    m.zero_grad()
    loss = loss_fn.loss_and_grads(m.model, m.guide, x)
    assert loss == pytest.approx(-_elbo(m, x), rel=1e-6)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(TypeError, match="SpexLVMModule"):
        loss_fn.loss(lambda x: None, m.guide, x)


# --------------------------------------------------------------------------- gradient
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_elbo_gradient_w_loc_finite_differences(missing):
    """d ELBO / d w_loc (autograd, cell-score posterior held fixed: envelope theorem)
    equals central finite differences of the ELBO (which re-optimises the scores)."""
    x = _data(missing=missing)
    m = _module(x, _slab()).double()  # every parameter and buffer in float64
    m.zero_grad()
    m.analytic_elbo(x)["elbo"].backward()
    grad = m.w_loc.grad.clone()
    fd = torch.zeros_like(grad)
    h = 1e-6
    with torch.no_grad():
        for i in range(G):
            for j in range(K):
                m.w_loc[i, j] += h
                up = float(m.analytic_elbo(x)["elbo"])
                m.w_loc[i, j] -= 2 * h
                down = float(m.analytic_elbo(x)["elbo"])
                m.w_loc[i, j] += h
                fd[i, j] = (up - down) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("noise_scaled", [False, True], ids=["ard", "gprior"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_elbo_gradient_all_parameters_directional(missing, noise_scaled):
    """Directional derivatives of every variational parameter (float64)."""
    x = _data(missing=missing)
    m = _module(x, _slab(), noise_scaled=noise_scaled).double()
    m.zero_grad()
    m.analytic_elbo(x)["elbo"].backward()
    gen = torch.Generator().manual_seed(3)
    h = 1e-6
    for name, p in m.named_parameters():
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        with torch.no_grad():
            p.add_(h * d)
            up = float(m.analytic_elbo(x)["elbo"])
            p.sub_(2 * h * d)
            down = float(m.analytic_elbo(x)["elbo"])
            p.add_(h * d)
        fd = (up - down) / (2 * h)
        assert float((p.grad * d).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-5), name


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


# --------------------------------------------------------------------------- quadrature
def _softplus_reference(mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """E[softplus(mean + sd t)], t ~ N(0, 1): dense trapezoid rule in float64 on t."""
    t = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
    w = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi) * (t[1] - t[0])
    z = mean[..., None] + sd[..., None] * t
    return (torch.nn.functional.softplus(z) * w).sum(-1)


@pytest.mark.parametrize(
    ("sds", "atol", "rtol", "grad_atol"),
    [
        # measured: value error <= 4.3e-5, gradient error <= 1.2e-4
        ([0.01, 0.1, 0.5, 1.0, 1.5, 2.0], 1e-4, 0.0, 3e-4),
        # 12 nodes lose accuracy on wide distributions (measured: value rel. error 0.3% at
        # sd 3, 1.1% at sd 4; gradient abs. error up to 5e-3)
        ([3.0, 4.0], 0.0, 2e-2, 1e-2),
    ],
    ids=["sd<=2", "sd3-4"],
)
def test_expected_softplus_matches_reference(sds, atol, rtol, grad_atol):
    nodes, weights = _gauss_hermite(12)
    mean, sd = torch.meshgrid(
        torch.tensor([-8.0, -3.0, -1.0, 0.0, 0.5, 2.0, 5.0, 10.0], dtype=torch.float64),
        torch.tensor(sds, dtype=torch.float64),
        indexing="ij",
    )
    mean_q, sd_q = mean.clone().requires_grad_(), sd.clone().requires_grad_()
    value = _expected_softplus(mean_q, sd_q, nodes, weights)
    mean_r, sd_r = mean.clone().requires_grad_(), sd.clone().requires_grad_()
    ref = _softplus_reference(mean_r, sd_r)
    torch.testing.assert_close(value, ref, atol=atol, rtol=rtol)
    # gradients: d/dmean = E[sigmoid(z)], d/dsd = E[sigmoid(z) t]
    value.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(mean_q.grad, mean_r.grad, atol=grad_atol, rtol=0.0)
    torch.testing.assert_close(sd_q.grad, sd_r.grad, atol=grad_atol, rtol=0.0)


def test_expected_softplus_monte_carlo():
    """Float32, broadcast shapes, against Monte Carlo."""
    nodes, weights = _gauss_hermite(12)
    mean = torch.tensor([[-2.0], [0.0], [3.0]])
    sd = torch.tensor([[0.2, 1.0, 1.8]])
    value = _expected_softplus(mean, sd, nodes, weights)
    assert value.shape == (3, 3)
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(400000, generator=gen, dtype=torch.float64)
    mc = torch.nn.functional.softplus(mean.double()[..., None] + sd.double()[..., None] * t)
    se = mc.std(-1) / math.sqrt(t.numel())
    assert ((value.double() - mc.mean(-1)).abs() < 4 * se + 1e-5).all()


# --------------------------------------------------------------------------- minibatches
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "two_nan"])
def test_minibatch_elbo_unbiased(missing):
    """Minibatch ELBOs (scaled by n_obs / B) over a partition average to the full ELBO."""
    n, batch = 12, 4
    x = _data(n, missing=missing, seed=2)
    m = _module(x, _slab())
    full = _elbo(m, x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    parts = [_elbo(m, x[perm[i : i + batch]]) for i in range(0, n, batch)]
    assert np.mean(parts) == pytest.approx(full, rel=1e-5)
    assert np.std(parts) > 0  # the batches do differ
    # unequal batches: weighted by their share of the cells
    sizes = [5, 4, 3]
    bounds = np.cumsum([0, *sizes])
    weighted = sum(
        s / n * _elbo(m, x[perm[a:b]])
        for s, a, b in zip(sizes, bounds[:-1], bounds[1:], strict=True)
    )
    assert weighted == pytest.approx(full, rel=1e-5)


# --------------------------------------------------------------------------- missing values
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


def test_elbo_missing_path_matches_complete_path():
    """The whole ELBO through the missing-value statistics equals the complete one."""
    x = _data()
    m = _module(x, _slab())
    assert not bool(m.has_missing)
    with torch.no_grad():
        reference = {k: float(v) for k, v in m.analytic_elbo(x).items()}
    m.has_missing.fill_(True)
    with torch.no_grad():
        via_missing = {k: float(v) for k, v in m.analytic_elbo(x).items()}
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
