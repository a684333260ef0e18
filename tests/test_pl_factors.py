"""Content checks of the factor plots through scanpy, weights, correlations, saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from anndata import AnnData
from matplotlib.collections import PathCollection
from matplotlib.text import Annotation

import spexlvm
from spexlvm.pl._utils import figure_path, gene_status

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_OBS, N_VARS, N_FACTORS = 300, 200, 5


@pytest.fixture(scope="module")
def fitted():
    adata = spexlvm.datasets.synthetic(N_OBS, N_VARS, N_FACTORS, seed=0)
    spexlvm.tl.fit(adata, n_dense=1, max_epochs=40, enable_progress_bar=False)
    true = adata.obsm["X_true"]
    adata.obs["group"] = pd.Categorical(
        np.select([true[:, 0] > 0.5, true[:, 1] > 0.5], ["A", "B"], "C")
    )
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2))
    return adata


@pytest.fixture
def adata(fitted):
    return fitted.copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def figdir(tmp_path):
    """scanpy's figdir and format pointed at a temporary folder for one test."""
    old = sc.settings.figdir, sc.settings.file_format_figs, sc.settings.plot_suffix
    sc.settings.figdir, sc.settings.file_format_figs, sc.settings.plot_suffix = (
        tmp_path,
        "png",
        "",
    )
    yield tmp_path
    sc.settings.figdir, sc.settings.file_format_figs, sc.settings.plot_suffix = old


def _png(path):
    return Path(path).is_file() and Path(path).read_bytes()[:8] == PNG_MAGIC


def _labels(ticklabels):
    return [t.get_text() for t in ticklabels]


def _fake(n_factors=12, n_groups=10, seed=0, long_names=True):
    """An AnnData with the fit's entries only (scores, names, R²): fast, any shape."""
    rng = np.random.default_rng(seed)
    n = 400
    groups = [f"cell type {j} with a long descriptive name"[: 12 + 2 * j] for j in range(n_groups)]
    labels = rng.integers(0, n_groups, n)
    scores = rng.normal(size=(n, n_factors))
    scores[np.arange(n), labels % n_factors] += 2.0  # each group marked by a factor
    names = [
        f"REACTOME_A_RATHER_LONG_PATHWAY_NAME_NUMBER_{k}" if long_names else f"F{k}"
        for k in range(n_factors)
    ]
    adata = AnnData(np.zeros((n, 3), dtype=np.float32))
    adata.obs["cell_type"] = pd.Categorical([groups[i] for i in labels], categories=groups)
    adata.obsm["X_spexlvm"] = scores
    adata.uns["spexlvm"] = {
        "factor_names": np.asarray(names),
        "r2": np.linspace(0.2, 0.01, n_factors),
    }
    return adata


# ------------------------------------------------------------------ save= as scanpy


def test_figure_path_follows_scanpy(figdir):
    assert figure_path(None, "spexlvm_x") is None
    assert figure_path(False, "spexlvm_x") is None
    assert figure_path(True, "spexlvm_x") == figdir / "spexlvm_x.png"
    assert figure_path("_mesc.png", "spexlvm_x") == figdir / "spexlvm_x_mesc.png"
    assert figure_path("_mesc.pdf", "spexlvm_x") == figdir / "spexlvm_x_mesc.pdf"
    assert figure_path("_mesc", "spexlvm_x") == figdir / "spexlvm_x_mesc.png"
    sc.settings.file_format_figs = "svg"
    assert figure_path("_mesc", "spexlvm_x") == figdir / "spexlvm_x_mesc.svg"
    assert figure_path(True, "spexlvm_x") == figdir / "spexlvm_x.svg"
    sc.settings.plot_suffix = "_v2"
    assert figure_path("_a.png", "spexlvm_x") == figdir / "spexlvm_x_a_v2.png"
    # explicit paths (a directory part or a Path) are written as given, as before
    assert figure_path("out/fig.png", "spexlvm_x") == Path("out/fig.png")
    assert figure_path("/tmp/x/fig", "spexlvm_x") == Path("/tmp/x/fig.png")
    assert figure_path(Path("fig.pdf"), "spexlvm_x") == Path("fig.pdf")
    with pytest.raises(TypeError, match="save"):
        figure_path(3, "spexlvm_x")


