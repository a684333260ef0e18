"""spexlvm.get: the one owner of the fit's AnnData keys, and scanpy on factors."""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import scanpy as sc
from _compare import assert_close_to_scale

import spexlvm

ROOT = Path(__file__).resolve().parents[1]
N_FACTORS = 4


@pytest.fixture(scope="module")
def fitted(run_fit):
    """400 cells, 150 genes, 4 planted factors + 1 dense; groups, a UMAP and colours.

    Module scope: tests work on ``adata.copy()`` when they write.
    """
    adata = spexlvm.datasets.synthetic(400, 150, N_FACTORS, noise=0.2, extra=0.2, seed=3)
    truth = adata.obsm["X_true"]
    adata.obs["planted"] = pd.Categorical(np.where(truth[:, 0] > 0, "high", "low"))
    third = np.digitize(truth[:, 1], np.quantile(truth[:, 1], [1 / 3, 2 / 3]))
    adata.obs["cell_type"] = pd.Categorical(np.array(["a", "b", "c"])[third])
    adata.uns["cell_type_colors"] = np.array(["#0072B2", "#E69F00", "#009E73"])
    model = run_fit(adata, n_dense=1, max_epochs=60)
    adata.obsm["X_umap"] = np.asarray(adata.obsm["X_spexlvm"][:, :2], dtype=np.float32) * 2.0
    return adata, model


# ------------------------------------------------------------------------ get.factors
def test_factors_is_an_anndata_of_the_scores(fitted):
    adata, _ = fitted
    before = set(adata.obs.columns), set(adata.uns)
    fa = spexlvm.get.factors(adata)
    names = list(adata.uns["spexlvm"]["factor_names"])
    assert fa.shape == (adata.n_obs, len(names))
    assert list(fa.var_names) == names
    np.testing.assert_array_equal(fa.X, adata.obsm["X_spexlvm"])
    pd.testing.assert_frame_equal(fa.obs, adata.obs)
    np.testing.assert_array_equal(fa.obsm["X_umap"], adata.obsm["X_umap"])
    assert list(fa.uns["cell_type_colors"]) == list(adata.uns["cell_type_colors"])
    assert "spexlvm" not in fa.uns  # only the colours
    assert list(fa.var["kind"]) == ["annotated"] * (len(names) - 1) + ["dense"]
    assert list(fa.var["short_name"]) == [spexlvm.pl.short_name(n) for n in names]
    np.testing.assert_array_equal(fa.var["r2"], adata.uns["spexlvm"]["r2"])
    assert (set(adata.obs.columns), set(adata.uns)) == before  # the input is not modified
    fa.obs["new"] = 1
    assert "new" not in adata.obs


def test_factors_by_short_name_and_position(fitted):
    adata, _ = fitted
    names = list(adata.uns["spexlvm"]["factor_names"])
    fa = spexlvm.get.factors(adata, factors=[spexlvm.pl.short_name(names[2]), -1, names[0]])
    assert list(fa.var_names) == [names[2], names[-1], names[0]]
    np.testing.assert_array_equal(fa.X[:, 1], adata.obsm["X_spexlvm"][:, -1])
    with pytest.raises(KeyError, match="not found among"):
        spexlvm.get.factors(adata, factors=["no such factor"])
    with pytest.raises(ValueError, match="factors is empty"):
        spexlvm.get.factors(adata, factors=[])


def test_scanpy_umap_colours_cells_by_a_factor(fitted):
    adata, _ = fitted
    name = str(adata.uns["spexlvm"]["factor_names"][0])
    fa = spexlvm.get.factors(adata)
    ax = sc.pl.umap(fa, color=name, show=False)
    colours = np.asarray(ax.collections[0].get_array(), dtype=np.float64)
    # scanpy draws the cells sorted by value: the same values, another order
    np.testing.assert_allclose(np.sort(colours), np.sort(adata.obsm["X_spexlvm"][:, 0]))
    # by the short name, through scanpy's gene_symbols
    ax = sc.pl.umap(fa, color=spexlvm.pl.short_name(name), gene_symbols="short_name", show=False)
    colours = np.asarray(ax.collections[0].get_array(), dtype=np.float64)
    np.testing.assert_allclose(np.sort(colours), np.sort(adata.obsm["X_spexlvm"][:, 0]))
    plt.close("all")


def test_scanpy_dotplot_of_factors_by_group(fitted):
    adata, _ = fitted
    names = [str(n) for n in adata.uns["spexlvm"]["factor_names"][:2]]
    fa = spexlvm.get.factors(adata, factors=names)
    dp = sc.pl.dotplot(fa, var_names=names, groupby="cell_type", show=False, return_fig=True)
    expected = pd.DataFrame(adata.obsm["X_spexlvm"][:, :2], columns=names)
    expected = expected.groupby(adata.obs["cell_type"].to_numpy()).mean()
    np.testing.assert_allclose(dp.dot_color_df.loc[["a", "b", "c"], names], expected, rtol=1e-5)
    plt.close("all")


