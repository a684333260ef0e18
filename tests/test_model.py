"""``SpexLVM``: save/load, projection of cells, getters and argument checks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from spexlvm import SpexLVM

MASK_KEY = "spexlvm_mask"


def _bare(adata: ad.AnnData, x=None) -> ad.AnnData:
    """The same cells and genes, without any annotation or results."""
    out = ad.AnnData(
        np.array(adata.X if x is None else x, copy=True),
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    return out


def _assert_same_results(a: SpexLVM, b: SpexLVM) -> None:
    assert a.factor_names == b.factor_names
    fa, fb = a.get_factors(), b.get_factors()
    assert fa.index.equals(fb.index) and fa.columns.equals(fb.columns)
    assert np.array_equal(fa.to_numpy(), fb.to_numpy())
    la, lb = a.get_loadings(), b.get_loadings()
    assert la.index.equals(lb.index) and la.columns.equals(lb.columns)
    assert np.array_equal(la.to_numpy(), lb.to_numpy())
    ra, rb = a.get_r2(), b.get_r2()
    assert ra.index.equals(rb.index)
    assert np.array_equal(ra.to_numpy(), rb.to_numpy())
    assert ra.attrs["total"] == rb.attrs["total"]


# --------------------------------------------------------------------------- save / load
@pytest.fixture(scope="module")
def saved(paper_fit, tmp_path_factory):
    _, model = paper_fit
    path = tmp_path_factory.mktemp("model") / "spexlvm"
    model.save(str(path))
    return str(path)


def test_save_load_same_adata(paper_fit, saved):
    adata, model = paper_fit
    loaded = SpexLVM.load(saved, adata=adata.copy())
    _assert_same_results(model, loaded)
    assert loaded.n_sparse == model.n_sparse and loaded.n_dense == model.n_dense
    assert loaded.prior_confidence == model.prior_confidence
    np.testing.assert_array_equal(loaded.gene_set_names_, model.gene_set_names_)
    np.testing.assert_array_equal(
        loaded.get_factors().to_numpy(dtype=np.float32), adata.obsm["X_spexlvm"]
    )


def test_save_load_without_mask(paper_fit, saved):
    """The model carries the annotation: the AnnData needs no ``varm``/``uns`` mask."""
    adata, model = paper_fit
    bare = _bare(adata)
    assert MASK_KEY not in bare.varm and MASK_KEY not in bare.uns
    loaded = SpexLVM.load(saved, adata=bare)
    _assert_same_results(model, loaded)
    # the slab widths (the annotation) were restored from the saved state
    np.testing.assert_array_equal(loaded.module.slab.numpy(), model.module.slab.numpy())


def test_load_rejects_other_genes(paper_fit, saved):
    adata, _ = paper_fit
    fewer = _bare(adata[:, :900])
    with pytest.raises(ValueError, match=r"genes differ from the model's \(900 vs 1000 genes"):
        SpexLVM.load(saved, adata=fewer)


def test_load_rejects_renamed_genes(paper_fit, saved):
    """Same number of genes, other names: scvi-tools would only warn; spexlvm refuses."""
    adata, _ = paper_fit
    renamed = _bare(adata)
    renamed.var_names = [f"other_{i}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match=r"genes differ from the model's"):
        SpexLVM.load(saved, adata=renamed)


# --------------------------------------------------------------------------- projection
def test_project_copy_of_training_data(paper_fit):
    adata, model = paper_fit
    train = model.get_factors()
    np.testing.assert_array_equal(train.to_numpy(dtype=np.float32), adata.obsm["X_spexlvm"])
    projected = model.get_factors(adata.copy())
    assert projected.index.equals(train.index)
    assert list(projected.columns) == model.factor_names
    np.testing.assert_allclose(projected.to_numpy(), train.to_numpy(), rtol=1e-5, atol=1e-6)


def test_project_subset_of_cells(paper_fit):
    adata, model = paper_fit
    train = model.get_factors()
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(adata.n_obs, size=137, replace=False))
    subset = _bare(adata[idx])  # new cells: no annotation, no scvi set-up
    projected = model.get_factors(subset)
    assert projected.index.equals(adata.obs_names[idx])
    np.testing.assert_allclose(projected.to_numpy(), train.to_numpy()[idx], rtol=1e-5, atol=1e-5)
    # shuffled order: the rows follow the cells
    perm = rng.permutation(idx)
    projected_perm = model.get_factors(_bare(adata[perm]))
    np.testing.assert_allclose(
        projected_perm.to_numpy(),
        train.loc[adata.obs_names[perm]].to_numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    # small minibatches give the same scores
    np.testing.assert_allclose(
        model.get_factors(subset, batch_size=10).to_numpy(),
        projected.to_numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_project_does_not_retrain(paper_fit):
    adata, model = paper_fit
    w = model.module.w_loc.detach().clone()
    model.get_factors(_bare(adata[:50]))
    model.get_r2(_bare(adata[:50]))
    assert torch_equal(model.module.w_loc, w)


def torch_equal(a, b) -> bool:
    return bool((a.detach() == b).all())


def test_loadings_in_input_units(paper_fit):
    """``get_loadings`` is on the scale of the input: X W^T reconstructs the centred data."""
    adata, model = paper_fit
    x = adata.obsm["X_spexlvm"].astype(np.float64)
    w = adata.varm["spexlvm_loadings"].astype(np.float64)
    y = adata.X.astype(np.float64)
    yc = y - y.mean(0)
    r2 = 1.0 - ((yc - x @ w.T) ** 2).sum() / (yc**2).sum()
    assert r2 == pytest.approx(model.get_r2().attrs["total"], abs=1e-3)


# --------------------------------------------------------------------------- argument checks
@pytest.fixture
def registered(small_adata):
    SpexLVM.setup_anndata(small_adata)
    return small_adata


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_prior_confidence_range(registered, confidence):
    with pytest.raises(ValueError, match=r"prior_confidence must lie in \(0, 1\)"):
        SpexLVM(registered, prior_confidence=confidence)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_sparse": -1}, r"n_sparse must be a non-negative integer"),
        ({"n_dense": -2}, r"n_dense must be a non-negative integer"),
        ({"n_sparse": 1.5}, r"n_sparse must be a non-negative integer"),
    ],
)
def test_factor_counts(registered, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpexLVM(registered, **kwargs)


def test_no_factors(small_adata):
    small_adata.varm[MASK_KEY] = np.zeros((small_adata.n_vars, 0), dtype=bool)
    small_adata.uns[MASK_KEY] = {"names": np.array([], dtype=str)}
    SpexLVM.setup_anndata(small_adata)
    with pytest.raises(ValueError, match=r"The model has no factors"):
        SpexLVM(small_adata)


def test_no_mask(small_adata):
    del small_adata.varm[MASK_KEY], small_adata.uns[MASK_KEY]
    SpexLVM.setup_anndata(small_adata)
    with pytest.raises(KeyError, match=r"No gene-set mask: adata.varm\['spexlvm_mask'\]"):
        SpexLVM(small_adata)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_inf_in_input(small_adata, value):
    small_adata.X[0, 0] = value
    SpexLVM.setup_anndata(small_adata)
    with pytest.raises(ValueError, match=r"holds \+/-inf values"):
        SpexLVM(small_adata)


def test_model_factor_layout(registered):
    model = SpexLVM(registered, n_sparse=2, n_dense=1)
    names = [str(n) for n in registered.uns[MASK_KEY]["names"]]
    assert model.factor_names == [*names, "sparse_1", "sparse_2", "dense_1"]
    assert model.module.n_factors == len(names) + 3
    slab = model.module.slab.numpy()
    mask = registered.varm[MASK_KEY]
    a = len(names)
    np.testing.assert_allclose(slab[:, :a][mask], 1.0)
    np.testing.assert_allclose(slab[:, :a][~mask], 0.01, rtol=1e-5)
    np.testing.assert_allclose(slab[:, a : a + 2], 0.05, rtol=1e-6)
    # dense: the g-prior, N(0, g sigma_g^2 / n_cells) with g = 10
    np.testing.assert_allclose(slab[:, a + 2], np.sqrt(10.0 / registered.n_obs), rtol=1e-6)
    assert bool(model.module.dense_noise_scaled)
    old = SpexLVM(registered, n_dense=1, dense_prior="ard")  # spexlvm 0.1's prior
    np.testing.assert_allclose(old.module.slab.numpy()[:, a], 1.0)
    assert not bool(old.module.dense_noise_scaled)
    with pytest.raises(ValueError, match="dense_prior"):
        SpexLVM(registered, n_dense=1, dense_prior="sparse")


@pytest.mark.parametrize("basis", ["data", "genes"])
def test_score_prior_correlation_basis(registered, basis):
    """The scores' prior ``R = (1 - rho) I + rho C`` on the annotated factors: with the
    ``"data"`` basis ``C`` is the correlation of the sets' mean expression over the cells
    (fewer than the 1,000 the start samples, so all of them), with ``"genes"`` the sets'
    shared genes; unannotated factors stay independent. The basis is in ``uns``' params."""
    from spexlvm.pp._nested import set_overlap

    model = SpexLVM(registered, n_dense=1, score_overlap=0.3, score_overlap_basis=basis)
    mask = registered.varm[MASK_KEY].astype(float)
    x = np.asarray(registered.X, dtype=np.float64)
    if basis == "data":
        expected = np.corrcoef((x - x.mean(0)) @ (mask / mask.sum(0)), rowvar=False)
    else:
        expected = set_overlap(mask)
    a = mask.shape[1]
    cov = model.module.score_prior_cov().detach().double().numpy()
    np.testing.assert_allclose(cov[:a, :a], 0.7 * np.eye(a) + 0.3 * expected, atol=1e-5)
    np.testing.assert_allclose(cov[a, :], np.eye(a + 1)[a], atol=1e-6)
    # the two bases differ on these data (sets that share no genes correlate in the data)
    other = set_overlap(mask) if basis == "data" else None
    if other is not None:
        assert np.abs(expected - other).max() > 0.05
    with pytest.raises(ValueError, match="score_overlap_basis must be 'data', 'exclusive'"):
        SpexLVM(registered, score_overlap_basis="cells")