def test_save_suffix_writes_into_figdir_at_dpi_save(adata, figdir):
    with matplotlib.rc_context({"savefig.dpi": 50}):
        spexlvm.pl.factor_correlation(adata, save="_small.png", show=False)
    with matplotlib.rc_context({"savefig.dpi": 100}):
        spexlvm.pl.factor_correlation(adata, save="_large.png", show=False)
    small = figdir / "spexlvm_factor_correlation_small.png"
    large = figdir / "spexlvm_factor_correlation_large.png"
    assert _png(small) and _png(large)
    w_small = plt.imread(small).shape[1]
    w_large = plt.imread(large).shape[1]
    assert w_large / w_small == pytest.approx(2.0, rel=0.05)  # dpi_save is honoured
    assert not (Path.cwd() / "_small.png").exists()


# ------------------------------------------------------------------ cells x factors AnnData


def test_factors_adata(adata):
    from spexlvm.pl._factors import _factors_adata

    adata.uns["group_colors"] = np.array(["#111111", "#222222", "#333333"])
    fa = _factors_adata(adata)
    names = list(adata.uns["spexlvm"]["factor_names"])
    assert list(fa.var_names) == names
    np.testing.assert_allclose(fa.X, adata.obsm["X_spexlvm"], rtol=1e-6)
    assert list(fa.obs["group"]) == list(adata.obs["group"])
    assert "X_umap" in fa.obsm
    assert list(fa.uns["group_colors"]) == ["#111111", "#222222", "#333333"]


# ------------------------------------------------------------------ embedding


def test_embedding_colours_are_scores_with_robust_diverging_limits(adata, figdir):
    scores = adata.obsm["X_spexlvm"]
    names = list(adata.uns["spexlvm"]["factor_names"])
    axes = spexlvm.pl.embedding(
        adata, "umap", factors=["factor_2", 0], color="group", save="_t.png", show=False
    )
    assert _png(figdir / "spexlvm_embedding_t.png")
    assert [a.get_title() for a in axes] == ["group", "factor 2", "factor 1"]
    for ax, k in zip(axes[1:], [names.index("factor_2"), 0], strict=True):
        points = ax.collections[0]
        np.testing.assert_allclose(
            np.sort(np.asarray(points.get_array())), np.sort(scores[:, k]), rtol=1e-5
        )
        lim = np.percentile(np.abs(scores[:, k]), 99)
        assert points.norm.vmin == pytest.approx(-lim, rel=1e-5)
        assert points.norm.vmax == pytest.approx(lim, rel=1e-5)
        assert lim < np.abs(scores[:, k]).max()  # robust: the extreme cells saturate


def test_embedding_single_ax_and_errors(adata):
    _, ax = plt.subplots()
    out = spexlvm.pl.embedding(adata, "umap", factors="factor 3", ax=ax, show=False)
    assert out is ax
    with pytest.raises(ValueError, match="one panel"):
        spexlvm.pl.embedding(adata, "umap", factors=[0, 1], ax=ax, show=False)
    with pytest.raises(KeyError, match="X_tsne"):
        spexlvm.pl.embedding(adata, "tsne", factors=[0], show=False)
    with pytest.raises(KeyError, match="Close matches"):
        spexlvm.pl.embedding(adata, "umap", factors=["factr_1x"], show=False)


# ------------------------------------------------------------------ dotplot / matrixplot / violin


def _z(adata, idx):
    x = np.asarray(adata.obsm["X_spexlvm"], dtype=np.float64)[:, idx]
    return (x - x.mean(0)) / x.std(0)


