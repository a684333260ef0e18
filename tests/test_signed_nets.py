"""Signed networks (decoupler's long format with a ``weight`` column): the signs orient
the factors, the magnitudes are ignored with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spexlvm
from spexlvm.pp import add_gene_sets, get_mask, get_signs

N_OBS, N_VARS, N_FACTORS = 300, 200, 6


def make_adata(genes) -> ad.AnnData:
    rng = np.random.default_rng(0)
    return ad.AnnData(
        rng.normal(size=(5, len(genes))).astype(np.float32), var=pd.DataFrame(index=genes)
    )


def signed_net(adata: ad.AnnData, flip: float = 1.0) -> pd.DataFrame:
    """The synthetic annotation as a CollecTRI-like net: weight = sign of the planted
    loading (false positives, planted 0, get +1); ``flip=-1`` reverses every sign."""
    mask, truth = adata.varm["spexlvm_mask"], adata.varm["W_true"]
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    rows = []
    for k, name in enumerate(names):
        for g in np.flatnonzero(mask[:, k]):
            sign = np.sign(truth[g, k]) if truth[g, k] != 0 else 1.0
            rows.append((name, adata.var_names[g], flip * sign))
    return pd.DataFrame(rows, columns=["source", "target", "weight"])


def score_correlations(adata: ad.AnnData) -> np.ndarray:
    truth = adata.obsm["X_true"]
    scores = adata.obsm["X_spexlvm"][:, : truth.shape[1]]
    return np.array([np.corrcoef(scores[:, k], truth[:, k])[0, 1] for k in range(truth.shape[1])])


@pytest.fixture(scope="module")
def mixed_sign_data():
    """Planted loadings N(0, 4) (thresholded): every factor has genes going up and down."""
    adata = spexlvm.datasets.synthetic(N_OBS, N_VARS, N_FACTORS, noise=0.2, seed=0)
    truth = adata.varm["W_true"]
    assert ((truth > 0).sum(0) > 0).all() and ((truth < 0).sum(0) > 0).all()
    return adata


def _fit_with(adata: ad.AnnData, net: pd.DataFrame | None, run_fit) -> ad.AnnData:
    adata = adata.copy()
    if net is not None:
        del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # convergence, not under test
        run_fit(adata, gene_sets=net)
    return adata


def test_signed_net_orients_every_factor(mixed_sign_data, run_fit):
    """With the planted signs in the net every annotated factor correlates positively
    with its planted score; with the signs flipped every one negatively. Without signs
    (today's orientation by the sum of the loadings) some factors come out reversed, so
    the signs are what orients them."""
    unsigned = score_correlations(_fit_with(mixed_sign_data, None, run_fit))
    assert (np.abs(unsigned) > 0.9).all()  # every factor found ...
    assert (unsigned < 0).any()  # ... but some reversed: the control can fail

    signed = _fit_with(mixed_sign_data, signed_net(mixed_sign_data), run_fit)
    r = score_correlations(signed)
    assert (r > 0.9).all(), r
    # the signs are stored: varm on the members, their count per factor in uns
    mask, _ = get_mask(signed)
    signs = signed.varm["spexlvm_mask_signs"]
    assert set(np.unique(signs[mask])) == {-1, 1}
    assert (signs[~mask] == 0).all()
    np.testing.assert_array_equal(signed.uns["spexlvm_mask"]["n_negative"], (signs < 0).sum(0))
    assert signed.uns["spexlvm_mask"]["params"]["signed"] is True
    # scores and loadings flipped together: the signed in-set loadings sum to > 0
    w = signed.varm["spexlvm_loadings"][:, :N_FACTORS]
    assert ((w * get_signs(signed, mask)).sum(0) > 0).all()

    flipped = score_correlations(
        _fit_with(mixed_sign_data, signed_net(mixed_sign_data, -1.0), run_fit)
    )
    assert (flipped < -0.9).all(), flipped


def test_weights_signs_and_magnitudes():
    adata = make_adata(["A", "B", "C", "D", "E"])
    collectri = pd.DataFrame(
        {
            "source": ["TF1", "TF1", "TF1", "TF2", "TF2", "TF2"],
            "target": ["A", "B", "C", "C", "D", "E"],
            "weight": [1, -1, 1, -1, 0, 1],  # D: weight 0, dropped
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # +-1 weights: no warning
        add_gene_sets(adata, collectri)
    signs = adata.varm["spexlvm_mask_signs"]
    np.testing.assert_array_equal(signs, [[1, 0], [-1, 0], [1, -1], [0, 0], [0, 1]])
    assert adata.uns["spexlvm_mask"]["n_negative"].tolist() == [1, 1]
    np.testing.assert_array_equal(get_signs(adata, get_mask(adata)[0]), signs)

    # PROGENy-like magnitudes: the same signs, the magnitudes ignored with a warning
    progeny = collectri.assign(weight=collectri["weight"] * 3.5)
    other = adata.copy()
    with pytest.warns(UserWarning, match=r"only their signs are used.*magnitudes are ignored"):
        add_gene_sets(other, progeny)
    np.testing.assert_array_equal(other.varm["spexlvm_mask_signs"], signs)

    # sets without weights: the signs of an earlier call are removed
    add_gene_sets(adata, {"TF1": ["A", "B"]})
    assert "spexlvm_mask_signs" not in adata.varm
    assert adata.uns["spexlvm_mask"]["params"]["signed"] is False
    np.testing.assert_array_equal(get_signs(adata, get_mask(adata)[0]), [[1], [1], [0], [0], [0]])


def test_weights_bad_values_and_round_trip(tmp_path):
    adata = make_adata(["A", "B", "C"])
    net = pd.DataFrame({"source": ["T", "T"], "target": ["A", "B"], "weight": ["1", "x"]})
    with pytest.raises(ValueError, match=r"'weight' column .* finite numbers"):
        add_gene_sets(adata, net)
    with pytest.raises(ValueError, match="missing value"):
        add_gene_sets(adata, net.assign(weight=[1.0, np.nan]))
    # case-insensitive matching keeps the signs; the signs survive h5ad
    mouse = make_adata(["Aa", "Bb", "Cc"])
    net = pd.DataFrame({"source": ["T", "T"], "target": ["AA", "BB"], "weight": [-1, 1]})
    add_gene_sets(mouse, net, case_sensitive=False)
    np.testing.assert_array_equal(mouse.varm["spexlvm_mask_signs"][:, 0], [-1, 1, 0])
    mouse.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    np.testing.assert_array_equal(
        back.varm["spexlvm_mask_signs"], mouse.varm["spexlvm_mask_signs"]
    )
    # out of date signs: a clear error
    mouse.varm["spexlvm_mask_signs"] = np.full((3, 1), 2, dtype=np.int8)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        get_signs(mouse, get_mask(mouse)[0])


def test_merged_factor_takes_the_larger_sets_signs():
    genes = [f"G{i}" for i in range(6)]
    adata = make_adata(genes)
    net = pd.DataFrame(
        {
            "source": ["BIG"] * 4 + ["SMALL"] * 3,
            "target": ["G0", "G1", "G2", "G3", "G1", "G2", "G4"],
            "weight": [1, 1, -1, 1, -1, 1, -1],  # SMALL disagrees on G1, G2; adds G4
        }
    )
    with pytest.warns(UserWarning, match="merged"):
        add_gene_sets(adata, net, nested="merge", nested_containment=0.6)
    assert adata.uns["spexlvm_mask"]["names"].tolist() == ["BIG + SMALL"]
    np.testing.assert_array_equal(adata.varm["spexlvm_mask_signs"][:, 0], [1, 1, -1, 1, -1, 0])


TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def test_saved_toy_network_matches_pbmc():
    """The offline example's saved net: decoupler's long format, every target a gene of
    pbmc68k_reduced, every program with up and down targets."""
    net = pd.read_csv(TUTORIALS / "data" / "toy_signed_net.tsv", sep="\t")
    assert list(net.columns) == ["source", "target", "weight"]
    assert set(net["weight"]) == {-1, 1}
    adata = spexlvm.datasets.pbmc68k_reduced()
    assert net["target"].isin(adata.var_names).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # +-1 weights, all found: no warning
        report = add_gene_sets(adata, net)
    assert report["kept"].all() and (adata.uns["spexlvm_mask"]["n_negative"] > 0).all()


@pytest.mark.slow
def test_signed_network_example_runs():
    """tutorials/signed_network.py: every toy program's factor scores its cell type
    higher than the other cells (the signs oriented it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "signed_network", TUTORIALS / "signed_network.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = module.main()
    assert (table["mean score in type"] > table["mean score elsewhere"] + 0.5).all(), table