def test_shared_local_scale_covers_the_in_set_loadings(registered):
    """With ``shared_local_scale=True`` a gene's in-set loadings share one local scale: the
    module's mask is the gene-set mask on the annotated factors and empty on the
    unannotated ones; by default every loading has its own (and the genes' scales are no
    parameters)."""
    mask = registered.varm[MASK_KEY]
    a = mask.shape[1]
    model = SpexLVM(registered, n_sparse=1, n_dense=1, shared_local_scale=True)
    shared = model.module.lam_shared.numpy()
    np.testing.assert_array_equal(shared[:, :a], mask)
    assert not shared[:, a:].any()
    assert model.module.lam_gene_loc.requires_grad
    own = SpexLVM(registered, n_dense=1)
    assert not own.module.lam_shared.any() and not own.module.lam_gene_loc.requires_grad


def test_shared_local_scale_save_load(registered, tmp_path):
    """A model with shared local scales saves and loads with them: same mask, same
    results, the genes' scales trainable again."""
    model = SpexLVM(registered, n_dense=1, shared_local_scale=True)
    model.train(max_epochs=5, enable_progress_bar=False)
    model.save(str(tmp_path / "m"))
    loaded = SpexLVM.load(str(tmp_path / "m"), adata=registered.copy())
    assert torch.equal(loaded.module.lam_shared, model.module.lam_shared)
    assert loaded.module.lam_gene_loc.requires_grad
    _assert_same_results(model, loaded)