def test_dotplot_colour_is_mean_z_size_is_fraction_on_the_side_of_the_mean(adata):
    idx = [0, 1, 2]
    dp = spexlvm.pl.dotplot(adata, "group", factors=idx, return_fig=True, show=False)
    z = pd.DataFrame(_z(adata, idx), columns=["factor 1", "factor 2", "factor 3"])
    groups = adata.obs["group"].to_numpy()
    means = z.groupby(groups).mean()
    np.testing.assert_allclose(dp.dot_color_df.loc[means.index].to_numpy(), means, atol=1e-5)
    for g in means.index:
        zg = z.to_numpy()[groups == g]
        expected = (np.sign(means.loc[g].to_numpy()) * zg > 1.0).mean(0)
        np.testing.assert_allclose(dp.dot_size_df.loc[g].to_numpy(), expected)
    # diverging, centred at 0, symmetric
    assert dp.vboundnorm.vcenter == 0.0
    assert dp.vboundnorm.vmin == -dp.vboundnorm.vmax
    axes = spexlvm.pl.dotplot(adata, "group", factors=idx, show=False)
    assert "mainplot_ax" in axes


def test_matrixplot_values_are_group_means_of_z(adata):
    idx = [1, 3]
    mp = spexlvm.pl.matrixplot(adata, "group", factors=idx, return_fig=True, show=False)
    z = pd.DataFrame(_z(adata, idx), columns=["factor 2", "factor 4"])
    means = z.groupby(adata.obs["group"].to_numpy()).mean()
    np.testing.assert_allclose(mp.values_df.loc[means.index].to_numpy(), means, atol=1e-5)


def test_violin_panels(adata, figdir):
    axes = spexlvm.pl.violin(adata, "group", factors=[0, "dense_1"], save=True, show=False)
    assert _png(figdir / "spexlvm_violin.png")
    assert [a.get_title() for a in axes] == ["factor 1", "dense_1"]
    assert all(any(line.get_ydata()[0] == 0 for line in a.lines) for a in axes)  # 0 line
    _, ax = plt.subplots()
    assert spexlvm.pl.violin(adata, "group", factors=0, ax=ax, show=False) is ax
    with pytest.raises(ValueError, match="one factor"):
        spexlvm.pl.violin(adata, "group", factors=[0, 1], ax=ax, show=False)
    with pytest.raises(KeyError, match="groupby"):
        spexlvm.pl.violin(adata, "nope", factors=[0], show=False)


# ------------------------------------------------------------------ weights


def test_weights_labels_the_top_genes_and_marks_the_set(adata):
    names = list(adata.uns["spexlvm"]["factor_names"])
    axes = spexlvm.pl.weights(adata, factors=[0, "factor_3"], n_top=6, show=False)
    assert len(axes) == 2
    w = adata.varm["spexlvm_loadings"]
    mask = adata.varm["spexlvm_mask"]
    for ax, k in zip(axes, [0, names.index("factor_3")], strict=True):
        top = np.argsort(-np.abs(w[:, k]), kind="stable")[:6]
        labelled = [t.get_text() for t in ax.texts if isinstance(t, Annotation)]
        assert labelled == list(adata.var_names[top])
        marks = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
        assert set(marks) == {"kept", "other"}  # without tl.refine: in the set or not
        assert len(marks["kept"].get_offsets()) == int(mask[:, k].sum())
        kept_x = np.sort(marks["kept"].get_offsets()[:, 0])
        scaled = w[:, k] / np.abs(w[:, k]).max()
        np.testing.assert_allclose(kept_x, np.sort(scaled[mask[:, k]]), rtol=1e-6)


def test_weights_marks_tl_refine_calls(adata):
    spexlvm.tl.refine(adata)
    ax = spexlvm.pl.weights(adata, factors=[0], n_top=5, scale=False, show=False)
    status, source = gene_status(adata, 0)
    assert source == "refine"
    marks = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    for mark in ("kept", "added", "removed", "other"):
        n = int((status == mark).sum())
        assert (len(marks[mark].get_offsets()) if mark in marks else 0) == n
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "tl.refine" in legend
    with pytest.raises(ValueError, match="one factor"):
        spexlvm.pl.weights(adata, factors=[0, 1], ax=ax, show=False)


