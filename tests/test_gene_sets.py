from __future__ import annotations

import gzip
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spexlvm
from spexlvm.pp import add_gene_sets, get_mask, read_gmt
from spexlvm.pp._gene_sets import get_prior

# tests that opt into merging check its warning where it is the subject
pytestmark = pytest.mark.filterwarnings("ignore:nested='(merge|resolve)' merged:UserWarning")

GENES = ["A1", "B2", "C3", "D4", "E5", "F6", "G7", "H8"]

# Hand-made example: n_genes / n_found known exactly.
SETS = {
    "S1": ["A1", "B2", "C3", "X1"],  # 4 genes, 3 found
    "S2": ["D4", "E5"],  # 2 genes, 2 found
    "S3": ["X1", "X2", "X3", "H8"],  # 4 genes, 1 found -> too few (min_genes=2)
    "S4": ["A1", "B2", "C3", "D4", "E5", "F6", "G7"],  # 7 genes, 7 found -> too many
    "S5": [],  # empty
}


def make_adata(var_names=GENES, **var_cols) -> ad.AnnData:
    rng = np.random.default_rng(0)
    var = pd.DataFrame(var_cols, index=pd.Index(list(var_names)))
    return ad.AnnData(rng.normal(size=(5, len(var_names))).astype(np.float32), var=var)


def write_gmt(path, sets, *, crlf=False):
    nl = "\r\n" if crlf else "\n"
    text = nl.join("\t".join([name, "na", *genes]) for name, genes in sets.items()) + nl
    path.write_text(text, encoding="utf-8", newline="")
    return path


def assert_uns_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            assert_uns_equal(a[k], b[k])
        elif isinstance(a[k], np.ndarray):
            assert isinstance(b[k], np.ndarray), k
            assert a[k].shape == b[k].shape, k
            if a[k].dtype.kind in "UO":
                assert b[k].dtype.kind in "UO", k
                assert [str(x) for x in a[k]] == [str(x) for x in b[k]], k
            else:
                assert a[k].dtype == b[k].dtype, k
                np.testing.assert_array_equal(a[k], b[k])
        else:
            assert type(a[k]) is type(b[k]), k
            assert a[k] == b[k], k


# ---------------------------------------------------------------------------------------
# Coverage and mask
# ---------------------------------------------------------------------------------------


def test_exact_coverage():
    adata = make_adata()
    report = add_gene_sets(adata, SETS, min_genes=2, max_genes=6)
    assert list(report.index) == ["S1", "S2", "S3", "S4", "S5"]
    assert report["n_genes"].tolist() == [4, 2, 4, 7, 0]
    assert report["n_found"].tolist() == [3, 2, 1, 7, 0]
    np.testing.assert_allclose(report["fraction"], [0.75, 1.0, 0.25, 1.0, 0.0])
    assert report["kept"].tolist() == [True, True, False, False, False]
    assert report["reason"].tolist() == [
        "",
        "",
        "too few genes found",
        "too large",
        "too small",  # the empty set has fewer genes than min_genes itself
    ]
    assert report["merged_into"].tolist() == [""] * 5
    assert report["factor"].tolist() == ["S1", "S2", "", "", ""]
    assert report["n_prior"].tolist() == [3, 2, 0, 0, 0]
    assert "n_found_full" not in report  # no adata.raw, no full_genes

    mask = adata.varm["spexlvm_mask"]
    assert mask.dtype == bool
    assert mask.shape == (8, 2)
    expected = np.zeros((8, 2), dtype=bool)
    expected[[0, 1, 2], 0] = True
    expected[[3, 4], 1] = True
    np.testing.assert_array_equal(mask, expected)

    uns = adata.uns["spexlvm_mask"]
    assert uns["names"].tolist() == ["S1", "S2"]
    assert uns["names"].dtype.kind == "U"
    assert uns["n_genes"].tolist() == [4, 2]
    assert uns["n_found"].tolist() == [3, 2]
    cov = uns["coverage"]
    assert cov["name"].tolist() == list(SETS)
    assert cov["kept"].dtype == bool
    assert cov["reason"].tolist() == report["reason"].tolist()
    assert uns["params"] == {
        "min_genes": 2,
        "max_genes": 6,
        "gene_symbols": "",
        "case_sensitive": True,
        "nested": "keep",
        "nested_containment": 0.8,
        "merge_fraction": 0.5,
        "full_genes": "",
        "signed": False,
    }
    assert uns["n_negative"].tolist() == [0, 0]
    assert uns["n_prior"].tolist() == [3, 2]
    assert uns["merged"]["name"].size == 0 and uns["nested"]["subset"].size == 0
    assert uns["matching"] == {
        "n_set_genes": 11,
        "n_matched": 8,
        "n_case_only": 0,
        "n_multiple": 0,
    }
    assert "spexlvm_mask_prior" not in adata.varm  # nothing nested: the mask is the prior

    m, names = get_mask(adata)
    np.testing.assert_array_equal(m, expected)
    assert names.tolist() == ["S1", "S2"]


