"""Decoy calibration of the calls of spexlvm.tl (active, significant, refine).

Parts (``--parts``):

- ``pbmc``: scanpy's pbmc68k_reduced (``.raw``, log-normalised), hallmark sets + the
  Reactome MHC class II antigen presentation and BCR signalling sets + 30 decoys
  (:func:`spexlvm.pp.decoy_gene_sets`), every set kept (``nested="keep"``), one dense
  factor, seeds 0-2.
- ``pbmc_c8``: the choice data of the calls' rules: the same PBMCs with 50 C8 cell-type
  signatures drawn at random (per seed) among those with 15-200 genes found
  (``/work/shared/data/c8.all.v7.5.1.symbols.gmt``, not bundled) + 30 decoys, every set
  kept, one dense factor.
- ``pbmc_overlap``: the choice data of the calls' statistic where one programme is split
  among overlapping sets: the same PBMCs with the 50 hallmark sets and every C8 signature
  of monocytes, dendritic cells, B cells and NK cells (``overlap_choice.py``'s data:
  near-duplicates sharing each cell type's programme) + 30 decoys, every set kept, one
  dense factor.
- ``mesc``: spexlvm.datasets.mesc (6,000 most variable genes), hallmark + Reactome sets
  with 40-300 genes found (case-insensitive), every set kept, 30 decoys, one dense
  factor, at most 300 epochs (as benchmarks/gene_set_competition.py), seeds 0-1.
- ``synthetic``: refine's nominal vs realised FDR on simulated data with realistic
  signal: per-gene R² of the planted effects uniform in (0, 0.3) (no gap between zero
  and non-zero loadings), gene variances spread over a log-normal, nested sets, 20%
  annotation noise, 10 decoys.

For each fit: the share of decoys called active (``tl.active_factors``) and significant
(``tl.gene_set_test``, BH 0.05), the decoys' share of ``tl.refine``'s calls, and whether
the sets known to be real (PBMC: MHC II, BCR; mESC: G2M checkpoint) are active and
significant. Only ``pbmc_c8`` and ``pbmc_overlap`` are choice data (see
benchmarks/RESULTS.md). ``--save DIR`` writes every fitted AnnData to
``DIR/<part>_seed<k>.h5ad``; ``--load DIR`` reads those fits back instead of fitting (the
calls are computed from the fitted AnnData alone, so a change to a call's rule is measured
on the same fits; the fit time is then "-").
``--engine adam|cavi`` fits with that engine instead of the package's default.
``--cells N`` fits the ``pbmc`` and ``pbmc_c8`` parts on ``N`` cells drawn at random with
the seed (the few cells of a small experiment, as the mESCs' 182); the saved fits are then
named ``pbmc[_c8]_cells<N>_seed<k>``.

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/decoys.py --parts pbmc mesc synthetic
"""

from __future__ import annotations

import argparse
import os
import time

import anndata as ad
import numpy as np
import scanpy as sc
from _common import C8, machine, quiet

import spexlvm
from spexlvm.datasets._graded import graded_effects

MHC = "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"
BCR = "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR"
G2M = "HALLMARK_G2M_CHECKPOINT"
SAVE: str | None = None
LOAD: str | None = None
#: ``tl.refine``'s ``only_significant``: ``None`` (the package's default: significant sets
#: when the fit has decoys) or ``False`` (active sets, the rule before; ``--refine-gate
#: active``)
ONLY_SIGNIFICANT: bool | None = None
#: ``SpexLVM.train(engine=...)`` of every fit (``--engine``; ``None``: the package's default).
ENGINE: str | None = None
#: Cells drawn at random (per seed) for the pbmc and pbmc_c8 parts (``--cells``; ``None``:
#: all 700).
CELLS: int | None = None


def engine_kwargs() -> dict:
    """``tl.fit``'s ``engine`` keyword when ``--engine`` was given."""
    return {} if ENGINE is None else {"engine": ENGINE}


def save(adata, name: str) -> None:
    """Write the fitted AnnData when ``--save`` was given."""
    if SAVE:
        os.makedirs(SAVE, exist_ok=True)
        adata.write_h5ad(os.path.join(SAVE, f"{name}.h5ad"))


