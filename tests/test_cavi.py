"""``engine="cavi"``: the closed-form coordinate updates (:mod:`spexlvm._cavi`) and the
Lightning plan that runs them (:class:`spexlvm.train.CAVITrainingPlan`).

The updates are checked against the ELBO itself: after each one, the gradient of the ELBO
(with the scores' posterior of the pass) with respect to the updated parameters vanishes,
and the ELBO never went down. The streamed statistics are exact sums, so a minibatched
pass gives the full-batch update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_module import SCORE_CORR, _data, _design, _elbo, _module, _slab

import spexlvm
from spexlvm import _cavi
from spexlvm.datasets import f1_score, synthetic

CASES = pytest.mark.parametrize(
    ("missing", "covariates", "noise_scaled"),
    [
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (True, True, False),
        (False, False, True),
        (True, True, True),
    ],
    ids=["complete", "missing", "covariates", "missing-covariates", "gprior", "all"],
)


def _stats(m, x):
    return _cavi.minibatch_statistics(m, x, _design(m, x.shape[0]))


def _value(m, stats) -> float:
    with torch.no_grad():
        return float(_cavi.elbo_from_statistics(m, stats))


def _grads(m, stats, params):
    for p in params:
        p.grad = None
    elbo = _cavi.elbo_from_statistics(m, stats)
    torch.autograd.backward(elbo, inputs=params)
    return [p.grad.clone() for p in params]


@CASES
def test_statistics_elbo_is_the_analytic_elbo(missing, covariates, noise_scaled):
    """With the pass's own parameters, the ELBO from the statistics is the module's ELBO."""
    x = _data(missing=missing)
    m = _module(x, _slab(), covariates=covariates, noise_scaled=noise_scaled)
    with torch.no_grad():
        from_stats = float(_cavi.elbo_from_statistics(m, _stats(m, x)))
    assert from_stats == pytest.approx(_elbo(m, x), rel=1e-5, abs=1e-3)


@CASES
def test_loadings_update_is_the_coordinate_optimum(missing, covariates, noise_scaled):
    """After update_loadings the ELBO's gradient in q(w) (and q(B)) is zero, and it rose."""
    x = _data(missing=missing)
    m = _module(x, _slab(), covariates=covariates, noise_scaled=noise_scaled)
    stats = _stats(m, x)
    params = [m.w_loc, m.w_log_sd] + ([m.cov_loc, m.cov_log_sd] if covariates else [])
    before = _value(m, stats)
    grads = _grads(m, stats, params)
    assert max(float(g.abs().max()) for g in grads) > 1e-1  # the start is not optimal
    _cavi.update_loadings(m, stats)
    after = _value(m, stats)
    assert after > before
    for g in _grads(m, stats, params):
        assert float(g.abs().max()) < 2e-3


@CASES
def test_noise_update_is_the_coordinate_optimum(missing, covariates, noise_scaled):
    """After update_noise the ELBO's gradient in the Gamma rates is zero."""
    x = _data(missing=missing)
    m = _module(x, _slab(), covariates=covariates, noise_scaled=noise_scaled)
    stats = _stats(m, x)
    _cavi.update_loadings(m, stats)
    before = _value(m, stats)
    _cavi.update_noise(m, stats)
    assert _value(m, stats) >= before
    (g,) = _grads(m, stats, [m.prec_log_rate])
    assert float(g.abs().max()) < 1e-3


def test_large_system_conjugate_gradients_match_direct_solve(monkeypatch):
    """Above DIRECT_SOLVE_MAX the means come from conjugate gradients: same optimum."""
    x = _data(missing=True)
    m1 = _module(x, _slab(), covariates=True)
    m2 = _module(x, _slab(), covariates=True)
    stats = _stats(m1, x)
    _cavi.update_loadings(m1, stats)
    monkeypatch.setattr(_cavi, "DIRECT_SOLVE_MAX", 0)
    _cavi.update_loadings(m2, stats)
    torch.testing.assert_close(m2.w_loc, m1.w_loc, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m2.cov_loc, m1.cov_loc, rtol=1e-4, atol=1e-4)


