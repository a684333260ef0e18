from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

import spexlvm
from spexlvm.pl import short_name
from spexlvm.pl._utils import KIND_COLORS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_OBS, N_FACTORS = 300, 5


@pytest.fixture(scope="module")
def fitted():
    adata = spexlvm.datasets.synthetic(N_OBS, 200, N_FACTORS, seed=0)
    spexlvm.tl.fit(adata, n_sparse=1, n_dense=1, max_epochs=50, enable_progress_bar=False)
    true = adata.obsm["X_true"][:, 0]
    adata.obs["group"] = pd.Categorical(np.where(true > 0, "high", "low"))
    adata.obs["truth"] = true
    return adata


@pytest.fixture
def adata(fitted):
    return fitted.copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------ short_name


def test_short_name():
    assert short_name("HALLMARK_G2M_CHECKPOINT") == "G2M CHECKPOINT"
    assert short_name("REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION") == (
        "MHC CLASS II ANTIGEN PRESENTATION"
    )
    assert short_name("sparse_3") == "sparse_3"
    assert short_name("dense_1") == "dense_1"
    assert short_name("my set") == "my set"
    long = "REACTOME_RESPIRATORY_ELECTRON_TRANSPORT_ATP_SYNTHESIS_BY_CHEMIOSMOTIC_COUPLING"
    out = short_name(long)
    assert len(out) <= 40
    assert out.endswith("…")
    assert out.startswith("RESPIRATORY ELECTRON TRANSPORT")
    assert "_" not in out
    assert short_name(long, max_len=None) == long.removeprefix("REACTOME_").replace("_", " ")
    assert short_name("REACTOME_") == "REACTOME"  # nothing left after the prefix: keep it


# ------------------------------------------------------------------ variance_explained


def test_variance_explained_bars_labels_legend(adata, tmp_path):
    path = tmp_path / "ve.png"
    ax = spexlvm.pl.variance_explained(adata, show=False, save=path)
    assert _is_png(path)
    names = list(adata.uns["spexlvm"]["factor_names"])
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])
    bars = _bars(ax)
    assert len(bars) == len(names) == N_FACTORS + 2

    # ticks top to bottom: factors by decreasing R², shortened names
    ticks = sorted(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True))
    top_to_bottom = [label for _, label in reversed(ticks)]
    expected = [short_name(names[i]) for i in np.argsort(-r2, kind="stable")]
    assert top_to_bottom == expected
    widths = [b.get_width() for b in sorted(bars, key=lambda b: -b.get_y())]
    np.testing.assert_allclose(widths, np.sort(r2)[::-1])

    # colours by kind, legend names the kinds
    by_label = {short_name(n): i for i, n in enumerate(names)}
    bar_colors = {
        label: to_hex(bar.get_facecolor())
        for (_, label), bar in zip(
            reversed(ticks), sorted(bars, key=lambda b: -b.get_y()), strict=True
        )
    }
    assert bar_colors["factor 2"] == KIND_COLORS["annotated"].lower()
    assert bar_colors["sparse_1"] == KIND_COLORS["sparse"].lower()
    assert bar_colors["dense_1"] == KIND_COLORS["dense"].lower()
    assert set(by_label) == set(bar_colors)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["annotated (gene set)", "unannotated, sparse", "unannotated, dense"]
    assert ax.get_xlabel() == "variance explained (R²)"
    assert "7 factors" in ax.get_title(loc="right")


def test_variance_explained_n_top_and_ax(adata):
    fig, ax = plt.subplots()
    out = spexlvm.pl.variance_explained(adata, n_top=3, ax=ax, show=False)
    assert out is ax
    assert len(_bars(ax)) == 3
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])
    assert max(b.get_width() for b in _bars(ax)) == pytest.approx(r2.max())
    assert plt.fignum_exists(fig.number)  # a figure we were handed is not closed
    # legend lists only the kinds that are shown
    kinds_shown = {to_hex(b.get_facecolor()) for b in _bars(ax)}
    assert len(ax.get_legend().get_texts()) == len(kinds_shown)


def test_variance_explained_long_names(adata):
    names = np.asarray(adata.uns["spexlvm"]["factor_names"]).astype(object)
    names[0] = "REACTOME_" + "VERY_LONG_PATHWAY_NAME_" * 4 + "A"
    names[1] = "REACTOME_" + "VERY_LONG_PATHWAY_NAME_" * 4 + "B"
    adata.uns["spexlvm"]["factor_names"] = names.astype(str)
    adata.uns["spexlvm"]["r2"] = np.linspace(0.5, 0.1, names.size)
    ax = spexlvm.pl.variance_explained(adata, n_top=2, show=False)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert all(len(label) <= 45 for label in labels)
    assert len(set(labels)) == 2  # two names that shorten alike stay distinguishable


def test_variance_explained_save_true_uses_figdir(adata, tmp_path):
    import scanpy as sc

    figdir, fmt = sc.settings.figdir, sc.settings.file_format_figs
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path, "png"
    try:
        assert spexlvm.pl.variance_explained(adata, save=True) is not None  # not shown
    finally:
        sc.settings.figdir, sc.settings.file_format_figs = figdir, fmt
    assert _is_png(tmp_path / "spexlvm_variance_explained.png")


