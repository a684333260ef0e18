"""Content checks of the plots beyond variance_explained / scatter, on one small fit."""

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
from spexlvm.pl._heatmap import STATUS_CODES
from spexlvm.pl._utils import GENE_COLORS, gene_status

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_OBS, N_VARS, N_FACTORS = 300, 200, 5


@pytest.fixture(scope="module")
def fitted():
    adata = spexlvm.datasets.synthetic(N_OBS, N_VARS, N_FACTORS, seed=0)
    model = spexlvm.tl.fit(adata, n_dense=1, max_epochs=40, enable_progress_bar=False)
    true = adata.obsm["X_true"]
    adata.obs["group"] = pd.Categorical(
        np.select([true[:, 0] > 0.5, true[:, 1] > 0.5], ["A", "B"], "C")
    )
    return adata, model


@pytest.fixture
def adata(fitted):
    return fitted[0].copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(path):
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _labels(ticklabels):
    return [t.get_text() for t in ticklabels]


# ------------------------------------------------------------------ top_loadings


def test_top_loadings_bars_colours_and_removed(adata, tmp_path):
    path = tmp_path / "top.png"
    ax = spexlvm.pl.top_loadings(adata, "factor_1", n_top=8, show=False, save=path)
    assert _png(path)
    w = adata.varm["spexlvm_loadings"][:, 0]
    top = np.argsort(-np.abs(w), kind="stable")[:8]
    bars = sorted(_bars(ax), key=lambda b: -b.get_y())
    assert len(bars) == 8
    np.testing.assert_allclose([b.get_width() for b in bars], w[top], rtol=1e-6)
    status, source = gene_status(adata, 0)
    assert source == "threshold"
    assert [to_hex(b.get_facecolor()) for b in bars] == [
        GENE_COLORS[s].lower() for s in status[top]
    ]
    ticks = _labels(ax.get_yticklabels())
    assert ticks[:8] == list(adata.var_names[top])  # bars first, top gene first
    # removed genes: hollow markers below the bars, in the legend with their count
    n_removed = int((status == "removed").sum())
    hollow = [c for c in ax.collections if isinstance(c, PathCollection)]
    legend = _labels(ax.get_legend().get_texts())
    assert "annotated, active" in legend
    if n_removed - int((status[top] == "removed").sum()) > 0:
        assert len(hollow) == 1
        assert len(hollow[0].get_offsets()) == min(5, n_removed)
        assert any(t.startswith("removed") for t in legend)
    assert ax.get_xlabel() == "loading (posterior mean)"
    assert ax.get_title(loc="left").startswith("factor 1")


def test_top_loadings_added_gene_and_refine_result(adata):
    # make one unannotated gene the factor's largest loading: it must show as added
    mask = adata.varm["spexlvm_mask"]
    gene = int(np.flatnonzero(~mask[:, 2])[0])
    adata.varm["spexlvm_loadings"][gene, 2] = 10.0
    ax = spexlvm.pl.top_loadings(adata, 2, n_top=3, n_removed=0, show=False)
    top_bar = max(_bars(ax), key=lambda b: b.get_y())
    assert to_hex(top_bar.get_facecolor()) == GENE_COLORS["added"].lower()
    assert _labels(ax.get_yticklabels())[0] == adata.var_names[gene]
    assert "added (not annotated)" in _labels(ax.get_legend().get_texts())
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]

    # the calls of tl.refine take precedence over the threshold rule
    name = str(adata.uns["spexlvm"]["factor_names"][2])
    adata.uns["spexlvm"]["refine"] = {
        "factor": np.array([name]),
        "gene": np.array([adata.var_names[gene]]),
        "change": np.array(["added"]),
        "probability": np.array([0.99]),
        "loading": np.array([10.0]),
    }
    status, source = gene_status(adata, 2)
    assert source == "refine"
    assert status[gene] == "added"
    assert set(status[mask[:, 2]]) == {"kept"}
    ax = spexlvm.pl.top_loadings(adata, name, n_top=3, show=False)
    assert ax.get_legend().get_title().get_text() == "calls: tl.refine"


# ------------------------------------------------------------------ refinement


