"""Bad input gets a clear answer; nothing the user gave is lost; results are reproducible."""

from __future__ import annotations

import shutil
import warnings

import anndata as ad
import numpy as np
import pytest
import torch
from scipy import sparse

import spexlvm
from spexlvm import SpexLVM
from spexlvm.datasets import synthetic

FAST = {"max_epochs": 5, "enable_progress_bar": False}


@pytest.fixture
def adata():
    return synthetic(200, 120, 3, noise=0.2, seed=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small trained model saved to disk, with its AnnData."""
    data = synthetic(200, 120, 3, noise=0.2, seed=3)
    model = spexlvm.tl.fit(data, **FAST)
    path = tmp_path_factory.mktemp("model") / "model"
    model.save(str(path))
    return data, model, path


# --------------------------------------------------------------------------- values
def test_nan_is_masked_and_outputs_finite(adata):
    adata.X[np.random.default_rng(0).random(adata.shape) < 0.05] = np.nan
    spexlvm.tl.fit(adata, **FAST)
    assert np.isfinite(adata.obsm["X_spexlvm"]).all()
    assert np.isfinite(adata.varm["spexlvm_loadings"]).all()


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_inf_is_an_error(adata, value):
    adata.X[3, 4] = value
    with pytest.raises(ValueError, match=r"\+/-inf values.*Replace them"):
        spexlvm.tl.fit(adata, **FAST)


def test_raw_counts_warn(adata):
    adata.X = np.round(np.abs(adata.X) * 10).astype(np.int64)
    with pytest.warns(UserWarning, match=r"raw counts.*sc\.pp\.normalize_total.*log1p"):
        spexlvm.tl.fit(adata, **FAST)
    assert np.isfinite(adata.obsm["X_spexlvm"]).all()


def test_scaled_data_warn(adata):
    x = adata.X - adata.X.mean(0)
    adata.X = (x / x.std(0)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"looks scaled.*adata\.raw"):
        spexlvm.tl.fit(adata, **FAST)


def test_all_nan_is_an_error(adata):
    adata.X[:] = np.nan
    with pytest.raises(ValueError, match="no finite value"):
        spexlvm.tl.fit(adata, **FAST)


def test_zero_variance_and_all_nan_genes(adata):
    adata.X[:, 0] = 1.5
    adata.X[:, 1] = np.nan
    spexlvm.tl.fit(adata, **FAST)
    assert np.isfinite(adata.obsm["X_spexlvm"]).all()
    assert np.isfinite(adata.varm["spexlvm_loadings"]).all()


# --------------------------------------------------------------------------- input types
@pytest.mark.parametrize("kind", ["csr", "csc", "int", "float64"])
def test_input_types(adata, kind):
    reference = adata.copy()
    if kind == "int":
        adata.X = np.round(adata.X * 1000 + 20000).astype(np.int32)  # not raw counts: large
        reference.X = adata.X.astype(np.float32)
    elif kind == "float64":
        adata.X = adata.X.astype(np.float64)
    else:
        adata.X = getattr(sparse, f"{kind}_matrix")(adata.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spexlvm.tl.fit(adata, **FAST)
        spexlvm.tl.fit(reference, **FAST)
    np.testing.assert_allclose(adata.obsm["X_spexlvm"], reference.obsm["X_spexlvm"], atol=1e-4)


def test_missing_layer(adata):
    with pytest.raises(KeyError, match=r"layer 'counts' is not in adata\.layers"):
        spexlvm.tl.fit(adata, layer="counts", **FAST)


def test_view_is_made_actual_parent_untouched(adata):
    parent = adata.copy()
    view = parent[:150]
    spexlvm.tl.fit(view, **FAST)
    assert not view.is_view
    assert view.obsm["X_spexlvm"].shape == (150, 3)
    assert "X_spexlvm" not in parent.obsm and "spexlvm" not in parent.uns


def test_view_with_copy(adata):
    view = adata[:150]
    out = spexlvm.tl.fit(view, copy=True, **FAST)
    assert view.is_view and "X_spexlvm" not in view.obsm
    assert out.obsm["X_spexlvm"].shape == (150, 3)


# --------------------------------------------------------------------------- identifiers
def test_duplicate_var_names(adata):
    adata.var_names = ["g"] * 60 + [f"x{i}" for i in range(60)]
    with pytest.raises(ValueError, match=r"var_names has duplicates.*var_names_make_unique"):
        spexlvm.tl.fit(adata, **FAST)


def test_duplicate_obs_names(adata):
    adata.obs_names = ["c"] * adata.n_obs
    with pytest.raises(ValueError, match=r"obs_names has duplicates.*obs_names_make_unique"):
        spexlvm.tl.fit(adata, **FAST)


def test_gene_sets_without_overlap(adata):
    with pytest.raises(ValueError, match=r"overlap|found"):
        spexlvm.tl.fit(adata, {"A": ["NOPE1", "NOPE2"]}, **FAST)


def test_every_set_filtered_out(adata):
    genes = list(adata.var_names[:3])
    with pytest.raises(ValueError, match=r"min_genes|filtered|bounds"):
        spexlvm.tl.fit(adata, {"A": genes}, min_genes=10, **FAST)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        ({"": ["gene_0"]}, "empty"),
    ],
)
def test_bad_gene_set_names(adata, sets, match):
    with pytest.raises(ValueError, match=match):
        spexlvm.pp.add_gene_sets(adata, sets)


def test_gene_set_names_with_slashes_survive_h5ad(adata, tmp_path):
    genes = list(adata.var_names)
    sets = {"a/b set": genes[:20], "ünïcode:set": genes[20:40]}
    spexlvm.tl.fit(adata, sets, **FAST)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert list(back.uns["spexlvm"]["factor_names"]) == ["a/b set", "ünïcode:set"]


def test_more_factors_than_genes():
    data = synthetic(100, 20, 2, seed=0)
    with pytest.raises(ValueError, match="fewer factors than genes"):
        spexlvm.tl.fit(data, n_sparse=10, n_dense=10, **FAST)


def test_fewer_cells_than_batch_size(adata):
    spexlvm.tl.fit(adata, batch_size=10_000, **FAST)
    assert adata.obsm["X_spexlvm"].shape == (200, 3)


def test_unannotated_factors_only(adata):
    del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    model = spexlvm.tl.fit(adata, n_sparse=1, n_dense=2, **FAST)
    assert model.factor_names == ["sparse_1", "dense_1", "dense_2"]


def test_mask_out_of_date_after_subsetting(adata):
    genes = list(adata.var_names)
    spexlvm.pp.add_gene_sets(adata, {"A": genes[:10], "B": genes[50:70]})
    subset = adata[:, 20:].copy()  # set A lost every gene
    with pytest.raises(ValueError, match=r"out of date.*add_gene_sets"):
        spexlvm.tl.fit(subset, **FAST)


# --------------------------------------------------------------------------- load
def test_load_with_other_genes(saved):
    data, _, path = saved
    other = data.copy()
    other.var_names = [f"other_{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match=r"genes differ from the model's.*adata\[:, genes\]"):
        SpexLVM.load(str(path), adata=other)


def test_load_with_fewer_genes(saved):
    data, _, path = saved
    with pytest.raises(ValueError, match="genes differ"):
        SpexLVM.load(str(path), adata=data[:, :100].copy())


def test_load_truncated_file(saved, tmp_path):
    _, _, path = saved
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    target = broken / "model.pt"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        SpexLVM.load(str(broken), adata=saved[0])


def test_load_garbage_file(saved, tmp_path):
    broken = tmp_path / "garbage"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        SpexLVM.load(str(broken), adata=saved[0])


def test_load_missing_directory(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="No saved model at"):
        SpexLVM.load(str(tmp_path / "nowhere"), adata=saved[0])


def test_load_newer_version(saved, tmp_path):
    data, _, path = saved
    newer = tmp_path / "newer"
    shutil.copytree(path, newer)
    state = torch.load(newer / "model.pt", weights_only=False)
    state["attr_dict"]["spexlvm_version_"] = "99.0.0"
    torch.save(state, newer / "model.pt")
    with pytest.raises(ValueError, match=r"saved by spexlvm 99\.0\.0, newer than the installed"):
        SpexLVM.load(str(newer), adata=data)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("engine", "advice"),
    [("adam", "Lower the learning rate"), ("cavi", "Lower the scales' step size")],
)
def test_divergence_is_a_clear_error(adata, engine, advice):
    with pytest.raises(FloatingPointError, match=rf"Training diverged.*{advice}"):
        spexlvm.tl.fit(adata, lr=1e9, max_epochs=20, enable_progress_bar=False, engine=engine)
    # nothing half-written
    assert "X_spexlvm" not in adata.obsm and "spexlvm" not in adata.uns


def test_same_seed_same_factors(adata):
    a, b = adata.copy(), adata.copy()
    spexlvm.tl.fit(a, seed=7, **FAST)
    spexlvm.tl.fit(b, seed=7, **FAST)
    assert np.array_equal(a.obsm["X_spexlvm"], b.obsm["X_spexlvm"])
    assert np.array_equal(a.varm["spexlvm_loadings"], b.varm["spexlvm_loadings"])