def test_order_kept_and_default_bounds():
    adata = make_adata()
    sets = {"Z": ["H8"], "A": ["A1", "B2"], "M": ["C3"]}
    report = add_gene_sets(adata, sets)
    assert report["kept"].all()
    assert adata.uns["spexlvm_mask"]["names"].tolist() == ["Z", "A", "M"]
    assert adata.uns["spexlvm_mask"]["params"]["max_genes"] == -1


def test_same_mask_from_gmt_dict_and_dataframe(tmp_path):
    sets = {k: v for k, v in SETS.items() if k != "S5"}
    long = pd.DataFrame(
        [(s, g) for s, genes in sets.items() for g in genes], columns=["source", "target"]
    )
    weighted = long.assign(weight=1.0)
    weighted.loc[len(weighted)] = ["S1", "H8", 0.0]  # weight 0: dropped
    masks = []
    for gs in (
        sets,
        write_gmt(tmp_path / "s.gmt", sets),
        str(tmp_path / "s.gmt"),
        long,
        weighted,
        long.rename(columns={"source": "term", "target": "gene"}),
        long.rename(columns={"source": "gs_name", "target": "gene_symbol"}),
        pd.Series(sets),
    ):
        adata = make_adata()
        add_gene_sets(adata, gs, min_genes=2)
        masks.append(get_mask(adata))
    for m, n in masks[1:]:
        np.testing.assert_array_equal(m, masks[0][0])
        np.testing.assert_array_equal(n, masks[0][1])
    assert masks[0][1].tolist() == ["S1", "S2", "S4"]


def test_gzip_gmt(tmp_path):
    sets = {"S1": ["A1", "B2"], "S2": ["C3"]}
    plain = write_gmt(tmp_path / "s.gmt", sets)
    gz = tmp_path / "s.gmt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_gmt(gz) == sets
    adata = make_adata()
    add_gene_sets(adata, gz)
    assert adata.uns["spexlvm_mask"]["names"].tolist() == ["S1", "S2"]


def test_gene_symbols_on_ensembl_index():
    ens = [f"ENSG{i:011d}" for i in range(6)]
    symbols = ["A1", "B2", "C3", "A1", None, "D4"]  # A1 twice, one missing
    adata = make_adata(ens, symbol=symbols)
    report = add_gene_sets(adata, {"S": ["A1", "D4", "Q9"]}, gene_symbols="symbol")
    assert report.loc["S", "n_found"] == 2
    np.testing.assert_array_equal(
        adata.varm["spexlvm_mask"][:, 0], [True, False, False, True, False, True]
    )
    assert adata.uns["spexlvm_mask"]["params"]["gene_symbols"] == "symbol"