def test_refinement_counts(adata, tmp_path):
    path = tmp_path / "ref.png"
    ax = spexlvm.pl.refinement(adata, show=False, save=path)
    assert _png(path)
    assert len(ax.containers) == 3
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])[:N_FACTORS]
    order = np.argsort(-r2, kind="stable")
    names = [f"factor {i + 1}" for i in order]
    assert _labels(ax.get_yticklabels()) == names  # annotated only, by R², top first
    for j, change in enumerate(("kept", "added", "removed")):
        widths = [b.get_width() for b in ax.containers[j]]
        expected = [int((gene_status(adata, int(k))[0] == change).sum()) for k in order]
        assert widths == expected
    mask = adata.varm["spexlvm_mask"]
    kept = np.array([b.get_width() for b in ax.containers[0]])
    removed = np.array([b.get_width() for b in ax.containers[2]])
    np.testing.assert_array_equal(kept + removed, mask[:, order].sum(0))
    assert _labels(ax.get_legend().get_texts()) == ["kept", "added", "removed"]
    assert ax.get_xlabel().startswith("number of genes")


def test_refinement_chosen_factors(adata):
    ax = spexlvm.pl.refinement(adata, ["factor_3", 0], show=False)
    assert _labels(ax.get_yticklabels()) == ["factor 3", "factor 1"]
    assert len(_bars(ax)) == 6
    with pytest.raises(ValueError, match="n_top"):
        spexlvm.pl.refinement(adata, n_top=0, show=False)


# ------------------------------------------------------------------ auroc


def test_auroc_heatmap_values(adata, tmp_path):
    from sklearn.metrics import roc_auc_score

    path = tmp_path / "auroc.png"
    adata.uns["group_colors"] = np.array(["#111111", "#222222", "#333333"])
    ax = spexlvm.pl.auroc(adata, "group", factors=[0, 1, "dense_1"], show=False, save=path)
    assert _png(path)
    matrix = np.asarray(ax.images[0].get_array())
    assert matrix.shape == (3, 3)
    scores = adata.obsm["X_spexlvm"]
    is_a = adata.obs["group"].to_numpy() == "A"
    assert matrix[0, 0] == pytest.approx(roc_auc_score(is_a, scores[:, 0]))
    assert abs(matrix[0, 0] - 0.5) > 0.3  # factor 1 drives group A (sign is arbitrary)
    assert _labels(ax.get_xticklabels()) == ["A", "B", "C"]
    assert _labels(ax.get_yticklabels()) == ["factor 1", "factor 2", "dense_1"]
    # values written in the cells, colour map centred at 0.5
    assert len(ax.texts) == 9
    assert ax.texts[0].get_text() == f"{matrix[0, 0]:.2f}"
    assert ax.images[0].norm.vmin == 0.0 and ax.images[0].norm.vmax == 1.0
    # the stored group colours in the strip above the columns
    strip = ax.child_axes[0].images[0]
    assert [to_hex(strip.cmap(i)) for i in range(3)] == ["#111111", "#222222", "#333333"]


def test_auroc_uses_tl_result(adata):
    names = np.asarray(adata.uns["spexlvm"]["factor_names"])
    table = np.arange(len(names) * 3, dtype=float).reshape(-1, 3) / 100
    adata.uns["spexlvm"]["auroc"] = {
        "groupby": "group",
        "factor_names": names,
        "groups": np.array(["A", "B", "C"]),
        "auroc": table,
    }
    ax = spexlvm.pl.auroc(adata, "group", factors=[1, 0], show=False)
    np.testing.assert_allclose(ax.images[0].get_array(), table[[1, 0]])
    assert "tl.auroc" in ax.get_title(loc="right")
    with pytest.raises(KeyError, match="obs"):
        spexlvm.pl.auroc(adata, "nope", show=False)


# ------------------------------------------------------------------ history


def test_history_from_model_and_adata(fitted, tmp_path):
    adata, model = fitted
    path = tmp_path / "hist.png"
    ax = spexlvm.pl.history(model, show=False, save=path)
    assert _png(path)
    expected = np.asarray(model.history_["elbo_train"], dtype=float).ravel()
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(y, expected)
    np.testing.assert_array_equal(x, np.arange(1, expected.size + 1))
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "negative ELBO per entry"
    ax = spexlvm.pl.history(adata, log=True, show=False)
    np.testing.assert_allclose(
        ax.lines[0].get_ydata(), adata.uns["spexlvm"]["history"]["elbo_train"]
    )
    assert ax.get_yscale() == "log"
    with pytest.raises(TypeError, match="SpexLVM"):
        spexlvm.pl.history(object(), show=False)


# ------------------------------------------------------------------ mask_heatmap


