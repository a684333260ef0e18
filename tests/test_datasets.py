from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spexlvm
from spexlvm.datasets import f1_score, mesc, pbmc68k_reduced, synthetic

N, G, K = 300, 200, 8


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return synthetic(N, G, K, noise=0.2, extra=0.25, seed=1)


def test_exported():
    assert spexlvm.datasets.synthetic is synthetic
    assert {"synthetic", "f1_score", "mesc", "pbmc68k_reduced"} <= set(spexlvm.datasets.__all__)


def test_synthetic_shapes_dtypes(sim):
    n_extra = round(0.25 * K)
    assert sim.shape == (N, G)
    assert sim.X.dtype == np.float32
    assert not np.isnan(sim.X).any()
    assert "complete" not in sim.layers
    assert list(sim.obs_names[:2]) == ["cell_0", "cell_1"]
    assert list(sim.var_names[:2]) == ["gene_0", "gene_1"]
    assert sim.obsm["X_true"].shape == (N, K)
    assert sim.obsm["X_true"].dtype == np.float32
    assert sim.varm["W_true"].shape == (G, K)
    assert sim.varm["W_true"].dtype == np.float32
    for key in ("spexlvm_mask", "mask_true", "false_positives", "false_negatives"):
        assert sim.varm[key].shape == (G, K + n_extra)
        assert sim.varm[key].dtype == bool
    uns = sim.uns["spexlvm_mask"]
    names = [f"factor_{k + 1}" for k in range(K)] + [f"extra_{e + 1}" for e in range(n_extra)]
    assert list(uns["names"]) == names
    np.testing.assert_array_equal(uns["n_genes"], sim.varm["spexlvm_mask"].sum(0))
    np.testing.assert_array_equal(uns["n_found"], uns["n_genes"])
    settings = sim.uns["synthetic"]
    assert settings["n_extra"] == n_extra
    assert settings["seed"] == 1
    assert all(isinstance(v, int | float | str) for v in settings.values())


def test_synthetic_truth_consistent(sim):
    w = sim.varm["W_true"]
    mask_true = sim.varm["mask_true"]
    np.testing.assert_array_equal(mask_true[:, :K], w != 0)
    assert not mask_true[:, K:].any()
    # thresholded: every non-zero loading is at least 0.5 in absolute value
    assert np.all(np.abs(w[w != 0]) >= 0.5)
    active = mask_true[:, :K].sum(0)
    assert active.min() >= 5
    assert active.max() <= 0.15 * G + 5
    # the data follow the model: residual std about 1
    resid = sim.X - sim.obsm["X_true"] @ w.T
    assert abs(resid.std() - 1.0) < 0.05


def test_synthetic_noise_counts(sim):
    mask_true = sim.varm["mask_true"]
    mask = sim.varm["spexlvm_mask"]
    fp, fn = sim.varm["false_positives"], sim.varm["false_negatives"]
    np.testing.assert_array_equal(mask, (mask_true & ~fn) | fp)
    assert not (fp & mask_true).any()
    assert not (fn & ~mask_true).any()
    for k in range(K):
        n_flip = round(0.2 * mask_true[:, k].sum())
        assert fp[:, k].sum() == n_flip
        assert fn[:, k].sum() == n_flip
        assert mask[:, k].sum() == mask_true[:, k].sum()
    # extra sets: random genes, sizes taken from the true sets, all false positives
    sizes = set(mask_true[:, :K].sum(0).tolist())
    assert not fn[:, K:].any()
    np.testing.assert_array_equal(fp[:, K:], mask[:, K:])
    assert set(mask[:, K:].sum(0).tolist()) <= sizes


def test_synthetic_no_noise():
    adata = synthetic(100, 80, 4, noise=0.0)
    np.testing.assert_array_equal(adata.varm["spexlvm_mask"], adata.varm["mask_true"])
    assert adata.varm["spexlvm_mask"].shape == (80, 4)


def test_synthetic_seed():
    a = synthetic(100, 80, 4, seed=3)
    b = synthetic(100, 80, 4, seed=3)
    c = synthetic(100, 80, 4, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.varm["spexlvm_mask"], b.varm["spexlvm_mask"])
    np.testing.assert_array_equal(a.varm["W_true"], b.varm["W_true"])
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.varm["mask_true"], c.varm["mask_true"])
    # the data do not depend on the annotation settings
    d = synthetic(100, 80, 4, seed=3, noise=0.5, extra=0.5, missing=0.1)
    np.testing.assert_array_equal(d.layers["complete"], a.X)
    np.testing.assert_array_equal(d.varm["mask_true"][:, :4], a.varm["mask_true"])


def test_synthetic_missing():
    adata = synthetic(200, 100, 4, missing=0.2)
    nan = np.isnan(adata.X)
    assert nan.mean() == pytest.approx(0.2, abs=0.005)
    complete = adata.layers["complete"]
    assert complete.dtype == np.float32
    assert not np.isnan(complete).any()
    np.testing.assert_array_equal(adata.X[~nan], complete[~nan])


