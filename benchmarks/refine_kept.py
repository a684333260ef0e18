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
from spexlvm.tl._calls import shared_passes


def refine_counts(path: str, bars: list[float]) -> tuple[dict, dict, dict[float, dict]]:
    """One saved fit: which sets are decoys, each set's kept_share, and refine's calls per
    set at every bar. The data's passes (the scores' regression, the gene variances) are
    made once for all bars (``shared_passes``)."""
    adata = ad.read_h5ad(path)
    names = np.asarray(adata.uns["spexlvm_mask"]["names"]).astype(str)
    decoy = dict(zip(names, is_decoy(names), strict=True))
    with shared_passes(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped real sets' warnings
        kept = spexlvm.tl.kept_share(adata).to_dict()
        counts = {
            bar: spexlvm.tl.refine(adata, min_kept_share=bar)["factor"].value_counts().to_dict()
            for bar in bars
        }
    return decoy, kept, counts


def report(label: str, fits: dict[str, tuple[dict, dict, dict]], bars: list[float]) -> None:
    """The table by bar, the real sets' kept_share quantiles, the real sets losing their
    calls at each bar and the decoys with calls at the smallest bar."""
    print(f"\n{label}: {len(fits)} fits\n")
    print(
        "| min_kept_share | real sets with calls | real sets losing theirs | calls on "
        "real sets | calls on decoys | decoys' share |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    lost_names: dict[float, list[str]] = {}
    for bar in bars:
        real_sets = real_calls = decoy_calls = 0
        lost_names[bar] = []
        for decoy, _, counts in fits.values():
            real = {n for n in counts[bar] if not decoy[n]}
            real_sets += len(real)
            lost_names[bar].extend(sorted({n for n in counts[bars[0]] if not decoy[n]} - real))
            real_calls += sum(counts[bar][n] for n in real)
            decoy_calls += sum(c for n, c in counts[bar].items() if decoy[n])
        total = real_calls + decoy_calls
        print(
            f"| {bar:g} | {real_sets} | {len(lost_names[bar])} | {real_calls} | {decoy_calls} | "
            f"{decoy_calls / max(total, 1):.3f} ({decoy_calls}/{total}) |"
        )
    real_kept = [
        kept[n] for decoy, kept, counts in fits.values() for n in counts[bars[0]] if not decoy[n]
    ]
    q = np.quantile(real_kept, [0.01, 0.05, 0.1, 0.25, 0.5]) if real_kept else []
    print(
        f"\nreal sets with calls at {bars[0]:g}: kept_share quantiles 1/5/10/25/50%: "
        + " / ".join(f"{v:.3f}" for v in q)
    )
    for bar in bars[1:]:
        if lost_names[bar]:
            print(f"real sets losing their calls at {bar:g}: {', '.join(lost_names[bar])}")
    print("decoys with calls at the smallest bar:")
    lines = [
        f"{os.path.basename(path)} {n}: {c} calls, kept_share {kept[n]:.3f}"
        for path, (decoy, kept, counts) in fits.items()
        for n, c in counts[bars[0]].items()
        if decoy[n]
    ]
    print("\n".join(lines) or "(none)")


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
        report(label, {path: refine_counts(path, bars) for path in files}, bars)


if __name__ == "__main__":
    main()