def test_mask_heatmap_panels(adata, tmp_path):
    path = tmp_path / "mask.png"
    fig = spexlvm.pl.mask_heatmap(adata, show=False, save=path)
    assert _png(path)
    ax_mask, ax_w = fig.axes[0], fig.axes[1]
    codes = np.asarray(ax_mask.images[0].get_array())
    values = np.asarray(ax_w.images[0].get_array())
    assert codes.shape == values.shape
    assert codes.shape[1] == N_FACTORS  # the annotated factors, dense_1 left out
    mask = adata.varm["spexlvm_mask"]
    assert codes.shape[0] == int(
        np.any([(gene_status(adata, k)[0] != "other") for k in range(N_FACTORS)], axis=0).sum()
    )
    assert set(np.unique(codes)) <= set(STATUS_CODES.values())
    assert values.min() >= 0 and values.max() == pytest.approx(1.0)
    # annotated cells (kept or removed) are exactly the mask; added cells are active
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])[:N_FACTORS]
    cols = np.argsort(-r2, kind="stable")
    annotated = np.isin(codes, [STATUS_CODES["kept"], STATUS_CODES["removed"]])
    assert annotated.sum() == mask[:, cols].sum()
    assert (values[codes == STATUS_CODES["added"]] > 0.1).all()
    assert (values[codes == STATUS_CODES["removed"]] <= 0.1).all()
    assert next(t.get_text() for t in fig.legends[0].get_texts()) == "annotated, active"
    assert _labels(ax_mask.get_xticklabels()) == [f"factor {i + 1}" for i in cols]


def test_mask_heatmap_given_genes_keep_order(adata):
    genes = list(adata.var_names[[5, 0, 17]])
    fig = spexlvm.pl.mask_heatmap(adata, factors=["factor_1", "factor_2"], genes=genes, show=False)
    ax_mask = fig.axes[0]
    assert _labels(ax_mask.get_yticklabels()) == genes
    codes = np.asarray(ax_mask.images[0].get_array())
    assert codes.shape == (3, 2)
    mask = adata.varm["spexlvm_mask"][[5, 0, 17]][:, :2]
    assert (np.isin(codes, [1, 2]) == mask).all()
    with pytest.raises(KeyError, match="var_names"):
        spexlvm.pl.mask_heatmap(adata, genes=["nope"], show=False)


# ------------------------------------------------------------------ scanpy


