"""Projected cells are first-class: every tool and plot reads them as it reads a fit."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _compare import assert_close_to_scale

import spexlvm

N_FACTORS = 4


@pytest.fixture(scope="module")
def projected(run_fit):
    """Fit on 400 cells; project 200 other cells given as a bare AnnData (X only)."""
    full = spexlvm.datasets.synthetic(600, 150, N_FACTORS, noise=0.2, extra=0.2, seed=3)
    truth = full.obsm["X_true"][:, 0]
    full.obs["group"] = pd.Categorical(np.where(truth > 0, "high", "low"))
    train = full[:400].copy()
    model = run_fit(train, n_dense=1, max_epochs=60)
    new = ad.AnnData(
        full.X[400:].copy(),
        obs=full.obs.iloc[400:][["group"]].copy(),
        var=pd.DataFrame(index=full.var_names.copy()),
    )
    scores = spexlvm.tl.project(model, new)
    return train, new, model, scores


def test_same_schema_as_the_fit(projected):
    train, new, model, scores = projected
    fit_uns, new_uns = train.uns["spexlvm"], new.uns["spexlvm"]
    assert set(new_uns) == set(fit_uns) | {"project"}
    assert set(new_uns["params"]) == set(fit_uns["params"])
    assert fit_uns["params"]["projected"] is False
    assert new_uns["params"]["projected"] is True
    assert new_uns["params"]["seed"] == fit_uns["params"]["seed"] == 0
    for name in ("factor_names", "factor_scale", "gene_mean", "n_annotated"):
        np.testing.assert_array_equal(new_uns[name], fit_uns[name], err_msg=name)
    assert new_uns["data_scale"] == fit_uns["data_scale"]
    np.testing.assert_array_equal(
        new_uns["history"]["elbo_train"], fit_uns["history"]["elbo_train"]
    )
    for key in ("spexlvm_loadings", "spexlvm_loadings_sd", "spexlvm_mask"):
        np.testing.assert_array_equal(new.varm[key], train.varm[key], err_msg=key)
    assert list(new.uns["spexlvm_mask"]["names"]) == list(train.uns["spexlvm_mask"]["names"])
    np.testing.assert_array_equal(new.obsm["X_spexlvm"], scores.to_numpy(dtype=np.float32))
    assert new_uns["project"]["n_obs"] == 200
    # r2 is measured on the projected cells (what the tools recompute from the data),
    # not copied from the fit
    r2 = spexlvm.tl.variance_explained(new)["r2"]
    assert_close_to_scale(r2.loc[model.factor_names], new_uns["r2"], rel=1e-4, what="R2")
    assert not np.array_equal(new_uns["r2"], fit_uns["r2"])
    assert new_uns["r2_total"] > 0.5


def test_tools_work_on_projected_cells(projected):
    _, new, model, _ = projected
    k = len(model.factor_names)
    assert len(spexlvm.tl.auroc(new, "group")) == 2 * k
    per_group = spexlvm.tl.variance_explained(new, "group")
    assert {"r2_high", "r2_low"} <= set(per_group.columns)
    assert len(spexlvm.tl.active_factors(new)) == k
    assert len(spexlvm.tl.gene_set_test(new)) == new.uns["spexlvm"]["n_annotated"]
    assert len(spexlvm.tl.refine(new)) > 0
    assert isinstance(spexlvm.tl.refined_gene_sets(new), dict)
    spexlvm.tl.competing_sets(new)


@pytest.mark.parametrize(
    "plot",
    [
        lambda a: spexlvm.pl.variance_explained(a, show=False),
        lambda a: spexlvm.pl.variance_explained(a, groupby="group", show=False),
        lambda a: spexlvm.pl.scatter(a, 0, 1, color="group", show=False),
        lambda a: spexlvm.pl.top_loadings(a, 0, show=False),
        lambda a: spexlvm.pl.mask_heatmap(a, show=False),
        lambda a: spexlvm.pl.refinement(a, show=False),
        lambda a: spexlvm.pl.history(a, show=False),
        lambda a: spexlvm.pl.auroc(a, "group", show=False),
    ],
    ids=[
        "variance_explained",
        "variance_explained_groupby",
        "scatter",
        "top_loadings",
        "mask_heatmap",
        "refinement",
        "history",
        "auroc",
    ],
)
def test_every_plot_on_projected_cells(projected, plot):
    _, new, _, _ = projected
    out = plot(new)
    assert out is not None  # an Axes or a Figure, drawn from the projected cells
    plt.close("all")


def test_projected_cells_survive_h5ad(projected, tmp_path, nested_equal):
    _, new, _, _ = projected
    new.write_h5ad(tmp_path / "new.h5ad")
    back = ad.read_h5ad(tmp_path / "new.h5ad")
    nested_equal(back.uns["spexlvm"], new.uns["spexlvm"])
    assert spexlvm.pl.variance_explained(back, show=False) is not None
    plt.close("all")