def test_set_mean_correlation_is_a_correlation_matrix():
    """:func:`set_mean_correlation`: the correlation of the signed set means, unit
    diagonal, positive semi-definite, 0 for a set whose mean does not vary."""
    from spexlvm._init import set_mean_correlation

    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 6))
    y[:, 5] = 0.0  # a constant gene
    signs = np.zeros((6, 4))
    signs[:3, 0] = 1
    signs[2:5, 1] = 1
    signs[1, 1] = -1
    signs[5, 3] = 1  # only the constant gene
    signs[0, 2], signs[4, 2] = 1, -1
    c = set_mean_correlation(torch.as_tensor(y, dtype=torch.float32), signs)
    means = y @ (signs / np.abs(signs).sum(0))
    np.testing.assert_allclose(c[:3, :3], np.corrcoef(means[:, :3], rowvar=False), atol=1e-6)
    np.testing.assert_allclose(c[3], np.eye(4)[3])
    np.testing.assert_allclose(np.diagonal(c), 1.0)
    assert np.linalg.eigvalsh(c).min() > -1e-9


def test_set_mean_correlation_exclusive_compares_the_genes_not_shared():
    """``exclusive=True``: a set nested in a broader one is related to it only when the
    broader set's other genes follow its programme; identical sets correlate 1; sets
    without shared genes keep the plain correlation; the result is a correlation matrix."""
    from spexlvm._init import set_mean_correlation

    rng = np.random.default_rng(0)
    n = 500
    one, two = rng.standard_normal(n), rng.standard_normal(n)
    y = 0.5 * rng.standard_normal((n, 70))
    y[:, :10] += one[:, None]  # child 1 (genes 0-9) in parent 0 (0-29): its own programme
    y[:, 10:30] += two[:, None]  # the rest of parent 0: an independent one
    y[:, 30:60] += rng.standard_normal(n)[:, None]  # parent 2 (30-59) and child 3 (30-39):
    signs = np.zeros((70, 6))  # one programme over all of the parent
    signs[:30, 0] = signs[:10, 1] = signs[30:60, 2] = signs[30:40, 3] = 1
    signs[60:70, 4] = signs[60:70, 5] = 1  # identical sets
    y = torch.as_tensor(y - y.mean(0), dtype=torch.float32)
    plain = set_mean_correlation(y, signs)
    excl = set_mean_correlation(y, signs, exclusive=True)
    assert plain[0, 1] > 0.4  # the shared genes alone relate them
    assert abs(excl[0, 1]) < 0.1
    assert plain[2, 3] > 0.9 and excl[2, 3] > 0.9
    assert excl[4, 5] == pytest.approx(1.0)
    np.testing.assert_allclose(excl[:2, 2:4], plain[:2, 2:4], atol=0.05)  # no shared genes
    np.testing.assert_allclose(np.diagonal(excl), 1.0)
    np.testing.assert_allclose(excl, excl.T)
    assert np.linalg.eigvalsh(excl).min() > -1e-9