def fit_with_decoys(adata, sets: dict[str, list[str]], seed: int, **kwargs):
    """``tl.fit`` as every part fits: every set kept, one dense factor; the AnnData."""
    spexlvm.tl.fit(
        adata,
        sets,
        n_dense=1,
        seed=seed,
        nested="keep",
        enable_progress_bar=False,
        **engine_kwargs(),
        **kwargs,
    )
    return adata


def fitted(name: str, fit) -> tuple[object, str]:
    """The fitted AnnData ``name`` and the fit's wall time: read from ``--load`` when
    given, else ``fit()`` (which returns the fitted AnnData) and :func:`save`."""
    if LOAD:
        return ad.read_h5ad(os.path.join(LOAD, f"{name}.h5ad")), "-"
    start = time.perf_counter()
    adata = fit()
    wall = f"{time.perf_counter() - start:.1f}"
    save(adata, name)
    return adata, wall


def calls(adata, known: list[str]) -> tuple[dict[str, object], str]:
    """Decoy rates of the three calls and the known sets' calls, :func:`shares` and
    :func:`refined_decoys`."""
    act = spexlvm.tl.active_factors(adata)
    test = spexlvm.tl.gene_set_test(adata)
    ref = spexlvm.tl.refine(adata, only_significant=ONLY_SIGNIFICANT)
    decoy = test["decoy"].to_numpy()
    active = act["active"].to_numpy()[: len(test)]
    sig = test["pval_adj"].to_numpy() < 0.05
    on_decoy = spexlvm.pp.is_decoy(ref["factor"].to_numpy())
    out = {
        "decoys active": f"{active[decoy].sum()}/{decoy.sum()}",
        "decoys significant": f"{sig[decoy].sum()}/{decoy.sum()}",
        "real active": f"{active[~decoy].sum()}/{(~decoy).sum()}",
        "real significant": f"{sig[~decoy].sum()}/{(~decoy).sum()}",
        "refine calls on decoys": f"{on_decoy.sum()}/{len(ref)}",
        "of which added": f"{(on_decoy & (ref['change'] == 'added').to_numpy()).sum()}",
        # per set: one falsely significant large decoy can draw most of the calls above
        "decoys refined": f"{ref.loc[on_decoy, 'factor'].nunique()}/{decoy.sum()}",
    }
    for name in known:
        i = list(test.index).index(name)
        out[name] = f"{'A' if active[i] else '-'}{'S' if sig[i] else '-'}"
    return out, "\n".join([shares(act, test, known), *refined_decoys(act, test, ref)])


def refined_decoys(act, test, ref) -> list[str]:
    """One line per decoy that refine made calls on: its size, the genes its factor
    moves (``n_effect``), its adjusted p-value and the calls (the genes added by name)."""
    lines = []
    for name, calls in ref[spexlvm.pp.is_decoy(ref["factor"].to_numpy())].groupby("factor"):
        added = calls.loc[calls["change"] == "added", "gene"].tolist()
        lines.append(
            f"decoy refined: {name}, {test.loc[name, 'n_genes']} genes, n_effect "
            f"{act.loc[name, 'n_effect']}, pval_adj {test.loc[name, 'pval_adj']:.1e}: "
            f"{(calls['change'] == 'removed').sum()} removed, {len(added)} added "
            f"{', '.join(added)}".rstrip()
        )
    return lines


def shares(act, test, known: list[str]) -> str:
    """The statistics RESULTS quotes, from ``tl.active_factors`` (``act``) and
    ``tl.gene_set_test`` (``test``): ``set_share`` of every active annotated factor, and
    the known sets' ``r2_set``, decoy p-value and ``set_share`` next to the decoys'
    ``r2_set`` range."""
    on = act[(act["kind"] == "annotated") & act["active"]]
    lines = [
        "active factors' set_share: "
        + ", ".join(f"{name} {share:.2f}" for name, share in on["set_share"].items())
    ]
    r2 = test.loc[test["decoy"], "r2_set"]
    lines.append(f"decoys' r2_set: {r2.min():.4f}-{r2.max():.4f}")
    for name in known:
        lines.append(
            f"{name}: r2_set {test.loc[name, 'r2_set']:.4f}, pval {test.loc[name, 'pval']:.1e}, "
            f"set_share {act.loc[name, 'set_share']:.2f}"
        )
    return "\n".join(lines)