def test_variance_explained_errors(adata):
    with pytest.raises(ValueError, match="n_top"):
        spexlvm.pl.variance_explained(adata, n_top=0, show=False)
    with pytest.raises(KeyError, match=r"tl\.fit"):
        spexlvm.pl.variance_explained(adata, key="other", show=False)


# ------------------------------------------------------------------ scatter


def _points(ax):
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 1
    return collections[0]


def test_scatter_categorical(adata, tmp_path):
    path = tmp_path / "sc.png"
    ax = spexlvm.pl.scatter(adata, "factor_1", "factor_2", color="group", show=False, save=path)
    assert _is_png(path)
    points = _points(ax)
    offsets = points.get_offsets()
    assert offsets.shape == (N_OBS, 2)
    scores = adata.obsm["X_spexlvm"]
    # the same points, in a shuffled drawing order
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(scores[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(np.sort(offsets[:, 1]), np.sort(scores[:, 1]), rtol=1e-6)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["high", "low"]
    assert len({to_hex(c) for c in points.get_facecolors()}) == 2
    assert ax.get_xlabel().startswith("factor 1")
    assert ax.get_ylabel().startswith("factor 2")


def test_scatter_uses_stored_colors(adata):
    adata.uns["group_colors"] = np.array(["#ff0000", "#00ff00"])
    ax = spexlvm.pl.scatter(adata, "factor_1", "factor_2", color="group", show=False)
    colors = {to_hex(c) for c in _points(ax).get_facecolors()}
    assert colors == {"#ff0000", "#00ff00"}
    high = adata.obs["group"].to_numpy() == "high"
    # the first drawn points are cells in a fixed permutation: check one colour mapping
    order = np.random.default_rng(0).permutation(adata.n_obs)
    first = to_hex(_points(ax).get_facecolors()[0])
    assert first == ("#ff0000" if high[order[0]] else "#00ff00")
    handles = ax.get_legend().legend_handles
    assert [to_hex(h.get_color()) for h in handles] == ["#ff0000", "#00ff00"]


def test_scatter_missing_category_is_grey(adata):
    group = adata.obs["group"].astype(object)
    group.iloc[:10] = np.nan
    adata.obs["group"] = pd.Categorical(group)
    ax = spexlvm.pl.scatter(adata, "factor_1", "factor_2", color="group", show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["high", "low", "NA"]
    assert len(_points(ax).get_offsets()) == N_OBS


def test_scatter_continuous_colorbar(adata):
    fig, ax = plt.subplots()
    spexlvm.pl.scatter(adata, 0, "dense_1", color="truth", ax=ax, show=False)
    points = _points(ax)
    assert len(points.get_offsets()) == N_OBS
    assert points.get_array().shape == (N_OBS,)
    assert len(fig.axes) == 2  # the colour bar
    assert fig.axes[1].get_ylabel() == "truth"
    assert ax.get_legend() is None


def test_scatter_no_color_and_name_forms(adata):
    names = list(adata.uns["spexlvm"]["factor_names"])
    ax = spexlvm.pl.scatter(adata, "FACTOR 3", "Factor_4", show=False)
    offsets = _points(ax).get_offsets()
    assert offsets.shape == (N_OBS, 2)
    scores = adata.obsm["X_spexlvm"]
    np.testing.assert_allclose(
        np.sort(offsets[:, 0]), np.sort(scores[:, names.index("factor_3")]), rtol=1e-6
    )


def test_scatter_short_and_full_reactome_names(adata):
    names = np.asarray(adata.uns["spexlvm"]["factor_names"]).astype(object)
    names[0] = "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"
    names[1] = "REACTOME_RESPIRATORY_ELECTRON_TRANSPORT_ATP_SYNTHESIS_BY_CHEMIOSMOTIC_COUPLING"
    adata.uns["spexlvm"]["factor_names"] = names.astype(str)
    ax = spexlvm.pl.scatter(
        adata, "MHC class II antigen presentation", short_name(names[1]), show=False
    )
    assert ax.get_xlabel().startswith("MHC CLASS II ANTIGEN PRESENTATION")
    scores = adata.obsm["X_spexlvm"]
    np.testing.assert_allclose(
        np.sort(_points(ax).get_offsets()[:, 1]), np.sort(scores[:, 1]), rtol=1e-6
    )
    ax = spexlvm.pl.scatter(adata, names[0], names[1], show=False)
    assert len(_points(ax).get_offsets()) == N_OBS


def test_scatter_unknown_factor_lists_close_matches(adata):
    with pytest.raises(KeyError, match="factor_1") as err:
        spexlvm.pl.scatter(adata, "factr_1", "factor_2", show=False)
    assert "Close matches" in str(err.value)
    with pytest.raises(KeyError, match="obs"):
        spexlvm.pl.scatter(adata, "factor_1", "factor_2", color="nope", show=False)
    with pytest.raises(KeyError, match=r"tl\.fit"):
        spexlvm.pl.scatter(adata, "factor_1", "factor_2", key="other", show=False)