# ------------------------------------------------------------------ convergence rule
def _drive(rule, steps_per_epoch, loadings, start=0, *, neg_elbo=None, phi=None):
    """Feed loadings to the rule as if they were optimisation steps ``start, start + 1, ...``.

    ``neg_elbo`` and ``phi`` (one per epoch): the exact negative ELBO per entry that the
    coordinate-ascent plan keeps, and the factors' log-scales.
    """
    from types import SimpleNamespace

    k = loadings[0].shape[1]
    module = SimpleNamespace(
        w_loc=None,
        w_log_sd=torch.full_like(loadings[0], -3.0),
        phi_loc=torch.zeros(k),
        dense=torch.zeros(k, dtype=torch.bool),
        _sd=torch.exp,
    )
    plan = SimpleNamespace(module=module, log=lambda *a, **k: None)
    trainer = SimpleNamespace(current_epoch=start // steps_per_epoch, should_stop=False)
    for step, w in enumerate(loadings, start=start):
        epoch = step // steps_per_epoch - start // steps_per_epoch
        module.w_loc = w
        if phi is not None:
            module.phi_loc = phi[epoch]
        if neg_elbo is not None:
            plan.pass_neg_elbo = neg_elbo[epoch]
        rule.on_train_batch_end(trainer, plan, None, None, step)
        if (step + 1) % steps_per_epoch == 0:
            rule.on_train_epoch_end(trainer, plan)
            if trainer.should_stop:
                return trainer.current_epoch + 1
            trainer.current_epoch += 1
    return None


def test_convergence_rule_stops_on_the_elbo_with_elbo_tol():
    """``elbo_tol`` (coordinate ascent): a fit whose loadings still drift by 5% per pass
    stops once the ELBO per entry gained less than ``elbo_tol`` in ``patience`` passes in
    a row; without it the drift keeps it going; a gain above the tolerance resets."""

    from spexlvm._trainingplan import LoadingsConvergence

    base = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    drift = [base * (1.0 + 0.05 * t) for t in range(30)]
    # negative ELBO per entry after each pass: big gains, then 2e-5 per pass, one 1e-3
    neg_elbo = [1.0, 0.6, 0.5, 0.49998, 0.49996, 0.49896, 0.49894, 0.49892, 0.4989]
    neg_elbo += [0.4989 - 2e-5 * i for i in range(1, 22)]

    def drive(rule):
        return _drive(rule, 1, drift, neg_elbo=neg_elbo)

    kwargs = {"tol": 0.02, "window": 1, "patience": 3, "min_epochs": 3, "smoothing": 0.0}
    rule = LoadingsConvergence(elbo_tol=1e-4, **kwargs)
    # passes 4-5 gain 2e-5 each, pass 6 gains 1e-3 (reset), passes 7-9 settle: stop at 9
    assert drive(rule) == 9
    assert rule.stopped_by_elbo and rule.stopped_epoch == 9
    assert drive(LoadingsConvergence(**kwargs)) is None  # the drift alone never settles
    with pytest.raises(ValueError, match="elbo_tol"):
        LoadingsConvergence(elbo_tol=-1.0)
    # relative: the fit has gained about 0.5 by pass 4, so 2e-4 of it is about 1e-4: the
    # same stop; 1e-5 of it (5e-6) is never met by the 2e-5 gains
    rule = LoadingsConvergence(elbo_rtol=2e-4, **kwargs)
    assert drive(rule) == 9
    assert rule.stopped_by_elbo and rule._first_elbo == 1.0
    assert drive(LoadingsConvergence(elbo_rtol=1e-5, **kwargs)) is None
    # both: a pass must meet both
    assert drive(LoadingsConvergence(elbo_tol=1e-4, elbo_rtol=1e-5, **kwargs)) is None
    with pytest.raises(ValueError, match="elbo_rtol"):
        LoadingsConvergence(elbo_rtol=-1.0)


def test_cavi_rule_reads_the_loadings_not_the_factor_scales():
    """Coordinate ascent's default rule: loadings that stopped moving end the fit even while
    a factor's scale drifts by 8% per pass and the ELBO still gains 1e-3 per pass; the
    same rule with the scales' part (the gradient engine's) does not stop."""

    from spexlvm.train._run import CAVI_ELBO_TOL, stopping_rule

    def cavi_rule(**changes):
        rule = stopping_rule("cavi")
        for name, value in changes.items():
            setattr(rule, name, value)
        return rule

    w = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    phi = [torch.tensor([0.0, 0.0, 0.0, -0.08 * t]) for t in range(20)]  # one scale drifts
    neg_elbo = [1.0 - 1e-3 * t for t in range(20)]

    def drive(rule):
        return _drive(rule, 1, [w] * 20, neg_elbo=neg_elbo, phi=phi)

    rule = cavi_rule()
    assert rule.scale_tol == np.inf and rule.elbo_tol == CAVI_ELBO_TOL
    assert drive(rule) == 4  # changes from pass 2 on: passes 2-4 settle
    assert not rule.stopped_by_elbo
    assert drive(cavi_rule(scale_tol=0.05)) is None


def test_relative_elbo_rule_does_not_depend_on_the_scale():
    """``elbo_rtol`` stops a trace at the same pass whatever the ELBO's units: the same
    trace times 100 (a fit whose prior terms weigh more per entry) stops where it did,
    where an absolute tolerance stops it much later."""
    from types import SimpleNamespace

    from spexlvm.train import LoadingsConvergence

    trace = np.concatenate([[2.0, 0.8, 0.55, 0.505], 0.5 - 1e-4 * np.arange(1, 40) ** 0.5])

    def stop(values, **kw):
        rule = LoadingsConvergence(patience=3, min_epochs=3, **kw)
        for epoch, value in enumerate(values, start=1):
            rule._elbo_step(SimpleNamespace(pass_neg_elbo=float(value)))
            if rule._elbo_settled >= 3 and epoch >= 3:
                return epoch
        return None

    relative = stop(trace, elbo_rtol=2e-4)
    assert relative is not None
    assert stop(100 * trace, elbo_rtol=2e-4) == relative
    absolute = stop(trace, elbo_tol=3e-5)
    assert absolute is not None
    assert stop(100 * trace, elbo_tol=3e-5) is None  # the gains are 100x larger


def test_convergence_rule_ignores_jitter_but_not_drift():
    from spexlvm._trainingplan import LoadingsConvergence

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(200, 5, generator=gen)
    # settled loadings with 3% step-to-step jitter (minibatch noise): the average settles
    jitter = [base + 0.03 * torch.randn(200, 5, generator=gen) for _ in range(400)]
    rule = LoadingsConvergence(tol=0.02, window=5, patience=3, min_epochs=10)
    stopped = _drive(rule, 2, jitter)
    assert stopped is not None and stopped <= 20, stopped
    # with no smoothing the same jitter never counts as settled
    raw = LoadingsConvergence(tol=0.02, window=5, patience=3, min_epochs=10, smoothing=0.0)
    assert _drive(raw, 2, jitter) is None
    # a steady drift of 1% per step is not settled, however smooth
    drift = [base * (1.0 + 0.01 * t) for t in range(400)]
    assert _drive(LoadingsConvergence(tol=0.02, window=5), 2, drift) is None
    with pytest.raises(ValueError, match="smoothing"):
        LoadingsConvergence(smoothing=1.0)


def test_convergence_rule_waits_for_a_small_factor_that_still_moves():
    from spexlvm._trainingplan import LoadingsConvergence

    gen = torch.Generator().manual_seed(2)
    base = torch.randn(200, 5, generator=gen)
    base[:, 4] *= 0.2  # a small factor: 4% of the largest one's variance
    drifting = []
    for t in range(400):
        w = base.clone()
        w[:, 4] = base[:, 4] * (1.0 + 0.01 * t)  # grows 1% of its size per step
        drifting.append(w)
    # over all factors the drift is < 1% per window: a global rule would stop
    total = torch.linalg.norm(drifting[10] - drifting[0]) / torch.linalg.norm(drifting[10])
    assert total < 0.02
    assert _drive(LoadingsConvergence(tol=0.02, window=5), 2, drifting) is None
    # a factor far below the floor (0.1% of the largest's size) moving counts on the fit's
    # scale: it does not hold up the stop
    tiny = base.clone()
    tiny[:, 4] *= 0.005
    noisy = [tiny.clone() for _ in range(400)]
    for t, w in enumerate(noisy):
        w[:, 4] = tiny[:, 4] * (1.0 + 0.01 * t)
    assert _drive(LoadingsConvergence(tol=0.02, window=5), 2, noisy) is not None


def test_convergence_rule_state_round_trip():
    from spexlvm._trainingplan import LoadingsConvergence

    gen = torch.Generator().manual_seed(1)
    base = torch.randn(50, 3, generator=gen)
    steps = [base + 0.03 * torch.randn(50, 3, generator=gen) for _ in range(300)]
    whole = LoadingsConvergence(window=5)
    expected = _drive(whole, 2, steps)
    first = LoadingsConvergence(window=5)
    assert _drive(first, 2, steps[:16]) is None
    resumed = LoadingsConvergence(window=5)
    resumed.load_state_dict(first.state_dict())
    # continue from epoch 8: the resumed rule stops at the same epoch as the whole run
    stop = _drive(resumed, 2, steps[16:], start=16)
    assert stop == expected
    assert resumed.history == whole.history[: len(resumed.history)]