def test_scanpy_rank_genes_groups_ranks_the_planted_factor(fitted):
    adata, _ = fitted
    fa = spexlvm.get.factors(adata)
    sc.tl.rank_genes_groups(fa, "planted", method="wilcoxon")
    top = {g: str(fa.uns["rank_genes_groups"]["names"][g][0]) for g in ("high", "low")}
    # obs["planted"] splits the cells by the planted factor 0: it separates them best
    # (as the top factor of the group where it scores higher)
    assert str(adata.uns["spexlvm"]["factor_names"][0]) in top.values()
    table = sc.get.rank_genes_groups_df(fa, "high")
    assert set(table["names"]) == set(fa.var_names)


def test_loadings_frame(fitted):
    adata, _ = fitted
    names = list(adata.uns["spexlvm"]["factor_names"])
    w = spexlvm.get.loadings(adata)
    assert list(w.columns) == names and list(w.index) == list(adata.var_names)
    np.testing.assert_array_equal(w.to_numpy(), np.asarray(adata.varm["spexlvm_loadings"], float))
    sd = spexlvm.get.loadings(adata, factors=[spexlvm.pl.short_name(names[1])], sd=True)
    assert list(sd.columns) == [names[1]]
    np.testing.assert_array_equal(sd.iloc[:, 0], adata.varm["spexlvm_loadings_sd"][:, 1])


def test_factors_to_obs_writes_only_the_documented_columns(fitted):
    adata, _ = fitted
    adata = adata.copy()
    names = list(adata.uns["spexlvm"]["factor_names"])
    before = set(adata.obs.columns)
    written = spexlvm.get.factors_to_obs(adata, [names[1], 0], prefix="f: ")
    assert written == [f"f: {names[1]}", f"f: {names[0]}"]
    assert set(adata.obs.columns) - before == set(written)
    np.testing.assert_array_equal(adata.obs[written[0]], adata.obsm["X_spexlvm"][:, 1])
    # scanpy colours by the obs column as cellxgene would
    ax = sc.pl.umap(adata, color=written[0], show=False)
    assert ax is not None
    plt.close("all")


# ------------------------------------------------------------------------ the model
def test_get_latent_representation_is_the_stored_scores(fitted):
    adata, model = fitted
    z = model.get_latent_representation()
    assert z.shape == adata.obsm["X_spexlvm"].shape
    assert_close_to_scale(z, adata.obsm["X_spexlvm"], rel=1e-5, what="scores")
    rows = np.array([5, 0, 17])
    np.testing.assert_array_equal(model.get_latent_representation(indices=rows), z[rows])
    np.testing.assert_array_equal(model.get_factors().to_numpy(), z)


def test_latent_samples_follow_the_score_posterior(fitted):
    adata, model = fitted
    import torch

    torch.manual_seed(0)
    draw = model.get_latent_representation(give_mean=False)
    mean = model.get_latent_representation()
    x = torch.as_tensor(np.asarray(adata.X[:1], dtype=np.float32))
    cov = model.module.score_posterior(x.to(model.module.gene_mean.device))["cov"]
    cov = cov.cpu().numpy()
    sd = np.sqrt(np.diag(cov.reshape(-1, cov.shape[-1], cov.shape[-1])[0]))
    spread = (draw - mean).std(0)
    np.testing.assert_allclose(spread, sd, rtol=0.2)  # 400 draws: sd within ~7%
    assert np.abs((draw - mean).mean(0)).max() < 0.25 * sd.max()


# ------------------------------------------------------------------------ tl.fit(copy=)
def test_fit_copy_returns_the_anndata_as_scanpy(small_data, run_fit):
    adata = small_data()
    out = run_fit(adata, max_epochs=3)
    assert isinstance(out, spexlvm.SpexLVM)  # copy=False: the model, as before
    assert "X_spexlvm" in adata.obsm
    fresh = small_data()
    out = run_fit(fresh, max_epochs=3, copy=True)
    assert isinstance(out, ad.AnnData) and out is not fresh
    assert "X_spexlvm" in out.obsm and "X_spexlvm" not in fresh.obsm
    assert run_fit(small_data(), max_epochs=3, return_model=False) is None