def row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(seed: int, out: dict[str, object], stats: str, header: list[str] | None) -> list[str]:
    """Print one fit's row (the table's header before the first) and its statistics."""
    if header is None:
        header = list(out)
        print(row(["seed", *header]))
        print(row(["---"] * (len(header) + 1)))
    print(row([seed, *out.values()]), flush=True)
    print(stats, flush=True)
    return header


def c8_signatures(adata, seed: int, n: int = 50) -> dict[str, list[str]]:
    """``n`` C8 signatures with 15-200 genes found, drawn with ``seed``."""
    genes = set(adata.var_names)
    found = {n: v for n, v in spexlvm.pp.read_gmt(C8).items() if 15 <= len(genes & set(v)) <= 200}
    names = sorted(found)
    pick = np.random.default_rng(seed).choice(len(names), size=min(n, len(names)), replace=False)
    return {names[i]: found[names[i]] for i in sorted(pick)}


def pbmc_data(seed: int, c8: bool = False) -> tuple[object, dict[str, list[str]]]:
    """The ``pbmc`` (or ``pbmc_c8``) part's AnnData for ``seed`` (``--cells`` drawn) and its
    gene sets with the 30 decoys."""
    adata = spexlvm.datasets.pbmc68k_reduced()
    if CELLS is not None:
        pick = np.random.default_rng(seed).choice(adata.n_obs, CELLS, replace=False)
        adata = adata[np.sort(pick)].copy()
    if c8:
        sets = c8_signatures(adata, seed)
    else:
        reactome = spexlvm.datasets.gene_sets("reactome")
        sets = {**spexlvm.datasets.gene_sets("hallmark"), MHC: reactome[MHC], BCR: reactome[BCR]}
    decoys = spexlvm.pp.decoy_gene_sets(adata, sets, n=30, seed=seed)
    return adata, {**sets, **decoys}


def run_pbmc(seeds: list[int], c8: bool = False) -> None:
    what = "50 random C8 signatures" if c8 else "hallmark + MHC II + BCR"
    cells = "" if CELLS is None else f", {CELLS} cells drawn per seed"
    print(f"\nPBMC (pbmc68k_reduced .raw{cells}), {what} + 30 decoys, n_dense=1\n")
    header = None
    for seed in seeds:

        def fit(seed=seed):
            return fit_with_decoys(*pbmc_data(seed, c8), seed)

        cells = "" if CELLS is None else f"_cells{CELLS}"
        adata, fit_s = fitted(f"pbmc{'_c8' if c8 else ''}{cells}_seed{seed}", fit)
        out, stats = calls(adata, [] if c8 else [MHC, BCR])
        out["fit (s)"] = fit_s
        header = report(seed, out, stats, header)


def run_pbmc_overlap(seeds: list[int]) -> None:
    from overlap_choice import data

    print("\nPBMC (pbmc68k_reduced .raw), hallmark + C8 signatures of 4 cell types + 30 decoys\n")
    header = None
    for seed in seeds:

        def fit(seed=seed):
            adata, sets, _ = data()
            decoys = spexlvm.pp.decoy_gene_sets(adata, sets, n=30, seed=seed)
            return fit_with_decoys(adata, {**sets, **decoys}, seed)

        adata, fit_s = fitted(f"pbmc_overlap_seed{seed}", fit)
        out, stats = calls(adata, [])
        out["fit (s)"] = fit_s
        header = report(seed, out, stats, header)


#: ``tl.fit``'s ``max_epochs`` of the ``mesc`` part (as benchmarks/gene_set_competition.py)
MESC_MAX_EPOCHS = 300


