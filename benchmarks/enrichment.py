"""Enrichment of factor loadings (spexlvm.tl.enrichment, gseapy prerank): does each
factor's own planted gene set come first, and do decoy sets stay non-significant?

Synthetic data (spexlvm.datasets.synthetic, 300 cells x 200 genes, 5 factors, 20%
annotation noise), one fit per seed. Each factor's loadings are tested against the true
sets (``mask_true``) plus 20 random decoy sets of 15 genes, for the ranking options
``absolute`` (rank by |loading| or by the signed loading) and ``weight`` (gseapy's 0 =
classic KS, 1 = weighted). Reported per option: factors whose own set is first with
FDR < 0.05, decoys with FDR < 0.05 (of 20 per factor), seconds per call.

Seed 1 chose the defaults (``absolute=True``, ``weight=0``); seeds 2-4 only measured.

``--pbmc``: what the unannotated factors of a real fit are about. pbmc68k_reduced,
hallmark sets, 2 sparse + 1 dense factors, seed 0; each unannotated factor's loadings
against the 1,615 bundled Reactome sets (defaults, 1000 permutations), and the top five.

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/enrichment.py --seeds 1 2 3 4
    OMP_NUM_THREADS=1 nice python benchmarks/enrichment.py --seeds --pbmc
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine, quiet

import spexlvm

N_DECOYS, DECOY_SIZE = 20, 15


def run(seed: int, permutation_num: int) -> list[tuple]:
    adata = spexlvm.datasets.synthetic(300, 200, 5, noise=0.2, seed=seed)
    spexlvm.tl.fit(adata, progress_bar=False, seed=0)
    mask = adata.varm["mask_true"]
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    rng = np.random.default_rng(seed)
    sets = {f"true_{n}": list(adata.var_names[mask[:, k]]) for k, n in enumerate(names)}
    for i in range(N_DECOYS):
        sets[f"decoy_{i}"] = list(rng.choice(adata.var_names, DECOY_SIZE, replace=False))
    rows = []
    for absolute in (True, False):
        for weight in (0.0, 1.0):
            first = decoys = 0
            start = time.perf_counter()
            for n in names:
                df = spexlvm.tl.enrichment(
                    adata,
                    n,
                    sets,
                    absolute=absolute,
                    weight=weight,
                    permutation_num=permutation_num,
                    seed=seed,
                )
                first += bool(df["term"].iloc[0] == f"true_{n}" and df["fdr"].iloc[0] < 0.05)
                decoys += int((df["term"].str.startswith("decoy") & (df["fdr"] < 0.05)).sum())
            per_call = (time.perf_counter() - start) / len(names)
            rows.append((seed, absolute, weight, first, len(names), decoys, per_call))
    return rows


def run_pbmc() -> None:
    adata = spexlvm.datasets.pbmc68k_reduced()
    start = time.perf_counter()
    spexlvm.tl.fit(
        adata,
        spexlvm.datasets.gene_sets("hallmark"),
        n_sparse=2,
        n_dense=1,
        progress_bar=False,
        seed=0,
    )
    print(f"fit: {time.perf_counter() - start:.1f} s")
    names = list(adata.uns["spexlvm"]["factor_names"])
    w = adata.varm["spexlvm_loadings"]
    reactome = spexlvm.datasets.gene_sets("reactome")
    for factor in ("sparse_1", "sparse_2", "dense_1"):
        top = np.argsort(-np.abs(w[:, names.index(factor)]))[:8]
        start = time.perf_counter()
        df = spexlvm.tl.enrichment(adata, factor, reactome, permutation_num=1000)
        sec = time.perf_counter() - start
        print(f"\n{factor}: top genes {', '.join(adata.var_names[top])}; {sec:.1f} s")
        print(df[["term", "nes", "fdr", "n_genes"]].head(5).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4])
    parser.add_argument("--permutation-num", type=int, default=200)
    parser.add_argument("--pbmc", action="store_true", help="Also the PBMC part.")
    args = parser.parse_args()
    quiet()
    print(machine("gseapy"))
    if args.pbmc:
        run_pbmc()
    if not args.seeds:
        return
    print(
        "| seed | absolute | weight | own set first, FDR < 0.05 | decoys FDR < 0.05 | s per call |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        for seed_, absolute, weight, first, n, decoys, sec in run(seed, args.permutation_num):
            print(
                f"| {seed_} | {absolute} | {weight:g} | {first}/{n} | "
                f"{decoys}/{n * N_DECOYS} | {sec:.2f} |"
            )


if __name__ == "__main__":
    main()