# ------------------------------------------------------------------------ key_added
def test_two_auroc_results_survive_and_pl_draws_each(fitted, tmp_path):
    adata, _ = fitted
    adata = adata.copy()
    by_planted = spexlvm.tl.auroc(adata, "planted", key_added="auroc_planted")
    by_type = spexlvm.tl.auroc(adata, "cell_type", key_added="auroc_type")
    default = spexlvm.tl.auroc(adata, "cell_type")
    for name, table in (
        ("auroc_planted", by_planted),
        ("auroc_type", by_type),
        ("auroc", default),
    ):
        pd.testing.assert_frame_equal(spexlvm.get.auroc(adata, result_key=name), table)
    assert spexlvm.get.auroc(adata, result_key="auroc_planted").attrs["groupby"] == "planted"
    for name, groupby, table in (
        ("auroc_planted", "planted", by_planted),
        ("auroc_type", "cell_type", by_type),
    ):
        ax = spexlvm.pl.auroc(adata, groupby, factors=[0, 1], result_key=name, show=False)
        assert "tl.auroc" in ax.get_title(loc="right")  # drawn from the stored result
        drawn = np.asarray(ax.images[0].get_array())
        names = list(adata.uns["spexlvm"]["factor_names"][:2])
        expected = table.pivot(index="factor", columns="group", values="auroc").loc[names]
        np.testing.assert_allclose(drawn, expected.to_numpy())
    plt.close("all")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(spexlvm.get.auroc(back, result_key="auroc_planted"), by_planted)


def test_key_added_keeps_each_tool_result(fitted):
    adata, _ = fitted
    adata = adata.copy()
    ve = spexlvm.tl.variance_explained(adata, groupby="planted", key_added="ve_planted")
    spexlvm.tl.variance_explained(adata)
    got = spexlvm.get.variance_explained(adata, result_key="ve_planted")
    pd.testing.assert_frame_equal(got, ve, check_names=False)
    assert "r2_high" not in spexlvm.get.variance_explained(adata)

    af = spexlvm.tl.active_factors(adata, key_added="af")
    pd.testing.assert_frame_equal(
        spexlvm.get.active_factors(adata, result_key="af"), af, check_dtype=False
    )
    with pytest.warns(UserWarning, match="without decoy"):
        gst = spexlvm.tl.gene_set_test(adata, key_added="gst")
    np.testing.assert_array_equal(
        spexlvm.get.gene_set_test(adata, result_key="gst").index, gst.index
    )
    rf = spexlvm.tl.refine(adata, key_added="rf")
    got = spexlvm.get.refine(adata, result_key="rf")
    assert list(got.columns) == list(rf.columns) and len(got) == len(rf)
    np.testing.assert_array_equal(got["gene"], rf["gene"])
    assert got.attrs["fdr"] == 0.05
    cs = spexlvm.tl.competing_sets(adata, key_added="cs")
    assert len(spexlvm.get.competing_sets(adata, result_key="cs")) == len(cs)
    assert {"ve_planted", "variance_explained", "af", "gst", "rf", "cs"} <= set(
        adata.uns["spexlvm"]
    )
    # the plot of the refinement draws the calls stored under the same key
    factors = list(rf["factor"].unique()[:3]) or [0]
    ax = spexlvm.pl.refinement(adata, factors, result_key="rf", show=False)
    added = np.asarray([p.get_width() for p in ax.containers[1]])
    expected = [int(((rf["factor"] == f) & (rf["change"] == "added")).sum()) for f in factors]
    np.testing.assert_array_equal(added, expected)
    assert "calls of tl.refine" in ax.get_legend().get_title().get_text()
    with pytest.raises(KeyError, match=r"spexlvm.tl.refine\(adata, .*key_added='nope'"):
        spexlvm.pl.refinement(adata, result_key="nope", show=False)
    ax = spexlvm.pl.auroc(adata, "planted", show=False)  # no stored auroc: computed
    assert ax is not None
    spexlvm.tl.auroc(adata, "planted", key_added="by_planted")
    with pytest.raises(ValueError, match="holds the AUROCs by 'planted', not by 'cell_type'"):
        spexlvm.pl.auroc(adata, "cell_type", result_key="by_planted", show=False)
    plt.close("all")
    with pytest.raises(KeyError, match=r"spexlvm.tl.refine\(adata, .*key_added='nope'"):
        spexlvm.get.refine(adata, result_key="nope")
    with pytest.raises(ValueError, match="would overwrite the fit's own entry"):
        spexlvm.tl.auroc(adata, "planted", key_added="r2")


def test_impute_key_added(fitted):
    adata, _ = fitted
    adata = adata.copy()
    adata.X = np.array(adata.X, dtype=np.float32)
    adata.X[0, :3] = np.nan
    spexlvm.tl.impute(adata, key_added="imp")
    table = spexlvm.get.impute(adata, result_key="imp")
    assert table["n_missing"].sum() == 3 and table.attrs["layer_added"] == "spexlvm_imputed"
    assert "spexlvm_imputed" in adata.layers