def mesc_base():
    """The ``mesc`` part's cells: spexlvm.datasets.mesc, 6,000 most variable genes."""
    base = spexlvm.datasets.mesc()
    sc.pp.highly_variable_genes(base, n_top_genes=6000, flavor="seurat")
    return base[:, base.var["highly_variable"]].copy()


def mesc_data(base, seed: int) -> tuple[object, dict[str, list[str]]]:
    """A copy of :func:`mesc_base`'s AnnData and its gene sets for ``seed``: hallmark +
    Reactome with 40-300 genes found (case-insensitive) and the 30 decoys."""
    sets = {**spexlvm.datasets.gene_sets("hallmark"), **spexlvm.datasets.gene_sets("reactome")}
    adata = base.copy()
    spexlvm.pp.add_gene_sets(
        adata, sets, case_sensitive=False, min_genes=40, max_genes=300, nested="keep"
    )
    mask, names = spexlvm.pp.get_mask(adata)
    genes = np.asarray(adata.var_names)
    real = {str(n): genes[mask[:, k]].tolist() for k, n in enumerate(names)}
    decoys = spexlvm.pp.decoy_gene_sets(adata, n=30, seed=seed)
    return adata, {**real, **decoys}


def run_mesc(seeds: list[int]) -> None:
    base = mesc_base()
    print("\nmESC (6,000 HVG), hallmark + Reactome 40-300 genes + 30 decoys, n_dense=1\n")
    header = None
    for seed in seeds:

        def fit(seed=seed):
            return fit_with_decoys(*mesc_data(base, seed), seed, max_epochs=MESC_MAX_EPOCHS)

        adata, fit_s = fitted(f"mesc_seed{seed}", fit)
        out, stats = calls(adata, [G2M])
        out["fit (s)"] = fit_s
        uns = adata.uns["spexlvm"]
        annotated = list(uns["factor_names"])[: int(uns["n_annotated"])]
        out["sets"] = int((~spexlvm.pp.is_decoy(annotated)).sum())
        header = report(seed, out, stats, header)


def run_synthetic(seeds: list[int], sd: str = "mean_field", overlap: float | None = None) -> None:
    print(
        f"\nloadings_sd: {sd}, score_overlap: {overlap}. Synthetic (1000 cells x 800 genes, "
        "10 factors, per-gene R2 U(0, 0.3), nested, 20% annotation noise, 10 decoys): "
        "refine at min_gene_r2=0.05\n"
    )
    print(
        row(
            [
                "seed",
                "nominal FDR",
                "added: calls",
                "added: realised FDR",
                "removed: calls",
                "removed: realised FDR",
                "calls on decoys",
            ]
        )
    )
    print(row(["---"] * 7))
    for seed in seeds:
        adata, sets, true_r2 = graded_effects(seed)
        decoys = spexlvm.pp.decoy_gene_sets(adata, sets, n=10, seed=seed)
        kwargs = {} if overlap is None else {"model_kwargs": {"score_overlap": overlap}}
        model = spexlvm.tl.fit(
            adata,
            {**sets, **decoys},
            seed=seed,
            nested="keep",
            enable_progress_bar=False,
            **engine_kwargs(),
            **kwargs,
        )
        if sd != "mean_field":  # the joint K x K posterior sd instead of the stored one
            adata.varm["spexlvm_loadings_sd"] = model.get_loadings_sd(sd).to_numpy("float32")
        adata.varm["true_r2"] = true_r2
        save(adata, f"synthetic_seed{seed}")
        names = list(adata.uns["spexlvm"]["factor_names"])
        pos = {g: i for i, g in enumerate(adata.var_names)}
        for fdr in (0.05, 0.1):
            ref = spexlvm.tl.refine(adata, fdr=fdr, only_significant=ONLY_SIGNIFICANT)
            dec = spexlvm.pp.is_decoy(ref["factor"].to_numpy())
            real = ref[~dec]
            cells = [seed, fdr]
            for change in ("added", "removed"):
                sub = real[real["change"] == change]
                r2 = np.array(
                    [
                        true_r2[pos[g], names.index(f)]
                        for g, f in zip(sub["gene"], sub["factor"], strict=True)
                    ]
                )
                wrong = (r2 < 0.05) if change == "added" else (r2 >= 0.05)
                cells += [len(sub), f"{wrong.mean():.3f}" if len(sub) else "-"]
            cells.append(int(dec.sum()))
            print(row(cells), flush=True)
        print(removal_diagnosis(adata, true_r2), flush=True)


