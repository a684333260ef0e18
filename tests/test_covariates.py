"""Known covariates (``batch_key``, categorical and continuous covariates) as fixed effects:
a planted batch effect, projection, save/load, streamed and minibatch fits, clear errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _compare import assert_close_to_scale

import spexlvm
from spexlvm import SpexLVM
from spexlvm.datasets import f1_score, synthetic

#: A small problem with a strong batch effect (2 batches, per-gene shifts of sd 3).
N, G, K = 300, 200, 5
DATA = {"noise": 0.2, "extra": 0.2, "seed": 1}
BATCH = {"n_batches": 2, "batch_effect": 3.0}
FIT = {"seed": 0, "enable_progress_bar": False}


def _recovery(adata) -> tuple[float, float]:
    """F1 of the annotated loadings and the smallest |corr| of a factor with its truth."""
    f1 = f1_score(adata.varm["mask_true"][:, :K], adata.varm["spexlvm_loadings"][:, :K])
    scores, truth = adata.obsm["X_spexlvm"], adata.obsm["X_true"]
    corr = [abs(np.corrcoef(scores[:, k], truth[:, k])[0, 1]) for k in range(K)]
    return f1, float(min(corr))


def _shift_recovery(adata, effects: pd.DataFrame) -> float:
    """Correlation of the fitted batch_2 - batch_1 shift with the planted one."""
    shift = adata.varm["batch_shift_true"]
    return float(np.corrcoef(effects["batch[batch_2]"], shift[:, 1] - shift[:, 0])[0, 1])


@pytest.fixture(scope="module")
def batch_fit():
    adata = synthetic(N, G, K, **DATA, **BATCH)
    model = spexlvm.tl.fit(adata, batch_key="batch", **FIT)
    return adata, model


def test_planted_batch_effect(batch_fit):
    """With ``batch_key`` the pathway factors are those of the batch-free data; without it
    (and without a dense factor) the annotated factors absorb the batch and get worse."""
    clean = synthetic(N, G, K, **DATA)  # the same data without the batch shifts
    spexlvm.tl.fit(clean, **FIT)
    f1_clean, corr_clean = _recovery(clean)
    adata, model = batch_fit
    f1_cov, corr_cov = _recovery(adata)
    assert f1_cov >= f1_clean - 0.02 and corr_cov >= corr_clean - 0.02
    assert f1_cov > 0.95 and corr_cov > 0.95
    ignored = synthetic(N, G, K, **DATA, **BATCH)
    spexlvm.tl.fit(ignored, **FIT)
    f1_ignored, corr_ignored = _recovery(ignored)
    # measured: F1 0.58 and score correlation 0.56 with coordinate ascent (the default)
    assert f1_ignored < f1_cov - 0.2 and corr_ignored < corr_cov - 0.3
    # the batch effect is recovered and reported next to the factors
    assert _shift_recovery(adata, model.get_covariate_effects()) > 0.98
    uns = adata.uns["spexlvm"]
    assert set(uns["r2_covariates"]) == {"batch"} and uns["r2_covariates"]["batch"] > 0.4
    assert list(uns["covariate_names"]) == ["batch[batch_2]"]
    assert adata.varm["spexlvm_covariate_effects"].shape == (G, 1)
    # total R2 counts the covariates; the factors' own total is on what they leave
    assert uns["r2_total"] > uns["r2_covariates"]["batch"]
    assert 0 < uns["r2_factors_total"] < 1
    assert uns["params"]["batch_key"] == "batch"


def test_tl_variance_explained_matches_get_r2_with_covariates(batch_fit):
    """``tl.variance_explained`` (from the AnnData alone) gives ``get_r2``'s numbers, the
    total with the covariates' effects included."""
    adata, model = batch_fit
    df = spexlvm.tl.variance_explained(adata.copy())
    r2 = model.get_r2()
    np.testing.assert_allclose(df.loc[r2.index, "r2"], r2.to_numpy(), atol=1e-5)
    assert df.attrs["total"] == pytest.approx(r2.attrs["total"], abs=1e-5)
    assert df.attrs["total"] == pytest.approx(adata.uns["spexlvm"]["r2_total"], abs=1e-5)