def test_synthetic_dense_effect():
    """A planted dense effect adds ``t v^T`` on top of the same data, truth and annotation."""
    base = synthetic(300, 100, 4, seed=2, extra=0.5, missing=0.1)
    d = synthetic(300, 100, 4, seed=2, extra=0.5, missing=0.1, dense=1.0, dense_correlation=0.6)
    t, v = d.obsm["X_dense_true"][:, 0], d.var["w_dense_true"].to_numpy()
    expected = base.layers["complete"] + np.outer(t, v)
    np.testing.assert_allclose(d.layers["complete"], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(d.X), np.isnan(base.X))
    for key in ("spexlvm_mask", "W_true", "mask_true"):
        np.testing.assert_array_equal(d.varm[key], base.varm[key])
    assert (v != 0).mean() == pytest.approx(0.9, abs=0.01)
    assert np.corrcoef(t, d.obsm["X_true"][:, 0])[0, 1] == pytest.approx(0.6, abs=0.1)
    assert "X_dense_true" not in base.obsm


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise": -0.1},
        {"noise": 1.5},
        {"extra": -1.0},
        {"missing": 1.0},
        {"residual_std": -1},
        {"dense": -1.0},
        {"dense_fraction": 0.0},
        {"dense_correlation": 1.0},
    ],
)
def test_synthetic_bad_args(kwargs):
    with pytest.raises(ValueError):
        synthetic(10, 10, 2, **kwargs)


def test_synthetic_bad_sizes():
    with pytest.raises(ValueError):
        synthetic(0, 10, 2)


def test_synthetic_h5ad_roundtrip(tmp_path):
    adata = synthetic(120, 90, 5, noise=0.2, extra=0.4, missing=0.05)
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    assert back.X.dtype == np.float32
    np.testing.assert_array_equal(back.layers["complete"], adata.layers["complete"])
    for key, val in adata.varm.items():
        np.testing.assert_array_equal(back.varm[key], val)
        assert back.varm[key].dtype == val.dtype
    np.testing.assert_array_equal(back.obsm["X_true"], adata.obsm["X_true"])
    for key, val in adata.uns["spexlvm_mask"].items():
        np.testing.assert_array_equal(back.uns["spexlvm_mask"][key], val)
    assert back.uns["synthetic"] == adata.uns["synthetic"]
    assert list(back.obs_names) == list(adata.obs_names)
    assert list(back.var_names) == list(adata.var_names)


def test_f1_true_loadings(sim):
    w = sim.varm["W_true"]
    assert f1_score(sim.varm["mask_true"][:, :K], w, threshold=0.0) == 1.0
    assert f1_score(sim.varm["mask_true"][:, :K], w, threshold=0.0, relative=False) == 1.0
    # the noisy annotation scored as if it were loadings: 20% flipped both ways
    noisy = sim.varm["spexlvm_mask"][:, :K].astype(float)
    n_active = sim.varm["mask_true"][:, :K].sum(0)
    n_flip = sum(round(0.2 * n) for n in n_active)
    # TP = n_active - n_flip, FP = FN = n_flip -> F1 = 1 - n_flip / n_active
    expected = 1 - n_flip / n_active.sum()
    assert f1_score(sim.varm["mask_true"][:, :K], noisy) == pytest.approx(expected)


def test_f1_hand_example():
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    w = np.array([[2.0, 0.0], [0.1, -5.0], [0.0, 0.4], [-1.0, 0.6]])
    # relative 0.1: col 0 cutoff 0.2 -> active rows 0, 3; col 1 cutoff 0.5 -> rows 1, 3
    # TP = 2 (row 0 col 0, row 1 col 1), FP = 2 (row 3 both), FN = 2 (row 1 col 0, row 2 col 1)
    assert f1_score(truth, w) == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    # absolute 0.05: active everywhere |w| > 0.05 -> col 0 rows 0, 1, 3; col 1 rows 1, 2, 3
    # TP = 4, FP = 2, FN = 0
    assert f1_score(truth, w, threshold=0.05, relative=False) == pytest.approx(8 / 10)
    assert f1_score(truth, w[:, ::-1]) != f1_score(truth, w)
    assert f1_score(np.zeros((3, 1), bool), np.zeros((3, 1))) == 1.0
    with pytest.raises(ValueError):
        f1_score(truth, w[:, :1])


def test_mesc():
    adata = mesc()
    assert adata.shape == (182, 6635)
    assert adata.X.dtype == np.float32
    assert isinstance(adata.obs["stage"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["stage"].cat.categories) == ["G1", "S", "G2M"]
    assert adata.obs["stage"].value_counts().to_dict() == {"G1": 59, "S": 58, "G2M": 65}
    assert adata.obs_names.is_unique
    assert adata.var_names.is_unique
    assert list(adata.var_names[:3]) == ["Gnai3", "Cdc45", "H19"]
    assert adata.X.min() >= 0
    assert adata.X.max() < 6  # log scale
    assert not np.isnan(adata.X).any()


def test_pbmc68k_reduced():
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    adata = pbmc68k_reduced()
    assert adata.n_obs == 700
    assert adata.n_vars == src.raw.n_vars
    assert list(adata.var_names) == list(src.raw.var_names)
    assert adata.X.dtype == np.float32
    assert isinstance(adata.X, np.ndarray)
    np.testing.assert_array_equal(adata.X, src.raw.X.toarray())
    # log-normalised: non-negative, log1p scale, not counts
    assert adata.X.min() >= 0
    assert adata.X.max() < 10
    assert not np.allclose(adata.X, np.round(adata.X))
    assert "bulk_labels" in adata.obs
    assert adata.obsm["X_umap"].shape == (700, 2)
    assert "PCs" not in adata.varm
    assert "pca" not in adata.uns
    assert "rank_genes_groups" not in adata.uns