# ------------------------------------------------------------------------ one owner
def test_tl_and_pl_readers_are_get(fitted):
    adata, _ = fitted
    from spexlvm.get import _results
    from spexlvm.pl import _utils as pl_utils
    from spexlvm.tl import _utils as tl_utils

    assert tl_utils.get_results is _results.results
    assert tl_utils.get_scores is _results.scores
    assert tl_utils.frame_to_uns is _results.frame_to_uns
    np.testing.assert_array_equal(pl_utils.get_mask(adata), spexlvm.get.fit_mask(adata))
    np.testing.assert_array_equal(pl_utils.get_loadings(adata), tl_utils.get_loadings(adata))
    assert pl_utils.factor_names(adata) == spexlvm.get.factor_names(adata)
    assert spexlvm.tl.write_results.__module__ == "spexlvm.get._write"
    # pp.get_mask reads a mask by its own key and returns the set names too
    mask, names = spexlvm.pp.get_mask(adata)
    assert mask.shape == spexlvm.get.fit_mask(adata).shape and len(names) == mask.shape[1]


def test_get_module_writes_nowhere_else():
    """Only spexlvm/get writes the fit's obsm / varm keys and uns[key] (tools via store)."""
    pattern = re.compile(r"\.(obsm|varm)\[[^\]]*\]\s*=|uns\[key(_added)?\]\s*=")
    offenders = []
    for path in (ROOT / "spexlvm").rglob("*.py"):
        if "get" in path.relative_to(ROOT / "spexlvm").parts[:1]:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith(">>>"):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    # pp writes the annotation (its own keys), the data module its own obsm fixture
    allowed = ("spexlvm/pp/", "spexlvm/datasets/")
    offenders = [o for o in offenders if not o.startswith(allowed)]
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------ the key table
def test_key_table_lists_what_a_fit_writes(fitted):
    adata, _ = fitted
    table = spexlvm.get.key_table()
    documented = set(zip(table["where"], table["key"], strict=True))
    written = {("obsm", k) for k in adata.obsm if "spexlvm" in k}
    written |= {("varm", k) for k in adata.varm if k.startswith("spexlvm")}
    written |= {("uns", k) for k in adata.uns if k in ("spexlvm", "spexlvm_mask")}
    written |= {("uns", f"spexlvm/{k}") for k in adata.uns["spexlvm"]}
    assert written <= documented, written - documented
    required = table[~table["optional"] & table["written_by"].str.contains("tl.fit")]
    for where, key in zip(required["where"], required["key"], strict=True):
        if where == "uns" and "/" in key:
            fit, entry = key.split("/")
            assert entry in adata.uns[fit], key
        elif where == "uns" and key.startswith("_scvi"):
            assert all(k.strip() in adata.uns for k in key.split(","))
        else:
            assert key in getattr(adata, where), key
    # the tools' entries under their default key_added
    for tool in ("auroc", "refine", "variance_explained", "active_factors", "stability"):
        assert ("uns", f"spexlvm/{tool}") in documented
    assert ("layers", "spexlvm_imputed") in documented


@pytest.mark.parametrize(("path", "written_by"), [("README.md", False), ("docs/api.md", True)])
def test_documented_key_table_is_generated(path, written_by):
    text = (ROOT / path).read_text()
    start = "<!-- key table: spexlvm.get.key_table_markdown"
    assert start in text, f"{path} has no generated key table"
    block = text.split(start, 1)[1].split("-->", 1)[1]
    block = block.split("<!-- end key table -->", 1)[0].strip() + "\n"
    assert block == spexlvm.get.key_table_markdown(written_by=written_by), (
        f"{path}'s key table is out of date: regenerate it with "
        f"spexlvm.get.key_table_markdown(written_by={written_by})"
    )


def test_projected_cells_read_like_a_fit(fitted):
    """tl.project writes through get: r2 on the new cells, and get / pl read them."""
    adata, model = fitted
    new = ad.AnnData(
        np.array(adata.X[:80], dtype=np.float32),
        obs=adata.obs.iloc[:80][["planted"]].copy(),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    scores = spexlvm.tl.project(model, new)
    assert new.uns["spexlvm"]["params"]["projected"] is True
    assert np.isfinite(new.uns["spexlvm"]["r2"]).all()
    fa = spexlvm.get.factors(new)
    np.testing.assert_array_equal(fa.X, scores.to_numpy(dtype=np.float32))
    assert_close_to_scale(
        model.get_latent_representation(new), scores.to_numpy(), rel=1e-5, what="projected"
    )
    ax = spexlvm.pl.variance_explained(new, show=False)
    heights = sorted((p.get_width() for p in ax.patches), reverse=True)
    assert heights[0] == pytest.approx(float(np.max(new.uns["spexlvm"]["r2"])), rel=1e-6)
    plt.close("all")