def test_covariate_effects_units_and_names(batch_fit):
    adata, model = batch_fit
    effects = model.get_covariate_effects()
    assert effects.index.equals(adata.var_names)
    shift = adata.varm["batch_shift_true"]
    # input units: the fitted shift has the planted one's size (regression slope ~ 1)
    slope = np.polyfit(shift[:, 1] - shift[:, 0], effects["batch[batch_2]"], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.05)


def test_project_cells_with_covariates(batch_fit):
    """Projected cells use their own covariates: the training cells' scores come back."""
    adata, model = batch_fit
    idx = np.arange(0, N, 3)
    sub = ad.AnnData(adata.X[idx].copy(), obs=adata.obs.iloc[idx][["batch"]].copy())
    sub.var_names = adata.var_names
    projected = model.get_factors(sub, batch_size=17)
    np.testing.assert_allclose(
        projected.to_numpy(), adata.obsm["X_spexlvm"][idx], rtol=1e-4, atol=1e-4
    )
    # only cells of one batch: the codes follow the training categories
    one = sub[sub.obs["batch"] == "batch_2"].copy()
    one.obs["batch"] = one.obs["batch"].astype(str)
    np.testing.assert_allclose(
        model.get_factors(one).to_numpy(),
        adata.obsm["X_spexlvm"][idx][(sub.obs["batch"] == "batch_2").to_numpy()],
        rtol=1e-4,
        atol=1e-4,
    )


def test_project_new_category_or_missing_column_is_a_clear_error(batch_fit):
    adata, model = batch_fit
    sub = ad.AnnData(adata.X[:20].copy(), obs=adata.obs.iloc[:20][["batch"]].copy())
    sub.var_names = adata.var_names
    sub.obs["batch"] = sub.obs["batch"].astype(str)
    sub.obs.loc[sub.obs_names[:3], "batch"] = "batch_9"
    with pytest.raises(ValueError, match=r"categories the model was not trained with.*batch_9"):
        model.get_factors(sub)
    bare = ad.AnnData(adata.X[:20].copy())
    bare.var_names = adata.var_names
    with pytest.raises(KeyError, match=r"\['batch'\] not in adata.obs"):
        model.get_factors(bare)


def test_save_load_round_trip_with_covariates(batch_fit, tmp_path):
    adata, model = batch_fit
    model.save(str(tmp_path / "m"))
    loaded = SpexLVM.load(str(tmp_path / "m"), adata=adata.copy())
    np.testing.assert_array_equal(loaded.get_factors().to_numpy(), model.get_factors().to_numpy())
    pd.testing.assert_frame_equal(loaded.get_covariate_effects(), model.get_covariate_effects())
    ra, rb = model.get_r2(), loaded.get_r2()
    np.testing.assert_array_equal(ra.to_numpy(), rb.to_numpy())
    assert ra.attrs["covariates"] == rb.attrs["covariates"]
    np.testing.assert_array_equal(loaded.covariate_names_, model.covariate_names_)
    # loaded onto other cells (only their X and batch): their own covariates are used
    sub = ad.AnnData(adata.X[50:90].copy(), obs=adata.obs.iloc[50:90][["batch"]].copy())
    sub.var_names = adata.var_names
    on_sub = SpexLVM.load(str(tmp_path / "m"), adata=sub)
    np.testing.assert_allclose(
        on_sub.get_factors().to_numpy(), adata.obsm["X_spexlvm"][50:90], rtol=1e-4, atol=1e-4
    )
    other = sub.copy()
    other.obs["batch"] = "batch_7"
    with pytest.raises(ValueError, match="not trained with"):
        on_sub.get_factors(other)


def test_h5ad_round_trip_with_covariates(batch_fit, tmp_path, nested_equal):
    adata, _ = batch_fit
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    nested_equal(adata.uns["spexlvm"], back.uns["spexlvm"])