def test_minibatch_statistics_sum_to_the_full_batch():
    """The statistics of a pass in minibatches sum to those of the whole data."""
    x = _data(n=12, missing=True)
    m = _module(x, _slab(), covariates=True, score_corr=SCORE_CORR, learn_overlap=True)
    full = _stats(m, x)
    assert {"moment", "prior_quad", "prior_logdet_n", "n_cells"} <= set(full)
    design = _design(m, 12)
    total = None
    for rows in (slice(0, 5), slice(5, 9), slice(9, 12)):
        total = _cavi.add_statistics(total, _cavi.minibatch_statistics(m, x[rows], design[rows]))
    for key, value in full.items():
        torch.testing.assert_close(total[key], value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overlap", [False, True], ids=["", "learned-overlap"])
@CASES
def test_update_never_lowers_the_elbo(missing, covariates, noise_scaled, overlap):
    """A whole update (closed forms, scale steps, guard; with a learned overlap of the
    scores' prior, its ``rho`` too) raises the pass's ELBO."""
    x = _data(missing=missing)
    for seed in range(3):
        m = _module(
            x,
            _slab(low=0.05),
            seed=seed,
            covariates=covariates,
            noise_scaled=noise_scaled,
            score_corr=SCORE_CORR if overlap else None,
            learn_overlap=overlap,
        )
        opt = torch.optim.Adam(_cavi.scale_parameters(m), lr=0.5)
        for _ in range(3):
            stats = _stats(m, x)
            before = _value(m, stats)
            after = float(_cavi.update(m, stats, opt, 10))
            assert after >= before - 1e-5 * abs(before)
            assert after == pytest.approx(_value(m, stats), rel=1e-6)


def test_update_keeps_the_scales_when_every_step_lowers_the_elbo(monkeypatch):
    """If neither kind of scale step raises the ELBO, the scales stay as they were; the
    restored parameters leave no stale global KL terms in the plan's cache."""
    x = _data()
    m = _module(x, _slab())
    opt = torch.optim.Adam(_cavi.scale_parameters(m), lr=0.05)

    def harmful(module, optimizer, n_steps, stats=None, rel_tol=0.0):
        with torch.no_grad():
            module.tau_loc.add_(5.0)  # a step that wrecks the fit

    monkeypatch.setattr(_cavi, "update_scales", harmful)
    stats = _stats(m, x)
    _cavi.update_loadings(m, stats)
    _cavi.update_noise(m, stats)
    tau = float(m.tau_loc.detach())
    before = _value(m, stats)
    cache = _cavi.GlobalTermsCache()
    after = float(_cavi.update(m, stats, opt, 10, cache=cache))
    assert float(m.tau_loc.detach()) == tau  # both harmful attempts undone
    assert after >= before
    assert after == pytest.approx(_value(m, stats), rel=1e-6)
    with torch.no_grad():
        assert float(cache(m)) == pytest.approx(float(_cavi.global_terms(m)), rel=1e-6)


@CASES
def test_global_terms_cache_gives_the_uncached_elbo(missing, covariates, noise_scaled):
    """Passes with the cache of the global KL terms (as the plan runs them) give the same
    ELBOs and the same parameters as without it; it recomputes only after a change."""
    x = _data(missing=missing)
    kwargs = dict(covariates=covariates, noise_scaled=noise_scaled)
    plain, cached = _module(x, _slab(low=0.05), **kwargs), _module(x, _slab(low=0.05), **kwargs)
    cached.load_state_dict(plain.state_dict())
    opts = [torch.optim.Adam(_cavi.scale_parameters(m), lr=0.5) for m in (plain, cached)]
    cache = _cavi.GlobalTermsCache()
    for _ in range(3):
        stats = _stats(plain, x)
        start = _value(plain, stats)
        with torch.no_grad():
            start_cached = float(_cavi.elbo_from_statistics(cached, _stats(cached, x), cache))
        assert start_cached == start
        after = float(_cavi.update(plain, stats, opts[0], 10))
        after_cached = float(_cavi.update(cached, _stats(cached, x), opts[1], 10, cache=cache))
        assert after_cached == after
    for (name, a), b in zip(plain.state_dict().items(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_global_terms_cache_recomputes_after_any_change(monkeypatch):
    x = _data()
    m = _module(x, _slab())
    calls = []
    original = _cavi.global_terms
    monkeypatch.setattr(_cavi, "global_terms", lambda mod: calls.append(1) or original(mod))
    cache = _cavi.GlobalTermsCache()
    first = float(cache(m))
    assert float(cache(m)) == first and len(calls) == 1  # nothing changed: no new sum
    with torch.no_grad():
        m.tau_loc.add_(1.0)  # in place, as the updates and the optimiser change them
    changed = float(cache(m))
    assert len(calls) == 2 and changed != first
    with torch.no_grad():
        m.tau_loc.sub_(1.0)
    assert float(cache(m)) == pytest.approx(first, rel=1e-6) and len(calls) == 3
    m.load_state_dict(m.state_dict())  # a restored state counts as a change
    cache(m)
    assert len(calls) == 4


def test_scale_steps_stop_early_near_the_optimum():
    """With rel_tol, steps that no longer help are not taken: fewer optimiser steps."""
    x = _data()
    m = _module(x, _slab())
    opt = torch.optim.Adam(_cavi.scale_parameters(m), lr=0.05)
    _cavi.update_scales(m, opt, 300)  # near the optimum
    steps = int(opt.state[m.lam_loc]["step"])
    _cavi.update_scales(m, opt, 50, rel_tol=1e-3)
    early = int(opt.state[m.lam_loc]["step"])
    assert early - steps < 50
    _cavi.update_scales(m, opt, 50, rel_tol=0.0)
    assert int(opt.state[m.lam_loc]["step"]) - early == 50


def test_scale_steps_lower_the_scale_loss():
    x = _data()
    m = _module(x, _slab())
    opt = torch.optim.Adam(_cavi.scale_parameters(m), lr=0.05)
    with torch.no_grad():
        before = float(_cavi.scale_loss(m))
    _cavi.update_scales(m, opt, 20)
    with torch.no_grad():
        assert float(_cavi.scale_loss(m)) < before
    assert m.w_loc.grad is None  # only the scales' gradients are computed


# --------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def small():
    return synthetic(400, 200, 6, noise=0.2, extra=0.2, seed=3)


def _fit(adata, **kwargs):
    adata = adata.copy()
    spexlvm.SpexLVM.setup_anndata(adata)
    torch.manual_seed(0)
    model = spexlvm.SpexLVM(adata)
    model.train(engine="cavi", enable_progress_bar=False, **kwargs)
    return model


def test_cavi_fit_recovers_the_planted_factors_in_few_passes(small):
    model = _fit(small)
    elbo = model.history_["elbo_train"].to_numpy().ravel()
    f1 = f1_score(small.varm["mask_true"][:, :6], model.get_loadings().to_numpy()[:, :6])
    assert f1 >= 0.9
    assert model.converged_ and len(elbo) <= 60
    # the negative ELBO per entry only goes down, pass after pass (up to float32 noise)
    assert np.all(np.diff(elbo) <= 1e-6)
    assert model.adata.uns.get("spexlvm") is None  # train writes nothing into adata


def test_cavi_minibatches_give_the_full_batch_fit(small):
    """Exact statistics: 3 passes in minibatches of 64 cells = 3 full-batch passes."""
    full = _fit(small, max_epochs=3, early_stopping=False)
    mini = _fit(small, max_epochs=3, early_stopping=False, batch_size=64)
    a, b = full.get_loadings().to_numpy(), mini.get_loadings().to_numpy()
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()


def test_cavi_same_seed_same_factors(small):
    a = _fit(small, max_epochs=5, early_stopping=False).get_loadings().to_numpy()
    b = _fit(small, max_epochs=5, early_stopping=False).get_loadings().to_numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())


def test_cavi_learns_the_overlap_of_the_scores_prior():
    """Two near-duplicate gene sets: coordinate ascent learns ``rho`` (reported in
    ``uns``), the negative ELBO still never goes up, and both sets' factors track the
    planted programme."""
    adata = synthetic(400, 200, 4, noise=0.0, seed=5)
    genes = list(adata.var_names[adata.varm["mask_true"][:, 0]])
    sets = {
        f"factor_{k + 1}": list(adata.var_names[adata.varm["mask_true"][:, k]]) for k in range(4)
    }
    sets["twin"] = genes[: len(genes) * 3 // 4] + genes[:2]  # shares 3/4 of factor_1's genes
    spexlvm.tl.fit(
        adata,
        {k: list(dict.fromkeys(v)) for k, v in sets.items()},
        engine="cavi",
        seed=0,
        # the basis of shared genes: with the data's correlation (the default basis) the
        # learned rho stays low here (0.15) and the twin keeps a residual
        model_kwargs={
            "score_overlap": 0.5,
            "learn_score_overlap": True,
            "score_overlap_basis": "genes",
        },
        enable_progress_bar=False,
    )
    params = adata.uns["spexlvm"]["params"]
    assert params["learn_score_overlap"] and params["score_overlap"] != pytest.approx(0.5)
    elbo = np.asarray(adata.uns["spexlvm"]["history"]["elbo_train"]).ravel()
    assert np.all(np.diff(elbo) <= 1e-6)
    names = list(adata.uns["spexlvm"]["factor_names"])
    truth = adata.obsm["X_true"][:, 0]
    for name in ("factor_1", "twin"):
        score = adata.obsm["X_spexlvm"][:, names.index(name)]
        assert abs(np.corrcoef(score, truth)[0, 1]) > 0.9, name


def test_tl_fit_cavi_with_missing_values_and_covariates():
    adata = synthetic(300, 150, 4, noise=0.1, missing=0.05, n_batches=2, batch_effect=1.0, seed=2)
    spexlvm.tl.fit(adata, engine="cavi", batch_key="batch", progress_bar=False)
    params = adata.uns["spexlvm"]["params"]
    assert params["engine"] == "cavi"
    loadings = adata.varm["spexlvm_loadings"][:, :4]
    assert f1_score(adata.varm["mask_true"], loadings) >= 0.85
    shift = adata.varm["batch_shift_true"]
    effects = adata.varm["spexlvm_covariate_effects"][:, 0]
    true = shift[:, 1] - shift[:, 0]
    assert np.corrcoef(effects, true)[0, 1] > 0.95


def test_unknown_engine_is_a_clear_error(small):
    adata = small.copy()
    spexlvm.SpexLVM.setup_anndata(adata)
    model = spexlvm.SpexLVM(adata)
    with pytest.raises(ValueError, match="engine must be one of"):
        model.train(engine="lbfgs", max_epochs=1)


# --------------------------------------------------------------------------- DDP, resume
def test_cavi_ddp_two_processes_match_one(tmp_path):
    """Two CPU processes: the statistics are summed over both, so the same updates."""
    import _fit_child as child
    from _compare import assert_close_to_scale
    from test_atlas import _child

    out = tmp_path / "ddp.npy"
    res = _child(str(out), "--strategy", "ddp", "--devices", "2", "--engine", "cavi")
    assert res.returncode == 0, res.stderr[-3000:]
    adata, single = child.fit_in_process(engine="cavi")
    w_ddp, w_single = np.load(out), single.get_loadings().to_numpy()
    assert child.f1(adata, w_ddp) > 0.9
    assert_close_to_scale(w_ddp, w_single, rel=1e-3, what="DDP vs one-process loadings")


def test_cavi_kill_and_resume_matches_uninterrupted(tmp_path):
    """SIGKILL in the middle of pass 4 (its statistics half summed), resume: same fit."""
    import json

    import _fit_child as child
    from _compare import assert_close_to_scale
    from test_atlas import _child

    ckpt = tmp_path / "ckpt"
    killed = _child(
        str(tmp_path / "killed.npy"),
        *("--checkpoint-dir", str(ckpt), "--kill-at-epoch", "4", "--engine", "cavi"),
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    info = json.loads((ckpt / "spexlvm_checkpoint.json").read_text())
    assert info["epochs"] == 4 and not info["finished"]
    _, resumed = child.make_model()
    resumed.train(**{**child.TRAIN, "engine": "cavi"}, checkpoint_dir=ckpt, checkpoint_interval=0)
    _, full = child.fit_in_process(engine="cavi")
    w_resumed, w_full = resumed.get_loadings().to_numpy(), full.get_loadings().to_numpy()
    assert_close_to_scale(w_resumed, w_full, rel=1e-4, what="resumed vs uninterrupted loadings")
    assert len(resumed.history_["elbo_train"]) == len(full.history_["elbo_train"])
    # an Adam checkpoint is not continued by the other engine
    with pytest.raises(ValueError, match="engine"):
        _, other = child.make_model()
        other.train(**child.TRAIN, checkpoint_dir=ckpt)


def test_cavi_warns_about_ignored_warmup_settings(small):
    adata = small.copy()
    spexlvm.SpexLVM.setup_anndata(adata)
    model = spexlvm.SpexLVM(adata)
    with pytest.warns(UserWarning, match=r"warmup_epochs in plan_kwargs are ignored"):
        model.train(
            engine="cavi",
            max_epochs=1,
            plan_kwargs={"warmup_epochs": 5},
            enable_progress_bar=False,
        )