def removal_diagnosis(adata, true_r2: np.ndarray) -> str:
    """What RESULTS quotes of a synthetic fit: how much reading ``E[x^2]`` as the posterior
    means' mean square raised refine's threshold (``(mean z^2 + score_var) / mean z^2`` over
    the planted factors), and each wrong removal at FDR 0.05 (planted R² >= 0.05) with its
    R² from the gene's regression on the scores."""
    from spexlvm.tl._calls import factor_variance, gene_variance, score_regression

    names = list(adata.uns["spexlvm"]["factor_names"])
    planted = [names.index(f"factor_{k + 1}") for k in range(true_r2.shape[1])]
    z = adata.obsm["X_spexlvm"].astype(np.float64)
    total = factor_variance(adata)
    ratio = total[planted] / (z * z).mean(0)[planted]
    lines = [f"threshold (R2 units) x {ratio.min():.2f}-{ratio.max():.2f} with mean z^2 alone"]
    ref = spexlvm.tl.refine(adata, fdr=0.05, only_significant=ONLY_SIGNIFICANT)
    removed = ref[(ref["change"] == "removed") & ~spexlvm.pp.is_decoy(ref["factor"].to_numpy())]
    coef, _ = score_regression(adata)
    var = gene_variance(adata)
    pos = {g: i for i, g in enumerate(adata.var_names)}
    for gene, factor in zip(removed["gene"], removed["factor"], strict=True):
        i, k = pos[gene], names.index(factor)
        if true_r2[i, k] >= 0.05:
            regressed = coef[i, k] ** 2 * total[k] / var[i]
            lines.append(
                f"  wrong removal {factor} {gene}: planted R2 {true_r2[i, k]:.3f}, "
                f"regressed {regressed:.3f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["pbmc", "mesc", "synthetic"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--sd",
        choices=["joint", "mean_field"],
        default="mean_field",
        help="loadings' posterior sd that refine uses (synthetic part)",
    )
    parser.add_argument("--save", default=None, help="write each fitted AnnData here")
    parser.add_argument(
        "--load", default=None, help="read the fits written by --save instead of fitting"
    )
    parser.add_argument(
        "--score-overlap",
        type=float,
        default=None,
        help="SpexLVM(score_overlap=...) of the synthetic part (default: the package's)",
    )
    parser.add_argument(
        "--refine-gate",
        choices=["auto", "active"],
        default="auto",
        help="tl.refine's sets: significant ones with decoys (auto, the package's) or active",
    )
    parser.add_argument(
        "--engine", choices=["adam", "cavi"], default=None, help="SpexLVM.train(engine=...)"
    )
    parser.add_argument(
        "--cells",
        type=int,
        default=None,
        help="pbmc and pbmc_c8 parts: fit this many cells drawn per seed",
    )
    args = parser.parse_args()
    global SAVE, LOAD, ONLY_SIGNIFICANT, ENGINE, CELLS
    ENGINE, CELLS = args.engine, args.cells
    SAVE, LOAD = args.save, args.load
    ONLY_SIGNIFICANT = None if args.refine_gate == "auto" else False
    quiet()
    print(machine())
    if "pbmc_c8" in args.parts:
        run_pbmc(args.seeds or [0, 1], c8=True)
    if "pbmc_overlap" in args.parts:
        run_pbmc_overlap(args.seeds or [0, 1])
    if "pbmc" in args.parts:
        run_pbmc(args.seeds or [0, 1, 2])
    if "mesc" in args.parts:
        run_mesc(args.seeds or [0, 1])
    if "synthetic" in args.parts:
        run_synthetic(args.seeds or [0, 1], args.sd, args.score_overlap)


if __name__ == "__main__":
    main()