def test_categorical_and_continuous_covariates():
    """A donor (categorical, 3 levels) and a continuous covariate (library size), planted
    as effects on every gene, are recovered; the factors stay those of the clean data."""
    rng = np.random.default_rng(7)
    adata = synthetic(N, G, K, **DATA)
    donor = rng.integers(0, 3, N)
    library = rng.normal(8.0, 0.5, N)
    donor_shift = rng.normal(0.0, 2.0, (G, 3))
    per_unit = rng.normal(0.0, 2.0, G)
    adata.X = adata.X + donor_shift.T[donor] + np.outer(library - 8.0, per_unit)
    adata.X = adata.X.astype(np.float32)
    adata.obs["donor"] = pd.Categorical([f"d{d}" for d in donor])
    adata.obs["log_library"] = library
    spexlvm.tl.fit(
        adata,
        categorical_covariate_keys=["donor"],
        continuous_covariate_keys=["log_library"],
        **FIT,
    )
    f1, corr = _recovery(adata)
    assert f1 > 0.95 and corr > 0.95
    uns = adata.uns["spexlvm"]
    assert list(uns["covariate_names"]) == ["donor[d1]", "donor[d2]", "log_library"]
    assert set(uns["r2_covariates"]) == {"donor", "log_library"}
    effects = adata.varm["spexlvm_covariate_effects"]
    assert np.corrcoef(effects[:, 2], per_unit)[0, 1] > 0.98
    # per unit of the covariate, in input units
    assert np.polyfit(per_unit, effects[:, 2], 1)[0] == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(effects[:, 0], donor_shift[:, 1] - donor_shift[:, 0])[0, 1] > 0.98


def test_minibatch_and_backed_fit_carry_covariates(tmp_path):
    """Streamed minibatches (backed h5ad, blocks of cells) carry each cell's batch: the
    batch effect and the factors are recovered as in memory."""
    adata = synthetic(N, G, K, **DATA, **BATCH)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    model = spexlvm.tl.fit(
        backed, batch_key="batch", batch_size=100, block_size=4, max_epochs=60, **FIT
    )
    assert backed.isbacked
    f1, corr = _recovery(backed)
    assert f1 > 0.95 and corr > 0.9
    assert _shift_recovery(backed, model.get_covariate_effects()) > 0.98