def test_scanpy_embedding_reads_factors(adata, tmp_path):
    import scanpy as sc

    ax = sc.pl.embedding(adata, basis="spexlvm", components="1,2", color="group", show=False)
    offsets = next(c for c in ax.collections if isinstance(c, PathCollection)).get_offsets()
    assert offsets.shape == (N_OBS, 2)
    scores = adata.obsm["X_spexlvm"]
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(scores[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(np.sort(offsets[:, 1]), np.sort(scores[:, 1]), rtol=1e-5)
    plt.gcf().savefig(tmp_path / "embedding.png")
    assert _png(tmp_path / "embedding.png")


# ------------------------------------------------------------------ variance_explained groupby


def test_variance_explained_groupby(adata):
    from spexlvm.pl._variance_explained import r2_by_group

    r2 = np.asarray(adata.uns["spexlvm"]["r2"])
    # one group of all cells gives back the stored R² (same centring and reconstruction)
    adata.obs["all"] = pd.Categorical(["x"] * adata.n_obs)
    per_group, groups = r2_by_group(adata, "all", list(range(r2.size)))
    assert groups == ["x"]
    np.testing.assert_allclose(per_group[:, 0], r2, atol=1e-5)

    ax = spexlvm.pl.variance_explained(adata, n_top=4, groupby="group", style="dots", show=False)
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 3  # one per group, a dot per factor each
    assert all(len(d.get_offsets()) == 4 for d in dots)
    assert len(_bars(ax)) == 4
    legend = _labels(ax.get_legend().get_texts())
    assert legend == ["all cells", "A", "B", "C"]
    expected, _ = r2_by_group(adata, "group", list(np.argsort(-r2, kind="stable")[:4]))
    np.testing.assert_allclose(dots[0].get_offsets()[:, 0], expected[:, 0])


# ------------------------------------------------------------------ with the tl results


def test_plots_use_tl_refine_and_auroc(adata):
    if not (hasattr(spexlvm.tl, "refine") and hasattr(spexlvm.tl, "auroc")):
        pytest.skip("spexlvm.tl.refine / spexlvm.tl.auroc not available")
    changes = spexlvm.tl.refine(adata)
    ax = spexlvm.pl.refinement(adata, show=False)
    assert "tl.refine" in ax.get_legend().get_title().get_text()
    names = list(adata.uns["spexlvm"]["factor_names"])
    shown = [names.index(n.get_text().replace(" ", "_")) for n in ax.get_yticklabels()]
    for j, change in ((1, "added"), (2, "removed")):
        counts = changes[changes["change"] == change]["factor"].value_counts()
        widths = [b.get_width() for b in ax.containers[j]]
        assert widths == [int(counts.get(names[k], 0)) for k in shown]

    table = spexlvm.tl.auroc(adata, "group")
    ax = spexlvm.pl.auroc(adata, "group", factors=[0, 1], show=False)
    assert "tl.auroc" in ax.get_title(loc="right")
    wide = table.pivot(index="factor", columns="group", values="auroc")
    np.testing.assert_allclose(
        ax.images[0].get_array(), wide.loc[names[:2], ["A", "B", "C"]].to_numpy()
    )


# ------------------------------------------------------------------ gene_attribution


def test_gene_attribution_stacks_each_genes_leading_factors(adata, tmp_path):
    """One bar per gene and rank: the widths are tl.gene_attribution's shares, stacked
    from the left; out-of-set segments hatched; the AnnData is left as it was."""
    genes = list(adata.var_names[:4])
    before = set(adata.uns["spexlvm"])
    path = tmp_path / "attribution.png"
    ax = spexlvm.pl.gene_attribution(adata, genes, n_top=2, show=False, save=path)
    assert _png(path)
    assert set(adata.uns["spexlvm"]) == before  # a plot stores nothing
    table = spexlvm.tl.gene_attribution(adata.copy(), genes, n_top=2)
    assert len(ax.containers) == 2
    for rank, container in enumerate(ax.containers, start=1):
        rows = table[table["rank"] == rank]
        np.testing.assert_allclose([b.get_width() for b in container], rows["r2"], rtol=1e-6)
        hatched = [bool(b.get_hatch()) for b in container]
        assert hatched == (~rows["in_set"].to_numpy()).tolist()
    first = table[table["rank"] == 1]["r2"].to_numpy()
    np.testing.assert_allclose([b.get_x() for b in ax.containers[1]], first, rtol=1e-6)
    assert _labels(ax.get_yticklabels()) == genes
    assert np.all(np.diff(ax.get_yticks()) < 0)  # first gene on top
    assert "gene not in the set" in _labels(ax.get_legend().get_texts())


def test_gene_attribution_of_a_factors_genes(adata, data_passes):
    """factor=: the set's genes that the fit explains most, that factor outlined; the data
    are read once for the two tables it builds."""
    ax = spexlvm.pl.gene_attribution(adata, factor="factor_1", n_genes=5, n_top=3, show=False)
    assert len(data_passes) == 1
    mask = adata.varm["spexlvm_mask"][:, 0].astype(bool)
    shown = _labels(ax.get_yticklabels())
    assert len(shown) == 5 and set(shown) <= set(adata.var_names[mask])
    lead = spexlvm.tl.gene_attribution(adata.copy(), list(adata.var_names[mask]), n_top=1)
    expected = lead.sort_values("r2", ascending=False, kind="stable")["gene"][:5]
    assert shown == expected.tolist()
    table = spexlvm.tl.gene_attribution(adata.copy(), shown, n_top=3)
    outlined = [
        to_hex(b.get_edgecolor()) == "#000000" and b.get_linewidth() > 0
        for c in ax.containers
        for b in c.patches
    ]
    by_rank = [table[table["rank"] == r]["factor"] == "factor_1" for r in (1, 2, 3)]
    assert outlined == [bool(v) for col in by_rank for v in col]
    assert any(outlined)  # planted genes go to their own factor
    assert ax.get_title(loc="left").startswith("Genes of factor 1")
    with pytest.raises(ValueError, match=r"either genes= .* or factor="):
        spexlvm.pl.gene_attribution(adata, show=False)
    with pytest.raises(ValueError, match="either genes="):
        spexlvm.pl.gene_attribution(adata, ["x"], factor="factor_1", show=False)
    with pytest.raises(ValueError, match="unannotated factor"):
        spexlvm.pl.gene_attribution(adata, factor="dense_1", show=False)
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        spexlvm.pl.gene_attribution(adata, ["NOT_A_GENE"], show=False)