def test_case_insensitive_mouse_symbols():
    adata = make_adata(["Cdk1", "Ccnb1", "Mki67", "Actb"])
    sets = {"G2M": ["CDK1", "CCNB1", "MKI67", "TOP2A"]}
    with pytest.raises(ValueError, match="case_sensitive=False"):
        add_gene_sets(adata, sets, case_sensitive=True)
    with pytest.warns(UserWarning, match="ignoring case") as rec:  # automatic (None)
        add_gene_sets(adata, sets)
    assert rec[0].filename == __file__
    assert adata.uns["spexlvm_mask"]["params"]["case_sensitive"] is False
    np.testing.assert_array_equal(adata.varm["spexlvm_mask"][:, 0], [1, 1, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit: no warning
        report = add_gene_sets(adata, sets, case_sensitive=False)
    assert report.loc["G2M", "n_found"] == 3
    np.testing.assert_array_equal(adata.varm["spexlvm_mask"][:, 0], [1, 1, 1, 0])
    assert adata.uns["spexlvm_mask"]["params"]["case_sensitive"] is False
    assert adata.uns["spexlvm_mask"]["matching"] == {
        "n_set_genes": 4,
        "n_matched": 3,
        "n_case_only": 3,
        "n_multiple": 0,
    }


def test_mouse_data_against_human_sets_matches_automatically():
    """mESC (mouse title-case symbols) against the human hallmark sets: ignoring case is
    chosen automatically, with a warning naming both ways to make it explicit."""
    from spexlvm.datasets import gene_sets, mesc

    adata = mesc()
    hallmark = gene_sets("hallmark")
    with pytest.warns(UserWarning, match="ignoring case") as rec:
        auto = add_gene_sets(adata, hallmark, min_genes=15)
    message = str(rec[0].message)
    assert "case_sensitive=False" in message and "case_sensitive=True" in message
    assert rec[0].filename == __file__
    # the lost-genes warning no longer suggests case_sensitive=False (already applied)
    assert not any("case_sensitive=False" in str(r.message) for r in rec[1:])
    info = adata.uns["spexlvm_mask"]
    assert info["params"]["case_sensitive"] is False
    assert info["matching"]["n_matched"] > 1000  # vs 2 genes matched exactly
    explicit = add_gene_sets(adata.copy(), hallmark, min_genes=15, case_sensitive=False)
    pd.testing.assert_frame_equal(auto, explicit)
    with pytest.raises(ValueError, match="Every gene set was filtered out"):
        add_gene_sets(adata, hallmark, min_genes=15, case_sensitive=True)


def test_case_auto_keeps_exact_matching_when_it_finds_most():
    """Human symbols: no switch; a few case-only hits (3 exact vs 6) do not switch either."""
    adata = make_adata(["CDK1", "CCNB1", "Top2a", "MKI67", "ACTB", "GAPDH"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lost-genes warning is not under test
        add_gene_sets(adata, {"G2M": ["CDK1", "CCNB1", "TOP2A", "MKI67"]})
    assert adata.uns["spexlvm_mask"]["params"]["case_sensitive"] is True
    np.testing.assert_array_equal(adata.varm["spexlvm_mask"][:, 0], [1, 1, 0, 1, 0, 0])
    mouse = make_adata(["Cdk1", "Ccnb1", "Top2a", "Mki67", "Actb", "Gapdh"])
    with pytest.warns(UserWarning, match="lost more than half"):
        add_gene_sets(mouse, {"G2M": ["CDK1", "CCNB1", "TOP2A", "Mki67"], "H": ["Actb", "Gapdh"]})
    assert mouse.uns["spexlvm_mask"]["params"]["case_sensitive"] is True
    with pytest.raises(TypeError, match="case_sensitive"):
        add_gene_sets(adata, {"G2M": ["CDK1"]}, case_sensitive="auto")


def test_h5ad_round_trip(tmp_path):
    ens = [f"ENSMUSG{i:011d}" for i in range(8)]
    adata = make_adata(ens, symbol=[g.lower() for g in GENES])
    add_gene_sets(
        adata,
        SETS,
        key="gs",
        min_genes=2,
        max_genes=6,
        gene_symbols="symbol",
        case_sensitive=False,
    )
    add_gene_sets(adata, {"only": ["a1"]}, gene_symbols="symbol")  # default key, max None
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for key in ("gs", "spexlvm_mask"):
        assert_uns_equal(adata.uns[key], back.uns[key])
        assert back.varm[key].dtype == bool
        np.testing.assert_array_equal(adata.varm[key], back.varm[key])
        for m, n in zip(get_mask(adata, key), get_mask(back, key), strict=True):
            np.testing.assert_array_equal(m, n)


def test_copy_leaves_input_untouched():
    adata = make_adata()
    before = adata.copy()
    out = add_gene_sets(adata, SETS, copy=True)
    assert isinstance(out, ad.AnnData)
    assert out is not adata
    assert "spexlvm_mask" in out.varm and "spexlvm_mask" in out.uns
    assert "spexlvm_mask" not in adata.varm and "spexlvm_mask" not in adata.uns
    np.testing.assert_array_equal(adata.X, before.X)
    assert list(adata.varm) == list(before.varm) and list(adata.uns) == list(before.uns)


def test_logging(caplog):
    adata = make_adata()
    with (
        caplog.at_level(logging.INFO, logger="spexlvm.pp"),
        pytest.warns(UserWarning, match="lost more than half") as record,
    ):
        add_gene_sets(adata, {f"L{i}": ["A1", "X1", "X2", "X3"] for i in range(5)})
    assert "Kept 5 of 5 gene sets" in caplog.text
    (warning,) = record  # one warning for all sets
    message = str(warning.message)
    assert "5 of the 5 kept gene sets" in message
    assert "'L0' (1 of 4 genes found), 'L1' (1 of 4 genes found), 'L2'" in message
    assert "and 2 more" in message
    assert warning.filename == __file__  # points at the caller's line


def test_lost_genes_warning_names_the_fix():
    """More than half of a set's genes not found: a warning with the likely fix."""
    # mouse data (Cdk1) against human sets (CDK1): case_sensitive=False
    mouse = make_adata(["Cdk1", "Ccnb1", "Top2a", "Mki67", "Actb", "Gapdh"])
    sets = {"G2M": ["CDK1", "CCNB1", "TOP2A", "Mki67"], "HOUSE": ["Actb", "Gapdh"]}
    with pytest.warns(UserWarning, match=r"1 of the 2 kept gene sets.*'G2M' \(1 of 4") as rec:
        add_gene_sets(mouse, sets)
    assert "3 of their genes match only ignoring case" in str(rec[0].message)
    assert "case_sensitive=False" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost ignoring case: no warning
        add_gene_sets(mouse, sets, case_sensitive=False)
    # Ensembl IDs against symbols: gene_symbols=
    ens = make_adata([f"ENSG{i:011d}" for i in range(6)] + ["CDK1"])
    with pytest.warns(UserWarning, match=r"look like Ensembl IDs.*gene_symbols="):
        add_gene_sets(ens, {"G2M": ["CDK1", "CCNB1", "TOP2A"]})
    # a gene selection with adata.raw holding the lost genes: INFO only, no warning
    adata = make_redundant()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_gene_sets(adata, {"S": ["G0", "R0", "R1", "R2"]})  # 1 of 4 found, 4 in raw


def test_string_conversion_and_missing_genes():
    adata = make_adata()
    report = add_gene_sets(adata, {1: ["A1", None, np.nan, "A1"], "two": ("B2",)})
    assert list(report.index) == ["1", "two"]
    assert report.loc["1", "n_genes"] == 1


def test_bundled_collections():
    hallmark = spexlvm.datasets.gene_sets("hallmark")
    reactome = spexlvm.datasets.gene_sets("reactome")
    assert len(hallmark) == 50
    assert 1600 <= len(reactome) <= 1630
    assert "HALLMARK_G2M_CHECKPOINT" in hallmark
    assert "CDK1" in hallmark["HALLMARK_G2M_CHECKPOINT"]
    assert all(isinstance(g, str) for genes in hallmark.values() for g in genes)
    with pytest.raises(ValueError, match="hallmark"):
        spexlvm.datasets.gene_sets("kegg")


# ---------------------------------------------------------------------------------------
# Redundancy, nested sets and the gene selection
# ---------------------------------------------------------------------------------------

UNIVERSE = [f"G{i}" for i in range(30)]
# raw (before a gene selection) also holds R0..R4
REDUNDANT = {
    "DUP_A": [f"G{i}" for i in range(10)],  # 10 genes
    "DUP_B": [f"G{i}" for i in range(9)] + ["G10"],  # 9 shared: Jaccard 9/11 = 0.82
    "BROAD": [f"G{i}" for i in range(10, 30)],  # 20 genes
    "SPECIFIC": [f"G{i}" for i in range(10, 15)] + ["R0", "R1"],  # 5 found, all in BROAD
    "OTHER": ["G25", "G26", "G0", "R2", "Q1"],  # 3 found, overlaps but not nested
}


def make_redundant() -> ad.AnnData:
    adata = make_adata(UNIVERSE)
    raw = make_adata([*UNIVERSE, "R0", "R1", "R2", "R3", "R4"])
    adata.raw = raw
    return adata


def test_redundancy_report_exact(caplog):
    adata = make_redundant()
    with (
        caplog.at_level(logging.INFO, logger="spexlvm.pp"),
        pytest.warns(UserWarning, match="merged 1 gene set") as record,
    ):
        report = add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    assert report["n_genes"].tolist() == [10, 10, 20, 7, 5]
    assert report["n_found"].tolist() == [10, 10, 20, 5, 3]
    assert report["kept"].tolist() == [True, False, True, True, True]
    assert report["reason"].tolist() == ["", "merged", "", "", ""]
    assert report["merged_into"].tolist() == ["", "DUP_A", "", "", ""]
    assert report["factor"].tolist() == [
        "DUP_A + DUP_B",
        "DUP_A + DUP_B",
        "BROAD",
        "SPECIFIC",
        "OTHER",
    ]
    # DUP_A is the union (11 genes); BROAD leaves the 5 genes of SPECIFIC to it
    assert report["n_prior"].tolist() == [11, 0, 15, 5, 3]
    # adata.raw: SPECIFIC lost R0, R1 and OTHER lost R2 to the gene selection
    assert report["n_found_full"].tolist() == [10, 10, 20, 7, 4]
    assert report["n_removed"].tolist() == [0, 0, 0, 2, 1]

    uns = adata.uns["spexlvm_mask"]
    assert uns["names"].tolist() == ["DUP_A + DUP_B", "BROAD", "SPECIFIC", "OTHER"]
    assert uns["n_prior"].tolist() == [11, 15, 5, 3]
    assert uns["merged"]["name"].tolist() == ["DUP_B"]
    assert uns["merged"]["into"].tolist() == ["DUP_A"]
    assert uns["merged"]["factor"].tolist() == ["DUP_A + DUP_B"]
    np.testing.assert_allclose(uns["merged"]["jaccard"], [10 / 11])  # DUP_B in the union
    assert uns["nested"]["subset"].tolist() == ["SPECIFIC"]
    assert uns["nested"]["superset"].tolist() == ["BROAD"]
    assert uns["nested"]["n_shared"].tolist() == [5]
    np.testing.assert_allclose(uns["nested"]["containment"], [1.0])
    assert uns["params"]["full_genes"] == "adata.raw"
    assert uns["matching"] == {
        "n_set_genes": 34,
        "n_matched": 30,
        "n_case_only": 0,
        "n_multiple": 0,
    }

    mask, prior = adata.varm["spexlvm_mask"], adata.varm["spexlvm_mask_prior"]
    genes = list(adata.var_names)
    np.testing.assert_array_equal(mask[:, 0], [g in REDUNDANT["DUP_A"] + ["G10"] for g in genes])
    np.testing.assert_array_equal(prior[:, 0], mask[:, 0])
    np.testing.assert_array_equal(
        prior[:, 1], [g in REDUNDANT["BROAD"][5:] for g in genes]
    )  # G15..G29
    np.testing.assert_array_equal(prior[:, 2:], mask[:, 2:])
    (warning,) = [w for w in record if "merged" in str(w.message)]
    message = str(warning.message)
    assert "'DUP_B' into 'DUP_A'" in message and "'DUP_A + DUP_B'" in message
    assert "nested='keep'" in message  # how to keep them apart
    assert warning.filename == __file__
    assert "'SPECIFIC in BROAD'" in caplog.text
    assert "removed 3 of" in caplog.text


def test_redundancy_off():
    adata = make_redundant()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # keeping every set: no merge warning
        report = add_gene_sets(adata, REDUNDANT, min_genes=2)  # the default keeps every set
    assert report["kept"].all()
    assert report["factor"].tolist() == list(REDUNDANT)
    assert adata.uns["spexlvm_mask"]["names"].tolist() == list(REDUNDANT)
    assert report["n_prior"].tolist() == report["n_found"].tolist()
    assert "spexlvm_mask_prior" not in adata.varm
    assert adata.uns["spexlvm_mask"]["params"]["nested"] == "keep"
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested=None)  # None: keep
    assert adata.uns["spexlvm_mask"]["params"]["nested"] == "keep"
    # merge only: DUP_B merged, BROAD keeps SPECIFIC's genes
    with pytest.warns(UserWarning, match="nested='merge' merged 1 gene set"):
        report = add_gene_sets(adata, REDUNDANT, min_genes=2, nested="merge")
    assert report["merged_into"].tolist() == ["", "DUP_A", "", "", ""]
    assert report["n_prior"].tolist() == [11, 0, 20, 5, 3]
    assert "spexlvm_mask_prior" not in adata.varm
    # a stale prior mask from an earlier call is removed
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    assert "spexlvm_mask_prior" in adata.varm
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="keep")
    assert "spexlvm_mask_prior" not in adata.varm


def test_nested_merge_or_cede():
    adata = make_adata(UNIVERSE)
    sets = {"SMALL": UNIVERSE[:9], "LARGE": UNIVERSE[:10]}  # 90% of LARGE: merged
    report = add_gene_sets(adata, sets, nested="resolve")
    assert report["merged_into"].tolist() == ["LARGE", ""]
    # named after its members, the larger set first
    assert adata.uns["spexlvm_mask"]["names"].tolist() == ["LARGE + SMALL"]
    report = add_gene_sets(adata, sets, nested="resolve", merge_fraction=0.95)  # a part
    assert report["kept"].all()
    assert report["n_prior"].tolist() == [9, 1]
    assert adata.uns["spexlvm_mask"]["nested"]["subset"].tolist() == ["SMALL"]
    # nested_containment: S has 9 of its 10 genes in L
    sets = {"S": [*UNIVERSE[:9], "G29"], "L": UNIVERSE[:24]}  # S: 10 genes, 42% of L
    add_gene_sets(adata, sets, nested="resolve", nested_containment=0.95)
    assert adata.uns["spexlvm_mask"]["nested"]["subset"].size == 0
    add_gene_sets(adata, sets, nested="resolve", nested_containment=0.9)
    assert adata.uns["spexlvm_mask"]["nested"]["subset"].tolist() == ["S"]
    assert adata.varm["spexlvm_mask_prior"][:, 1].sum() == 15  # L leaves G0..G8 to S


def test_nested_chains_and_direct_parents():
    adata = make_adata(UNIVERSE)
    sets = {
        "ROOT": UNIVERSE[:24],  # 24 genes
        "MID": UNIVERSE[:16],  # 2/3 of ROOT: merged into it
        "PART": UNIVERSE[:6],  # 6/16 of MID, its direct parent: keeps its genes
        "TINY": UNIVERSE[:5],  # 5/6 of PART: merged into PART
    }
    report = add_gene_sets(adata, sets, nested="resolve")
    assert report["merged_into"].tolist() == ["", "ROOT", "", "PART"]
    assert adata.uns["spexlvm_mask"]["names"].tolist() == ["ROOT + MID", "PART + TINY"]
    assert report["n_prior"].tolist() == [18, 0, 6, 0]
    nested = adata.uns["spexlvm_mask"]["nested"]
    assert nested["subset"].tolist() == ["PART + TINY"]
    assert nested["superset"].tolist() == ["ROOT + MID"]


def test_full_genes_argument():
    adata = make_adata(UNIVERSE)
    report = add_gene_sets(adata, REDUNDANT, full_genes=[*UNIVERSE, "R0", "Q1"])
    assert report["n_removed"].tolist() == [0, 0, 0, 1, 1]
    assert adata.uns["spexlvm_mask"]["params"]["full_genes"] == "full_genes"
    with pytest.raises(TypeError, match="single string"):
        add_gene_sets(adata, REDUNDANT, full_genes="G1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"merge_fraction": 0.0}, "merge_fraction"),
        ({"nested_containment": 1.5}, "nested_containment"),
        ({"nested": "drop"}, "nested must be one of"),
    ],
)
def test_error_redundancy_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_gene_sets(make_adata(), SETS, **kwargs)


def test_gene_set_overlaps():
    adata = make_redundant()
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    df = spexlvm.pp.gene_set_overlaps(adata)
    rows = {(a, b): r for a, b, r in zip(df["set_a"], df["set_b"], df.itertuples(), strict=True)}
    assert set(rows) == {
        ("SPECIFIC", "BROAD"),
        ("OTHER", "BROAD"),
        ("OTHER", "DUP_A + DUP_B"),
        ("DUP_A + DUP_B", "BROAD"),
        ("SPECIFIC", "DUP_A + DUP_B"),  # G10 (from DUP_B, merged into DUP_A)
    }
    r = rows[("SPECIFIC", "BROAD")]
    assert (r.n_a, r.n_b, r.n_shared, r.relation) == (5, 20, 5, "nested")
    assert r.jaccard == pytest.approx(0.25) and r.containment == 1.0
    r = rows[("OTHER", "BROAD")]
    assert (r.n_shared, r.relation) == (2, "overlap")
    assert df["jaccard"].is_monotonic_decreasing
    assert len(spexlvm.pp.gene_set_overlaps(adata, min_jaccard=0.2)) == 1


def test_model_prior_uses_nested_sets():
    adata = make_redundant()
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    spexlvm.SpexLVM.setup_anndata(adata)
    slab = spexlvm.SpexLVM(adata).module.slab.numpy()
    prior = adata.varm["spexlvm_mask_prior"]
    np.testing.assert_allclose(slab, np.where(prior, 1.0, 0.01), rtol=1e-6)
    # BROAD's genes shared with SPECIFIC count as unannotated in BROAD's factor
    assert slab[adata.var_names.get_loc("G12"), 1] == pytest.approx(0.01)
    assert slab[adata.var_names.get_loc("G12"), 2] == 1.0


def test_get_prior_errors():
    adata = make_redundant()
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    mask, _ = get_mask(adata)
    np.testing.assert_array_equal(get_prior(adata, mask), adata.varm["spexlvm_mask_prior"])
    weights = mask * 0.5
    adata.varm["spexlvm_mask_prior"] = weights
    np.testing.assert_array_equal(get_prior(adata, mask), weights)
    adata.varm["spexlvm_mask_prior"] = ~mask
    with pytest.raises(ValueError, match="annotates genes that"):
        get_prior(adata, mask)
    adata.varm["spexlvm_mask_prior"] = mask * 2.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_prior(adata, mask)
    with pytest.raises(ValueError, match="out of date"):
        get_prior(adata, mask[:, :2])


def test_redundancy_h5ad_round_trip(tmp_path):
    adata = make_redundant()
    add_gene_sets(adata, REDUNDANT, min_genes=2, nested="resolve")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert_uns_equal(adata.uns["spexlvm_mask"], back.uns["spexlvm_mask"])
    assert back.varm["spexlvm_mask_prior"].dtype == bool
    np.testing.assert_array_equal(
        back.varm["spexlvm_mask_prior"], adata.varm["spexlvm_mask_prior"]
    )


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_error_no_overlap_ensembl():
    ens = [f"ENSG{i:011d}" for i in range(8)]
    adata = make_adata(ens, symbol=GENES, other=list("abcdefgh"))
    with pytest.raises(ValueError, match=r"(?s)ENSG0.*look like Ensembl.*gene_symbols='symbol'"):
        add_gene_sets(adata, SETS)


def test_error_no_overlap_generic():
    with pytest.raises(ValueError, match=r"(?s)No gene of any gene set.*'Q1'.*'A1'"):
        add_gene_sets(make_adata(), {"S": ["Q1", "Q2"]})


def test_error_everything_filtered():
    with pytest.raises(
        ValueError, match=r"min_genes=5, max_genes=None.*largest .* is 3 \(set 'S1'\)"
    ):
        add_gene_sets(make_adata(), {k: SETS[k] for k in ("S1", "S2")}, min_genes=5)


@pytest.mark.parametrize("bad", [42, ["A1", "B2"], np.zeros(3), None])
def test_error_wrong_type(bad):
    with pytest.raises(TypeError, match="gene_sets must be"):
        add_gene_sets(make_adata(), bad)


def test_error_genes_as_string():
    with pytest.raises(TypeError, match="single string"):
        add_gene_sets(make_adata(), {"S": "A1"})


def test_error_dataframe_columns():
    df = pd.DataFrame({"set": ["S"], "genes": ["A1"]})
    with pytest.raises(ValueError, match=r"'source', 'target'.*found \['set', 'genes'\]"):
        add_gene_sets(make_adata(), df)


def test_error_gene_symbols_column():
    with pytest.raises(KeyError, match=r"not a column of adata.var.*\['sym'\]"):
        add_gene_sets(make_adata(sym=GENES), SETS, gene_symbols="symbol")


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_error_duplicated_var_names():
    adata = make_adata(["A1", "A1", "B2"])
    with pytest.raises(ValueError, match=r"var_names_make_unique\(\)"):
        add_gene_sets(adata, SETS)


def test_error_empty_name():
    with pytest.raises(ValueError, match="non-empty"):
        add_gene_sets(make_adata(), {"": ["A1"]})


def test_error_bounds():
    with pytest.raises(ValueError, match="smaller than min_genes"):
        add_gene_sets(make_adata(), SETS, min_genes=3, max_genes=2)
    with pytest.raises(ValueError, match="No gene sets given"):
        add_gene_sets(make_adata(), {})


def test_error_missing_gmt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        add_gene_sets(make_adata(), tmp_path / "nope.gmt")


def test_read_gmt_errors(tmp_path):
    dup = tmp_path / "dup.gmt"
    dup.write_text("S1\tna\tA1\nS2\tna\tB2\nS1\tna\tC3\n")
    with pytest.raises(ValueError, match="duplicated gene-set names 'S1'"):
        read_gmt(dup)
    spaces = tmp_path / "spaces.gmt"
    spaces.write_text("S1 na A1 B2\n")
    with pytest.raises(ValueError, match="line 1: no tab"):
        read_gmt(spaces)
    noname = tmp_path / "noname.gmt"
    noname.write_text("S1\tna\tA1\n\tna\tB2\n")
    with pytest.raises(ValueError, match="line 2: empty gene-set name"):
        read_gmt(noname)


def test_read_gmt_empty_set(tmp_path):
    p = tmp_path / "e.gmt"
    p.write_text("EMPTY\tna\nS\tna\tA1\t\n")
    assert read_gmt(p) == {"EMPTY": [], "S": ["A1"]}


def test_get_mask_errors():
    adata = make_adata()
    with pytest.raises(KeyError, match=r"Run spexlvm.pp.add_gene_sets\(adata"):
        get_mask(adata)
    add_gene_sets(adata, SETS, min_genes=2)
    adata.uns["spexlvm_mask"]["names"] = np.array(["S1"])
    with pytest.raises(ValueError, match="out of date"):
        get_mask(adata)


# ---------------------------------------------------------------------------------------
# GMT parsing properties
# ---------------------------------------------------------------------------------------

# Names and genes: printable unicode (letters, digits, punctuation, symbols), possibly with
# inner spaces, never leading/trailing whitespace, tabs or line breaks.
_token = st.text(
    st.characters(categories=("L", "N", "P", "S"), exclude_characters="\t\r\n"),
    min_size=1,
    max_size=12,
)
_field = st.builds(lambda a, b: f"{a} {b}" if b else a, _token, st.one_of(st.just(""), _token))
_gene_sets = st.dictionaries(
    _field, st.lists(_token, unique=True, max_size=8), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=_gene_sets, data=st.data())
def test_read_gmt_round_trip(tmp_path_factory, sets, data):
    lines = []
    for name, genes in sets.items():
        genes = list(genes)
        # duplicated genes inside a set
        for g in data.draw(st.lists(st.sampled_from(genes), max_size=3)) if genes else []:
            first = genes.index(g)  # insert after the first occurrence: order is kept
            genes.insert(data.draw(st.integers(first + 1, len(genes))), g)
        desc = data.draw(st.sampled_from(["na", "http://x.org/" + name, "", "d d"]))
        line = "\t".join([name, desc, *genes])
        line += data.draw(st.sampled_from(["", "\t", "\t\t", " ", "\t \t"]))  # trailing
        lines.append(line)
        for _ in range(data.draw(st.integers(0, 2))):  # blank lines
            lines.append(data.draw(st.sampled_from(["", " ", "\t", "\t\t"])))
    if data.draw(st.booleans()):
        lines.insert(0, "")
    nl = data.draw(st.sampled_from(["\n", "\r\n"]))
    text = nl.join(lines) + data.draw(st.sampled_from(["", nl, nl + nl]))
    raw = text.encode("utf-8")
    if data.draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw  # BOM
    path = tmp_path_factory.mktemp("gmt") / "sets.gmt"
    if data.draw(st.booleans()):
        raw = gzip.compress(raw)
        path = path.with_suffix(".gmt.gz")
    path.write_bytes(raw)

    out = read_gmt(path)
    assert out == sets
    assert list(out) == list(sets)


@settings(max_examples=50, deadline=None)
@given(sets=_gene_sets)
def test_read_gmt_crlf_equals_lf(tmp_path_factory, sets):
    d = tmp_path_factory.mktemp("gmt")
    assert read_gmt(write_gmt(d / "a.gmt", sets, crlf=True)) == read_gmt(
        write_gmt(d / "b.gmt", sets)
    )


# ---------------------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------------------


def _synthetic_sets(adata) -> dict[str, list[str]]:
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    mask = adata.varm["spexlvm_mask"]
    return {n: list(adata.var_names[mask[:, j]]) for j, n in enumerate(names)}


def test_same_fit_from_gmt_dict_and_dataframe(small_data, run_fit, tmp_path):
    sets = _synthetic_sets(small_data())
    long = pd.DataFrame(
        [(s, g, 1.0) for s, genes in sets.items() for g in genes],
        columns=["source", "target", "weight"],
    )
    fits = []
    for gene_sets in (sets, write_gmt(tmp_path / "sets.gmt", sets), long):
        adata = small_data()
        del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
        run_fit(adata, gene_sets=gene_sets, n_dense=1, max_epochs=30)
        fits.append(adata)
    for other in fits[1:]:
        assert list(other.uns["spexlvm"]["factor_names"]) == [*sets, "dense_1"]
        np.testing.assert_array_equal(other.varm["spexlvm_mask"], fits[0].varm["spexlvm_mask"])
        np.testing.assert_array_equal(
            other.varm["spexlvm_loadings"], fits[0].varm["spexlvm_loadings"]
        )
        np.testing.assert_array_equal(other.obsm["X_spexlvm"], fits[0].obsm["X_spexlvm"])


def test_fit_merges_near_duplicates(small_data, run_fit):
    adata = small_data()
    sets = _synthetic_sets(adata)
    first = next(iter(sets))
    genes = sets[first]
    # same size, one gene swapped: 90% of the genes shared
    outside = next(g for g in adata.var_names if g not in genes)
    copy = [*genes[: int(0.9 * len(genes))], outside]
    copy += [g for g in genes if g not in copy][: len(genes) - len(copy)]
    sets = {first: genes, "COPY": copy, **{k: v for k, v in sets.items() if k != first}}
    del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    with pytest.warns(UserWarning, match="merged 1 gene set"):
        run_fit(adata, gene_sets=sets, max_epochs=20, nested="merge")

    names = list(adata.uns["spexlvm"]["factor_names"])
    # one factor for the pair, named after both
    assert names == [f"{first} + COPY", *(k for k in sets if k not in (first, "COPY"))]
    merged = adata.uns["spexlvm_mask"]["merged"]
    assert merged["name"].tolist() == ["COPY"] and merged["into"].tolist() == [first]
    assert spexlvm.tl.factor_name(adata, "COPY") == spexlvm.tl.factor_name(adata, first)
    assert merged["jaccard"][0] >= 0.8
    np.testing.assert_array_equal(
        adata.varm["spexlvm_mask"][:, 0], adata.var_names.isin([*genes, outside])
    )
    coverage = adata.uns["spexlvm_mask"]["coverage"]
    assert coverage["reason"][list(coverage["name"]).index("COPY")] == "merged"


@pytest.mark.filterwarnings("ignore:59 of the 59 kept gene sets lost:UserWarning")
def test_every_reactome_set_kept_on_pbmc():
    """pbmc68k_reduced (.raw), Reactome sets with >= 10 genes found: 135 sets, 135 factors."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    sets = spexlvm.datasets.gene_sets("reactome")
    with pytest.warns(UserWarning, match="134 of the 135 kept gene sets lost more than half"):
        report = add_gene_sets(adata, sets, min_genes=10)
    found = [n for n, genes in sets.items() if len(set(genes) & set(adata.var_names)) >= 10]
    assert len(found) == 135
    assert adata.uns["spexlvm_mask"]["names"].tolist() == found  # each under its own name
    assert report["factor"][report["kept"]].tolist() == found
    assert "REACTOME_NEUTROPHIL_DEGRANULATION" in found
    # merging is opt-in: the old default made 59 factors of them
    with pytest.warns(UserWarning, match="merged 76 gene set"):
        add_gene_sets(adata, sets, min_genes=10, nested="resolve")
    assert adata.uns["spexlvm_mask"]["names"].size == 59


def test_write_gmt_in_pp_round_trips_and_old_names_work(tmp_path):
    """pp.write_gmt (moved from tl._refine) writes what read_gmt reads; the old names work."""
    from spexlvm.pp import _gene_sets

    sets = {"A": ["g1", "g2"], "B B": ["g3"]}
    path = spexlvm.pp.write_gmt(sets, tmp_path / "s.gmt", description={"A": "first"})
    assert read_gmt(path) == sets
    assert path.read_text().splitlines()[0] == "A\tfirst\tg1\tg2"
    assert spexlvm.tl.write_gmt is spexlvm.pp.write_gmt
    assert spexlvm.tl._refine.write_gmt is spexlvm.pp.write_gmt
    # spexlvm.pp._gene_sets re-exports the names that moved to the split modules
    for name in ("add_gene_sets", "read_gmt", "write_gmt", "GeneSets", "MERGED_SEP", "NESTED"):
        assert hasattr(_gene_sets, name), name
    assert _gene_sets.add_gene_sets is spexlvm.pp.add_gene_sets


def test_read_gmt_latin1_fallback_is_a_warning(tmp_path):
    """A file that is not UTF-8 is read as Latin-1, and the user is told (not only a log)."""
    path = tmp_path / "sets.gmt"
    path.write_bytes("CAF\xc9_SET\tna\tG1\tG2\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="not valid UTF-8.*Save the file as UTF-8"):
        sets = spexlvm.pp.read_gmt(path)
    assert sets == {"CAF\u00c9_SET": ["G1", "G2"]}


def test_set_overlap_is_the_correlation_of_gene_means():
    """``set_overlap``: shared genes (signed) over ``sqrt(n_k n_l)``, unit diagonal, PSD;
    the correlation of two sets' gene means when genes vary independently."""
    from spexlvm.pp._nested import set_overlap

    signs = np.zeros((6, 3), dtype=np.int8)
    signs[:4, 0] = 1  # 4 genes
    signs[2:5, 1] = 1  # 3 genes, 2 shared with set 0
    signs[2, 2], signs[5, 2] = -1, 1  # 2 genes, one shared (with the opposite sign)
    c = set_overlap(signs)
    np.testing.assert_allclose(np.diagonal(c), 1.0)
    assert c[0, 1] == pytest.approx(2 / np.sqrt(12))
    assert c[0, 2] == pytest.approx(-1 / np.sqrt(8))
    assert c[1, 2] == pytest.approx(-1 / np.sqrt(6))
    assert np.linalg.eigvalsh(c).min() > -1e-12
    genes = np.random.default_rng(0).normal(size=(200_000, 6))
    means = genes @ signs / np.sqrt(np.abs(signs).sum(0))
    np.testing.assert_allclose(np.corrcoef(means.T), c, atol=0.01)