# ------------------------------------------------------------------ factor_correlation


def test_factor_correlation_matrix_and_clustering():
    adata = _fake(n_factors=6, long_names=False)
    rng = np.random.default_rng(1)
    base = rng.normal(size=(adata.n_obs, 3))
    # F0 ~ F3, F1 ~ -F4 (anti-correlated), F2 ~ F5: three pairs
    noise = 0.3 * rng.normal(size=(adata.n_obs, 6))
    adata.obsm["X_spexlvm"] = (
        np.column_stack([base[:, 0], base[:, 1], base[:, 2], base[:, 0], -base[:, 1], base[:, 2]])
        + noise
    )
    ax = spexlvm.pl.factor_correlation(adata, n_top=None, show=False)
    shown = [int(t.get_text()[1:]) for t in ax.get_yticklabels()]
    assert sorted(shown) == list(range(6))
    expected = np.corrcoef(adata.obsm["X_spexlvm"], rowvar=False)[np.ix_(shown, shown)]
    np.testing.assert_allclose(ax.images[0].get_array(), expected, atol=1e-10)
    pos = {k: shown.index(k) for k in range(6)}
    for a, b in ((0, 3), (1, 4), (2, 5)):  # partners sit next to each other
        assert abs(pos[a] - pos[b]) == 1
    # top-N by R², unclustered keeps the R² order
    ax = spexlvm.pl.factor_correlation(adata, n_top=3, cluster=False, show=False)
    assert _labels(ax.get_yticklabels()) == ["F0", "F1", "F2"]
    with pytest.raises(ValueError, match="two factors"):
        spexlvm.pl.factor_correlation(adata, factors=["F0"], show=False)


# ------------------------------------------------------------------ variance_explained groupby


def test_variance_explained_heatmap_is_tl_result(adata):
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])
    order = list(np.argsort(-r2, kind="stable")[:4])
    ax = spexlvm.pl.variance_explained(adata, n_top=4, groupby="group", show=False)
    matrix = np.asarray(ax.images[0].get_array())
    df = spexlvm.tl.variance_explained(adata.copy(), "group")
    names = np.asarray(adata.uns["spexlvm"]["factor_names"])[order]
    np.testing.assert_allclose(matrix[:, 0], r2[order], atol=1e-6)
    for j, g in enumerate(["A", "B", "C"]):
        np.testing.assert_allclose(matrix[:, j + 1], df.loc[names, f"r2_{g}"], rtol=1e-6)
    assert _labels(ax.get_xticklabels()) == ["all cells", "A", "B", "C"]
    # a plot does not store: a result the user stored for another grouping stays
    mine = adata.copy()
    spexlvm.tl.variance_explained(mine)  # all cells, no groupby
    spexlvm.pl.variance_explained(mine, n_top=4, groupby="group", show=False)
    assert "groupby" not in mine.uns["spexlvm"]["variance_explained"]
    with pytest.raises(ValueError, match="style"):
        spexlvm.pl.variance_explained(adata, groupby="group", style="bars", show=False)


# ------------------------------------------------------------------ auroc


