from __future__ import annotations

import subprocess
import sys

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import spexlvm
from spexlvm.cli import DEMO_FILES, DEMO_TARGETS, main

N_OBS, N_VARS, N_FACTORS = 300, 200, 5
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A synthetic .h5ad without annotation and a GMT written from its mask."""
    path = tmp_path_factory.mktemp("cli")
    adata = spexlvm.datasets.synthetic(N_OBS, N_VARS, N_FACTORS, seed=0)
    mask = adata.varm["spexlvm_mask"]
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    gmt = path / "sets.gmt"
    lines = [
        "\t".join([name, "synthetic", *adata.var_names[mask[:, k]]])
        for k, name in enumerate(names)
    ]
    gmt.write_text("\n".join(lines) + "\n")
    plain = adata.copy()
    del plain.varm["spexlvm_mask"], plain.uns["spexlvm_mask"]
    h5ad = path / "in.h5ad"
    plain.write_h5ad(h5ad)
    annotated = path / "annotated.h5ad"
    adata.write_h5ad(annotated)
    return {"h5ad": h5ad, "annotated": annotated, "gmt": gmt, "names": names}


def test_fit_writes_results(inputs, tmp_path, capsys):
    out = tmp_path / "sub" / "out.h5ad"
    figure = tmp_path / "ve.png"
    model_dir = tmp_path / "model"
    code = main(
        [
            "fit",
            str(inputs["h5ad"]),
            "--gene-sets",
            str(inputs["gmt"]),
            "--out",
            str(out),
            "--n-dense",
            "1",
            "--max-epochs",
            "30",
            "--seed",
            "1",
            "--figure",
            str(figure),
            "--save-model",
            str(model_dir),
        ]
    )
    assert code == 0
    result = ad.read_h5ad(out)
    k = N_FACTORS + 1
    assert result.obsm["X_spexlvm"].shape == (N_OBS, k)
    assert result.varm["spexlvm_loadings"].shape == (N_VARS, k)
    assert result.varm["spexlvm_mask"].shape == (N_VARS, N_FACTORS)
    uns = result.uns["spexlvm"]
    assert list(uns["factor_names"]) == [*inputs["names"], "dense_1"]
    assert np.asarray(uns["r2"]).shape == (k,)
    assert uns["params"]["seed"] == 1
    assert uns["params"]["n_dense"] == 1
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert (model_dir / "model.pt").is_file()
    err = capsys.readouterr().err
    assert "Wrote" in err and str(out) in err
    assert "R²" in err  # the summary of the top factors
    assert "Traceback" not in err


def test_fit_uses_existing_mask(inputs, tmp_path):
    out = tmp_path / "out.h5ad"
    code = main(["-q", "fit", str(inputs["annotated"]), "--out", str(out), "--max-epochs", "5"])
    assert code == 0
    result = ad.read_h5ad(out)
    assert list(result.uns["spexlvm"]["factor_names"]) == inputs["names"]


def test_fit_engine_cavi(inputs, tmp_path):
    out = tmp_path / "out.h5ad"
    args = ["-q", "fit", str(inputs["annotated"]), "--out", str(out), "--engine", "cavi"]
    assert main([*args, "--max-epochs", "4"]) == 0
    result = ad.read_h5ad(out)
    assert result.uns["spexlvm"]["params"]["engine"] == "cavi"
    assert result.uns["spexlvm"]["params"]["n_epochs"] == 4


def test_fit_score_overlap(inputs, tmp_path):
    """--score-overlap reaches the model (with --no-learn-score-overlap 0 is independent
    scores; by default it is where the learned weight starts), so does its bound
    --score-overlap-max; a bad value is a clear error."""
    out = tmp_path / "out.h5ad"
    args = ["-q", "fit", str(inputs["annotated"]), "--out", str(out), "--max-epochs", "3"]
    assert main([*args, "--score-overlap", "0", "--no-learn-score-overlap"]) == 0
    params = ad.read_h5ad(out).uns["spexlvm"]["params"]
    assert params["score_overlap"] == 0.0 and not params["learn_score_overlap"]
    assert main([*args, "--score-overlap", "1.5"]) != 0
    assert main([*args, "--score-overlap-basis", "genes", "--no-learn-score-overlap"]) == 0
    params = ad.read_h5ad(out).uns["spexlvm"]["params"]
    assert params["score_overlap_basis"] == "genes" and params["score_overlap"] == pytest.approx(
        0.3
    )
    assert main(args) == 0  # the default: learned, starting at 0.3
    params = ad.read_h5ad(out).uns["spexlvm"]["params"]
    assert params["learn_score_overlap"] and params["score_overlap"] != pytest.approx(0.3)
    assert main([*args, "--score-overlap-basis", "cells"]) != 0
    assert main([*args, "--score-overlap-max", "0.5"]) == 0  # the bound reaches the model
    params = ad.read_h5ad(out).uns["spexlvm"]["params"]
    assert params["score_overlap_max"] == 0.5 and 0.0 < params["score_overlap"] <= 0.5
    assert main([*args, "--score-overlap-max", "0.2"]) == 0  # the learned rho starts below
    params = ad.read_h5ad(out).uns["spexlvm"]["params"]
    assert 0.0 < params["score_overlap"] <= 0.2
    fixed = [*args, "--no-learn-score-overlap", "--score-overlap", "0.5"]
    assert main([*fixed, "--score-overlap-max", "0.4"]) != 0  # a fixed rho above its bound


def test_fit_backed_with_checkpoints(inputs, tmp_path):
    """--backed leaves X on disk; --checkpoint-dir makes a rerun load the finished fit."""
    out, again = tmp_path / "out.h5ad", tmp_path / "again.h5ad"
    ckpt = tmp_path / "ckpt"
    base = ["-q", "fit", str(inputs["annotated"]), "--backed", "--max-epochs", "5"]
    assert main([*base, "--out", str(out), "--checkpoint-dir", str(ckpt)]) == 0
    assert (ckpt / "last.ckpt").is_file()
    assert main([*base, "--out", str(again), "--checkpoint-dir", str(ckpt)]) == 0
    first, second = ad.read_h5ad(out), ad.read_h5ad(again)
    np.testing.assert_array_equal(first.X, ad.read_h5ad(inputs["annotated"]).X)
    np.testing.assert_array_equal(first.varm["spexlvm_loadings"], second.varm["spexlvm_loadings"])


def test_fit_covariate_flags(tmp_path):
    """--batch-key / --categorical-covariate-keys / --continuous-covariate-keys reach the
    fit (covariate effects and their R² in the output); an unknown column exits 2."""
    adata = spexlvm.datasets.synthetic(
        N_OBS, N_VARS, N_FACTORS, seed=0, n_batches=2, batch_effect=1.0
    )
    rng = np.random.default_rng(0)
    adata.obs["donor"] = pd.Categorical(rng.choice(["a", "b", "c"], N_OBS))
    adata.obs["pct_mito"] = rng.uniform(0, 10, N_OBS)
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(src)
    base = ["-q", "fit", str(src), "--max-epochs", "5", "--out", str(out)]
    covs = ["--batch-key", "batch", "--categorical-covariate-keys", "donor"]
    covs += ["--continuous-covariate-keys", "pct_mito"]
    assert main([*base, *covs]) == 0
    result = ad.read_h5ad(out)
    assert set(result.uns["spexlvm"]["r2_covariates"]) == {"batch", "donor", "pct_mito"}
    assert result.varm["spexlvm_covariate_effects"].shape == (N_VARS, 4)
    out.unlink()
    assert main([*base, "--batch-key", "nosuch"]) == 2
    assert not out.exists()


@pytest.mark.parametrize("nested", ["keep", "merge"])
def test_fit_nested_option(inputs, tmp_path, nested):
    out = tmp_path / "out.h5ad"
    args = ["-q", "fit", str(inputs["h5ad"]), "--gene-sets", str(inputs["gmt"])]
    code = main([*args, "--out", str(out), "--max-epochs", "5", "--nested", nested])
    assert code == 0
    assert ad.read_h5ad(out).uns["spexlvm_mask"]["params"]["nested"] == nested


def test_fit_quiet_prints_nothing(inputs, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    args = ["fit", str(inputs["annotated"]), "--out", str(out), "--max-epochs", "3", "-q"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Wrote" not in captured.err


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda p, i: ["fit", str(p / "missing.h5ad"), "--out", str(p / "o.h5ad")], "not found"),
        (lambda p, i: ["fit", str(p / "bad.h5ad"), "--out", str(p / "o.h5ad")], "Cannot read"),
        (lambda p, i: ["fit", str(i["h5ad"]), "--out", str(p / "o.h5ad")], "--gene-sets"),
        (
            lambda p, i: ["fit", str(i["h5ad"]), "--gene-sets", "nosuch.gmt", "--out", "o.h5ad"],
            "no such file",
        ),
        (
            lambda p, i: ["fit", str(i["h5ad"]), "--gene-sets", "hallmark", "--out", "o.h5ad"],
            "No gene of any gene set",
        ),
        (
            lambda p, i: [
                "fit",
                str(i["annotated"]),
                "--confidence",
                "1.5",
                "--out",
                str(p / "o.h5ad"),
            ],
            "prior_confidence",
        ),
    ],
    ids=["missing", "not-h5ad", "no-gene-sets", "no-gmt", "no-overlap", "bad-confidence"],
)
def test_bad_input_exits_2(inputs, tmp_path, capsys, make_args, message):
    (tmp_path / "bad.h5ad").write_text("this is not HDF5")
    code = main(make_args(tmp_path, inputs))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "spexlvm: error:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.h5ad").exists()


def test_verbose_shows_traceback(tmp_path, capsys):
    code = main(["fit", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "o"), "-v"])
    assert code == 2
    assert "Traceback" in capsys.readouterr().err


def test_usage_errors_and_version(capsys):
    assert main([]) == 2
    assert "usage: spexlvm" in capsys.readouterr().err
    assert main(["fit", "in.h5ad"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spexlvm {spexlvm.__version__}"


def test_subprocess_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spexlvm.cli", "fit", str(tmp_path / "nope.h5ad"), "--out", "x"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for name in DEMO_FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0
    for name in ("variance_explained.png", "factors_scatter.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    adata = ad.read_h5ad(out / "pbmc68k_spexlvm.h5ad")
    assert adata.shape == (700, 765)
    names = list(adata.uns["spexlvm"]["factor_names"])
    assert names[-1] == "dense_1"
    assert adata.obsm["X_spexlvm"].shape == (700, len(names))
    assert all(gene_set in names for gene_set, _ in DEMO_TARGETS)
    # every annotated factor has >= 10 genes found
    assert adata.varm["spexlvm_mask"].sum(0).min() >= 10

    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert {"factor", "r2", "rank_r2", "auroc_spexlvm", "auroc_score_genes"} <= set(summary)
    assert summary["rank_r2"].iloc[:10].tolist() == list(range(1, 11))
    auroc = summary.dropna(subset=["auroc_spexlvm"]).set_index("factor")
    assert set(auroc.index) == {gene_set for gene_set, _ in DEMO_TARGETS}
    for gene_set, cell_type in DEMO_TARGETS:
        assert auroc.loc[gene_set, "auroc_cell_type"] == cell_type
        assert 0.0 <= auroc.loc[gene_set, "auroc_spexlvm"] <= 1.0
        assert 0.5 < auroc.loc[gene_set, "auroc_score_genes"] <= 1.0

    err = capsys.readouterr().err
    assert "AUROC" in err
    assert "Traceback" not in err


def _signed_network(adata) -> pd.DataFrame:
    """The synthetic annotation as a long signed network: weight = sign of the planted
    loading (+1 for false positives)."""
    mask, truth = adata.varm["spexlvm_mask"], adata.varm["W_true"]
    rows = []
    for k, name in enumerate(adata.uns["spexlvm_mask"]["names"]):
        for g in np.flatnonzero(mask[:, k]):
            sign = np.sign(truth[g, k]) if truth[g, k] != 0 else 1.0
            rows.append((str(name), adata.var_names[g], int(sign)))
    return pd.DataFrame(rows, columns=["source", "target", "weight"])


@pytest.mark.parametrize("suffix", [".tsv", ".csv.gz"])
def test_fit_network_table_writes_tables(inputs, tmp_path, capsys, suffix):
    """A long-format network (CSV/TSV) as --gene-sets: its signs reach the annotation;
    scores, loadings and refined sets are written next to OUT.h5ad."""
    net = _signed_network(ad.read_h5ad(inputs["annotated"]))
    path = tmp_path / f"net{suffix}"
    net.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    out = tmp_path / "res.h5ad"
    args = ["fit", str(inputs["h5ad"]), "--gene-sets", str(path), "--out", str(out)]
    assert main([*args, "--max-epochs", "30", "--prior-confidence", "0.95"]) == 0
    err = capsys.readouterr().err
    assert "deprecated" not in err
    result = ad.read_h5ad(out)
    assert result.uns["spexlvm"]["params"]["prior_confidence"] == 0.95
    signs = result.varm["spexlvm_mask_signs"]
    mask = result.varm["spexlvm_mask"]
    assert set(np.unique(signs[mask])) == {-1, 1}
    names = [str(n) for n in result.uns["spexlvm"]["factor_names"]]
    scores = pd.read_csv(tmp_path / "res_scores.tsv", sep="\t", index_col=0)
    loadings = pd.read_csv(tmp_path / "res_loadings.tsv", sep="\t", index_col=0)
    assert list(scores.columns) == names and list(loadings.columns) == names
    assert list(scores.index) == list(result.obs_names)
    assert list(loadings.index) == list(result.var_names)
    np.testing.assert_allclose(scores.to_numpy(), result.obsm["X_spexlvm"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loadings.to_numpy(), result.varm["spexlvm_loadings"], rtol=1e-5, atol=1e-6
    )
    refined = spexlvm.pp.read_gmt(tmp_path / "res_refined.gmt")
    assert refined == spexlvm.tl.refined_gene_sets(result)
    assert set(refined) <= set(names)
    for what in ("res_scores.tsv", "res_loadings.tsv", "res_refined.gmt"):
        assert str(tmp_path / what) in err


def test_fit_options_renamed_and_no_tables(inputs, tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    args = ["fit", str(inputs["annotated"]), "--out", str(out), "--max-epochs", "3"]
    assert main([*args, "--confidence", "0.9", "--no-tables"]) == 0
    err = capsys.readouterr().err
    assert "--confidence is deprecated; use --prior-confidence" in err
    assert ad.read_h5ad(out).uns["spexlvm"]["params"]["prior_confidence"] == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5ad"]


def test_fit_network_table_errors(inputs, tmp_path, capsys):
    bad = tmp_path / "net.csv"
    pd.DataFrame({"tf": ["A"], "gene": ["gene_0"]}).to_csv(bad, index=False)
    out = tmp_path / "o.h5ad"
    assert main(["fit", str(inputs["h5ad"]), "--gene-sets", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs the columns source and target" in err and "Traceback" not in err
    assert not out.exists()


def test_fit_case_flags(tmp_path):
    """Mouse-style title-case genes: matched to upper-case sets automatically (warning),
    --case-sensitive turns it off (no gene found: exit 2)."""
    adata = spexlvm.datasets.synthetic(N_OBS, N_VARS, N_FACTORS, seed=0)
    mask = adata.varm["spexlvm_mask"]
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    gmt = tmp_path / "upper.gmt"
    lines = [
        "\t".join([name, "na", *(g.upper() for g in adata.var_names[mask[:, k]])])
        for k, name in enumerate(names)
    ]
    gmt.write_text("\n".join(lines) + "\n")
    del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    adata.var_names = [g.title() for g in adata.var_names]
    src, out = tmp_path / "in.h5ad", tmp_path / "o.h5ad"
    adata.write_h5ad(src)
    base = ["-q", "fit", str(src), "--gene-sets", str(gmt), "--out", str(out)]
    with pytest.warns(UserWarning, match="ignoring case"):
        assert main([*base, "--max-epochs", "3", "--no-tables"]) == 0
    assert ad.read_h5ad(out).uns["spexlvm_mask"]["params"]["case_sensitive"] is False
    out.unlink()
    assert main([*base, "--case-sensitive"]) == 2
    assert not out.exists()


def test_run_demo_is_importable_from_the_cli():
    """run_demo moved to spexlvm._demo; the command line re-exports it."""
    from spexlvm import _demo, cli

    assert cli.run_demo is _demo.run_demo
    assert cli.DEMO_TARGETS is _demo.DEMO_TARGETS
