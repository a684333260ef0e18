"""refine's ``min_kept_share``: calls kept on real sets against calls on decoys, by bar.

Reads fitted AnnData files saved by ``decoys.py --save DIR`` (fits with decoy gene sets)
and, for every bar of ``--bars``, runs ``tl.refine(adata, min_kept_share=bar)`` (all
other settings the package's) on every fit. Per bar it prints, pooled over the fits of
each group: the real sets with calls, the real sets that had calls at the smallest bar
and lose them at this one, the calls on real sets and on decoys, and the decoys' share
of the calls. It also prints the ``kept_share`` (the mean, over a set's genes, of the
data's probability of an effect) of every decoy with calls at the smallest bar, and the
quantiles of the real sets' ``kept_share`` among those with calls there, and the names
of the real sets that lose their calls at each bar.

Usage (the groups are directories of saved fits or glob patterns ending in ``.h5ad``,
labelled ``LABEL=DIR[,DIR...]``)::

    python benchmarks/refine_kept.py adam=A1,A2 cavi=C1,C2 --bars 0 0.2 0.3 0.4 0.5
"""

from __future__ import annotations

import argparse
import glob
import os
import warnings

import anndata as ad
import numpy as np
from _common import machine, quiet

import spexlvm
from spexlvm.pp import is_decoy


def calls_by_set(adata: ad.AnnData, bar: float) -> tuple[dict[str, int], np.ndarray]:
    """Refine's calls per set at ``min_kept_share=bar`` and every factor's kept_share."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped real sets' warnings
        ref = spexlvm.tl.refine(adata, min_kept_share=bar)
    kept = spexlvm.tl.kept_share(adata).to_numpy()
    return ref["factor"].value_counts().to_dict(), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="LABEL=DIR[,DIR...] of saved fits")
    parser.add_argument("--bars", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5])
    args = parser.parse_args()
    quiet()
    print(machine())
    bars = sorted(args.bars)
    for group in args.groups:
        label, dirs = group.split("=", 1)
        files = sorted(
            f
            for d in dirs.split(",")
            for f in glob.glob(d if d.endswith(".h5ad") else os.path.join(d, "*.h5ad"))
        )
        per_bar = {bar: [] for bar in bars}
        decoy_lines, real_kept = [], []
        for path in files:
            adata = ad.read_h5ad(path)
            names = np.asarray(adata.uns["spexlvm_mask"]["names"]).astype(str)
            decoy = dict(zip(names, is_decoy(names), strict=True))
            for bar in bars:
                counts, kept = calls_by_set(adata, bar)
                per_bar[bar].append((counts, decoy))
                if bar == bars[0]:
                    share = dict(zip(names, kept, strict=True))
                    for name, n in counts.items():
                        if decoy[name]:
                            decoy_lines.append(
                                f"{os.path.basename(path)} {name}: {n} calls, kept_share "
                                f"{share[name]:.3f}"
                            )
                        else:
                            real_kept.append(share[name])
        print(f"\n{label}: {len(files)} fits\n")
        print(
            "| min_kept_share | real sets with calls | real sets losing theirs | calls on "
            "real sets | calls on decoys | decoys' share |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        base = [set(c) for c, _ in per_bar[bars[0]]]
        lost_names = {}
        for bar in bars:
            real_sets = lost = real_calls = decoy_calls = 0
            for (counts, decoy), before in zip(per_bar[bar], base, strict=True):
                real = {n for n in counts if not decoy[n]}
                real_sets += len(real)
                gone = {n for n in before if not decoy[n]} - real
                lost += len(gone)
                lost_names.setdefault(bar, []).extend(sorted(gone))
                real_calls += sum(counts[n] for n in real)
                decoy_calls += sum(n for s, n in counts.items() if decoy[s])
            total = real_calls + decoy_calls
            print(
                f"| {bar:g} | {real_sets} | {lost} | {real_calls} | {decoy_calls} | "
                f"{decoy_calls / max(total, 1):.3f} ({decoy_calls}/{total}) |"
            )
        q = np.quantile(real_kept, [0.01, 0.05, 0.1, 0.25, 0.5]) if real_kept else []
        print(
            f"\nreal sets with calls at {bars[0]:g}: kept_share quantiles 1/5/10/25/50%: "
            + " / ".join(f"{v:.3f}" for v in q)
        )
        for bar in bars[1:]:
            if lost_names[bar]:
                print(f"real sets losing their calls at {bar:g}: {', '.join(lost_names[bar])}")
        print("decoys with calls at the smallest bar:")
        print("\n".join(decoy_lines) or "(none)")


if __name__ == "__main__":
    main()