def test_setup_errors(small_adata):
    with pytest.raises(KeyError, match=r"\['donor'\] not in adata.obs"):
        SpexLVM.setup_anndata(small_adata, batch_key="donor")
    small_adata.obs["b"] = pd.Categorical(["x", None] * (small_adata.n_obs // 2))
    with pytest.raises(ValueError, match=r"obs\['b'\] has 150 missing value"):
        SpexLVM.setup_anndata(small_adata, batch_key="b")
    small_adata.obs["lib"] = np.where(np.arange(small_adata.n_obs) == 3, np.nan, 1.0)
    with pytest.raises(ValueError, match=r"obs\['lib'\] holds NaN"):
        SpexLVM.setup_anndata(small_adata, continuous_covariate_keys=["lib"])
    small_adata.obs["name"] = "a"
    with pytest.raises(TypeError, match="not numeric"):
        SpexLVM.setup_anndata(small_adata, continuous_covariate_keys="name")
    small_adata.obs["one"] = pd.Categorical(["x"] * small_adata.n_obs)
    SpexLVM.setup_anndata(small_adata, batch_key="one")
    with pytest.warns(UserWarning, match=r"\['one'\] have a single category"):
        model = SpexLVM(small_adata)
    assert model.module.n_covariates == 0
    small_adata.obs["const"] = 2.0
    SpexLVM.setup_anndata(small_adata, continuous_covariate_keys="const")
    with pytest.raises(ValueError, match="constant over the cells"):
        SpexLVM(small_adata)


def test_no_covariates_no_new_state(small_adata):
    """Without covariates the module has no covariate parameters (the saved state and the
    ELBO are those of a model without the feature)."""
    SpexLVM.setup_anndata(small_adata)
    model = SpexLVM(small_adata)
    assert model.module.n_covariates == 0
    assert not any(k.startswith("cov_") for k in model.module.state_dict())
    assert "_scvi_batch" not in small_adata.obs
    assert model.get_covariate_effects().shape == (small_adata.n_vars, 0)


def _ddp_model():
    import scvi

    adata = synthetic(400, 150, 4, noise=0.2, seed=4, n_batches=3, batch_effect=2.0)
    scvi.settings.seed = 0
    SpexLVM.setup_anndata(adata, batch_key="batch")
    return adata, SpexLVM(adata)


def test_ddp_processes_carry_covariates():
    """Two forked CPU processes, each with its share of every step and of its cells'
    batches: the same loadings and covariate effects as one process."""
    train = {"batch_size": 100, "max_epochs": 15, "enable_progress_bar": False}
    _, forked = _ddp_model()
    forked.train(**train, strategy="ddp_notebook", devices=2, accelerator="cpu")
    adata, single = _ddp_model()
    single.train(**train)
    # across processes: a tolerance relative to the scale (tests/_compare.py)
    assert_close_to_scale(forked.get_loadings(), single.get_loadings(), rel=1e-3, what="loadings")
    assert_close_to_scale(
        forked.get_covariate_effects(),
        single.get_covariate_effects(),
        rel=1e-3,
        what="covariate effects",
    )
    effects = single.get_covariate_effects()
    shift = adata.varm["batch_shift_true"]
    assert np.corrcoef(effects["batch[batch_3]"], shift[:, 2] - shift[:, 0])[0, 1] > 0.98


def test_checkpoint_of_other_covariates_is_refused(tmp_path):
    adata = synthetic(N, G, K, **DATA, **BATCH)
    fast = {**FIT, "max_epochs": 3, "checkpoint_dir": tmp_path, "checkpoint_interval": 0}
    spexlvm.tl.fit(adata, batch_key="batch", **fast)
    with pytest.raises(ValueError, match=r"different fit \(.*known covariates"):
        spexlvm.tl.fit(synthetic(N, G, K, **DATA, **BATCH), **fast)


def test_missing_values_and_impute_with_covariates():
    """Missing values stay masked with covariates; imputation adds the batch shifts back."""
    adata = synthetic(N, G, K, **DATA, **BATCH, missing=0.05)
    spexlvm.tl.fit(adata, batch_key="batch", **FIT)
    f1, corr = _recovery(adata)
    assert f1 > 0.95 and corr > 0.95
    spexlvm.tl.impute(adata)
    missing = np.isnan(adata.X)
    truth = adata.layers["complete"][missing]
    error = adata.layers["spexlvm_imputed"][missing] - truth
    # the residual noise has sd 1; the batch shifts alone (sd 3) would be far larger
    assert np.sqrt(np.mean(error**2)) < 1.3
    shift = adata.varm["batch_shift_true"]
    assert np.std(shift[:, 1] - shift[:, 0]) > 3.0


def test_variance_explained_plot_shows_covariates(batch_fit):
    import matplotlib

    matplotlib.use("Agg")
    adata, _ = batch_fit
    ax = spexlvm.pl.variance_explained(adata, n_top=3, show=False)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "batch (covariate)" in labels and len(labels) == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "known covariate (fixed effect)" in legend


def test_score_prior_correlation_is_taken_after_the_covariates():
    """The ``"data"`` basis of the scores' prior correlates the sets' mean expression after
    the known covariates: a strong batch shift makes the independent sets' means
    correlated; with ``batch_key`` their prior correlation is that of the batch-free data."""

    def prior_corr(adata, **setup):
        SpexLVM.setup_anndata(adata, **setup)
        model = SpexLVM(adata, score_overlap=0.5, learn_score_overlap=False)
        a = len(model.gene_set_names_)
        cov = model.module.score_prior_cov().double().numpy()[:a, :a]
        return (cov - 0.5 * np.eye(a)) / 0.5

    clean = prior_corr(synthetic(N, G, K, **DATA))
    with_key = prior_corr(synthetic(N, G, K, **DATA, **BATCH), batch_key="batch")
    ignored = prior_corr(synthetic(N, G, K, **DATA, **BATCH))
    off = ~np.eye(len(clean), dtype=bool)
    assert np.abs(with_key - clean)[off].max() < 0.1
    assert np.abs(ignored - clean)[off].max() > 0.3