def test_auroc_clustered_and_legible_at_12_by_10():
    adata = _fake(n_factors=12, n_groups=10)
    plain = spexlvm.pl.auroc(adata, "cell_type", factors=list(range(12)), show=False)
    base = np.asarray(plain.images[0].get_array())
    base_rows = _labels(plain.get_yticklabels())
    base_cols = _labels(plain.get_xticklabels())
    ax = spexlvm.pl.auroc(adata, "cell_type", n_top=12, show=False)
    matrix = np.asarray(ax.images[0].get_array())
    rows, cols = _labels(ax.get_yticklabels()), _labels(ax.get_xticklabels())
    assert sorted(rows) == sorted(base_rows) and sorted(cols) == sorted(base_cols)
    assert rows != base_rows or cols != base_cols  # clustering reordered something
    expected = base[np.ix_([base_rows.index(r) for r in rows], [base_cols.index(c) for c in cols])]
    np.testing.assert_allclose(matrix, expected)
    assert "clustered" in ax.get_title(loc="right")
    # every row at least 0.25 inch tall once drawn: rotated labels do not squeeze the rows
    fig = ax.figure
    fig.canvas.draw()
    height_in = ax.get_window_extent().height / fig.dpi
    assert height_in / 12 >= 0.25
    # and the rotated group labels fit in the figure
    renderer = fig.canvas.get_renderer()
    bottom = min(t.get_window_extent(renderer).y0 for t in ax.get_xticklabels())
    assert bottom >= 0


def test_auroc_ax(fitted):
    _, ax = plt.subplots()
    assert spexlvm.pl.auroc(fitted, "group", ax=ax, show=False) is ax


# ------------------------------------------------------------------ scatter robust


def test_scatter_robust_limits_exclude_an_outlier(adata):
    scores = adata.obsm["X_spexlvm"].copy()
    scores[0, 0] = -6.5 * np.abs(scores[:, 0]).max()
    adata.obsm["X_spexlvm"] = scores
    ax = spexlvm.pl.scatter(adata, 0, 1, show=False)
    lo, hi = ax.get_xlim()
    assert lo > scores[0, 0]  # the outlier does not set the axis
    inside = (scores[:, 0] >= lo) & (scores[:, 0] <= hi)
    assert inside.mean() >= 0.99
    # ... but stays in the scatter and is marked at the edge, with a note
    np.testing.assert_allclose(
        np.sort(ax.collections[0].get_offsets()[:, 0]), np.sort(scores[:, 0]), rtol=1e-6
    )
    edge = ax.lines[0]
    assert lo in set(np.round(edge.get_xdata(), 12)) or np.isclose(edge.get_xdata(), lo).any()
    assert any("beyond the axes" in t.get_text() for t in ax.texts)
    ax = spexlvm.pl.scatter(adata, 0, 1, robust=False, show=False)
    assert ax.get_xlim()[0] <= scores[0, 0]
    with pytest.raises(ValueError, match="robust"):
        spexlvm.pl.scatter(adata, 0, 1, robust=60.0, show=False)


# ------------------------------------------------------------------ mask_heatmap ax=


def test_mask_heatmap_into_an_axes(adata):
    fig_alone = spexlvm.pl.mask_heatmap(adata, n_top=3, show=False)
    codes = np.asarray(fig_alone.axes[0].images[0].get_array())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    panels = spexlvm.pl.mask_heatmap(adata, n_top=3, ax=right, show=False)
    assert len(panels) == 2 and all(p.figure is fig for p in panels)
    assert right not in fig.axes and left in fig.axes
    np.testing.assert_array_equal(panels[0].images[0].get_array(), codes)


def test_weights_compress_keeps_the_rank_order():
    from spexlvm.pl._weights import _positions

    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(0, 1e-4, 1000), rng.normal(0, 1, 40)])
    y, height, band = _positions(w, 0.01)
    order = np.argsort(w, kind="stable")
    assert np.all(np.diff(y[order]) > 0)  # same order as the ranks
    small = np.abs(w) < 0.01 * np.abs(w).max()
    lo, hi, n_mid = band
    assert n_mid == small.sum()
    assert np.all((y[small] > lo) & (y[small] < hi))
    assert hi - lo <= 0.5 * (~small).sum() + 1e-9  # the near-zero genes take <= half
    assert height == pytest.approx(w.size - n_mid + (hi - lo))
    y_plain, height_plain, none = _positions(w, 0.0)
    assert none is None and height_plain == w.size
    np.testing.assert_array_equal(np.sort(y_plain), np.arange(1, w.size + 1))
