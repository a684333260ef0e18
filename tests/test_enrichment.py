"""tl.enrichment (gseapy prerank on a factor's loadings) and pl.enrichment."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt

import spexlvm
from spexlvm.tl._enrichment import COLUMNS, get_enrichment

N_DECOYS, DECOY_SIZE, PERMUTATIONS = 20, 15, 100


@pytest.fixture(scope="module")
def fitted():
    """A fit of synthetic data (seed 5: not the seed that chose the defaults), the true
    sets (``mask_true``) and 20 random decoy sets."""
    adata = spexlvm.datasets.synthetic(300, 200, 5, noise=0.2, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spexlvm.tl.fit(adata, n_sparse=1, progress_bar=False, seed=0)
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    mask = adata.varm["mask_true"]
    sets = {f"TRUE_{n}": list(adata.var_names[mask[:, k]]) for k, n in enumerate(names)}
    rng = np.random.default_rng(0)
    for i in range(N_DECOYS):
        sets[f"DECOY_{i}"] = list(rng.choice(adata.var_names, DECOY_SIZE, replace=False))
    return adata, names, sets


def test_own_set_first_and_decoys_not_significant(fitted):
    adata, names, sets = fitted
    adata = adata.copy()
    n_decoys_significant = 0
    for name in names:
        df = spexlvm.tl.enrichment(adata, name, sets, permutation_num=PERMUTATIONS, seed=0)
        assert list(df.columns) == list(COLUMNS)
        assert df["term"].iloc[0] == f"TRUE_{name}", df.head(3)
        assert df["fdr"].iloc[0] < 0.05
        assert df["nes"].iloc[0] > 0  # |loading| ranking: the set's genes at the top
        decoys = df[df["term"].str.startswith("DECOY")]
        assert len(decoys) == N_DECOYS
        n_decoys_significant += int((decoys["fdr"] < 0.05).sum())
        lead = df["lead_genes"].iloc[0].split(";")
        assert set(lead) <= set(sets[f"TRUE_{name}"]) and len(lead) >= 3
        assert df["n_genes"].iloc[0] == len(sets[f"TRUE_{name}"])
    # calibration: at most the nominal 5% of the 100 decoy tests
    assert n_decoys_significant <= 0.05 * N_DECOYS * len(names)


def test_stored_results_and_annotation_default(fitted, tmp_path):
    adata, names, _ = fitted
    adata = adata.copy()
    # default: the fit's own annotation; the factor's own set is flagged
    df = spexlvm.tl.enrichment(adata, names[0], permutation_num=PERMUTATIONS, min_size=3)
    assert set(df["term"]) == set(names)
    assert df.loc[df["own"], "term"].tolist() == [names[0]]
    assert df["term"].iloc[0] == names[0]
    # a second factor and a second key do not overwrite the first
    other = spexlvm.tl.enrichment(
        adata, "sparse_1", permutation_num=PERMUTATIONS, min_size=3, key_added="enr2"
    )
    assert not other["own"].any()
    stored = adata.uns["spexlvm"]["enrichment"][names[0]]
    assert stored["params"]["gene_sets"] == "annotation"
    assert stored["params"]["absolute"] is True and stored["params"]["weight"] == 0.0
    adata.write_h5ad(tmp_path / "e.h5ad")
    back = ad.read_h5ad(tmp_path / "e.h5ad")
    for a, key_added, expected in ((0, "enrichment", df), ("sparse_1", "enr2", other)):
        got = get_enrichment(back, a, key_added=key_added)
        np.testing.assert_array_equal(got["term"], expected["term"])
        np.testing.assert_allclose(got["nes"], expected["nes"])
        np.testing.assert_array_equal(got["own"], expected["own"])
        assert got["lead_genes"].tolist() == expected["lead_genes"].tolist()


def test_signed_ranking_and_case(fitted):
    """absolute=False ranks signed loadings; title-case genes match upper-case sets (auto,
    with the add_gene_sets warning)."""
    adata, _, sets = fitted
    adata = adata.copy()
    w = adata.varm["spexlvm_loadings"][:, 0]
    up = list(adata.var_names[np.argsort(-w)[:15]])
    down = list(adata.var_names[np.argsort(w)[:15]])
    gs = {"UP": up, "DOWN": down, **{k: v for k, v in sets.items() if k.startswith("DECOY")}}
    df = spexlvm.tl.enrichment(adata, 0, gs, absolute=False, permutation_num=PERMUTATIONS)
    row = df.set_index("term")
    assert row.loc["UP", "nes"] > 0 and row.loc["DOWN", "nes"] < 0
    assert row.loc["UP", "fdr"] < 0.05 and row.loc["DOWN", "fdr"] < 0.05
    mouse = adata.copy()
    mouse.var_names = [g.title() for g in adata.var_names]  # gene_0 -> Gene_0
    upper = {k: [g.upper() for g in v] for k, v in gs.items()}
    with pytest.warns(UserWarning, match="ignoring case"):
        cased = spexlvm.tl.enrichment(
            mouse, 0, upper, absolute=False, permutation_num=PERMUTATIONS
        )
    np.testing.assert_allclose(cased["nes"], df["nes"])


def test_errors(fitted):
    adata, names, sets = fitted
    with pytest.raises(FileNotFoundError, match="not an Enrichr library name"):
        spexlvm.tl.enrichment(adata, names[0], "KEGG_2021_Human")
    with pytest.raises(ValueError, match="No gene set has between min_size=50"):
        spexlvm.tl.enrichment(adata, names[0], sets, min_size=50)
    with pytest.raises(ValueError, match="permutation_num must be a positive int"):
        spexlvm.tl.enrichment(adata, names[0], sets, permutation_num=0)
    with pytest.raises(KeyError, match="not found among"):
        spexlvm.tl.enrichment(adata, "no such factor", sets)
    fresh = adata.copy()
    with pytest.raises(KeyError, match=r"run spexlvm.tl.enrichment\(adata, 'sparse_1'"):
        spexlvm.pl.enrichment(fresh, "sparse_1", show=False)


def test_plot(fitted, tmp_path):
    adata, names, sets = fitted
    adata = adata.copy()
    sets = {names[1]: sets[f"TRUE_{names[1]}"], **sets}  # the factor's own set by name
    df = spexlvm.tl.enrichment(adata, names[1], sets, permutation_num=PERMUTATIONS)
    path = tmp_path / "enrichment.png"
    ax = spexlvm.pl.enrichment(adata, names[1], n_top=8, show=False, save=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = ax.patches
    assert len(bars) == 8
    np.testing.assert_allclose([b.get_width() for b in bars], df["nes"].head(8))
    labels = [t.get_text() for t in ax.get_yticklabels()]  # top bar first
    assert labels == [spexlvm.pl.short_name(t) for t in df["term"].head(8)]
    grey = mcolors.to_rgba("#BBBBBB")
    for bar, q, own in zip(bars, df["fdr"].head(8), df["own"].head(8), strict=True):
        assert (bar.get_facecolor() != grey) == (q < 0.05)
        assert (bar.get_linewidth() > 1) == own
    assert df["own"].head(8).sum() == 1
    stars = [t.get_text() for t in ax.texts]
    assert stars.count("***") + stars.count("**") + stars.count("*") == int(
        (df["fdr"].head(8) < 0.05).sum()
    )
    plt.close(ax.figure)
    fig, given = plt.subplots()
    assert spexlvm.pl.enrichment(adata, names[1], ax=given, show=False) is given
    plt.close(fig)
