"""Bars of the decoy check: how often real and decoy gene sets are called."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import get_results
from ._utils import save_or_show as _save_or_show

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["decoy_check"]

_COLORS = {"real": "#0072B2", "decoy": "#999999"}


@plot_docs("spexlvm_decoy_check")
def decoy_check(
    adata: AnnData,
    *,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Share of real and decoy gene sets called active and significant, and refine calls.

    Draws the table of :func:`spexlvm.tl.decoy_check` (``adata.uns[key]["decoy_check"]``):
    for *active* and *significant*, the share of real sets (blue) and of decoys (grey)
    with that call; for *refine calls*, each kind's share of all calls, next to its share
    of the sets. The dashed line marks the level of the calls (``fdr``, 0.05 by
    default): decoy bars at or below it mean the calls are calibrated on these data.

    Parameters
    ----------
    adata
        AnnData after :func:`spexlvm.tl.decoy_check`.
    %(key_fit)s
    %(ax)s
    %(show)s
    %(save)s

    Returns
    -------
    The Axes, unless the figure was shown. ``ax.containers`` holds two bar containers
    (real, decoy), one bar per call each.
    """
    stored = get_results(adata, key).get("decoy_check")
    if not isinstance(stored, dict) or "sets" not in stored:
        raise KeyError(
            f"adata.uns[{key!r}]['decoy_check'] not found: run "
            f"spexlvm.tl.decoy_check(adata, gene_sets, key_added={key!r}) first."
        )
    kinds = [str(s) for s in np.asarray(stored["sets"])]
    n_sets = np.asarray(stored["n_sets"], dtype=float)
    values = {
        "active": np.asarray(stored["active"], dtype=float),
        "significant": np.asarray(stored["significant"], dtype=float),
        "refine calls": np.asarray(stored["refine_share"], dtype=float),
    }
    level = float(stored.get("fdr", 0.05))

    import matplotlib.pyplot as plt

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    x = np.arange(len(values))
    width = 0.38
    for j, kind in enumerate(kinds):
        heights = [v[j] for v in values.values()]
        bars = ax.bar(
            x + (j - 0.5) * width,
            heights,
            width=width,
            color=_COLORS.get(kind, "#CC79A7"),
            label=f"{kind} sets (n={int(n_sets[j])})",
            zorder=2,
        )
        ax.bar_label(bars, labels=[f"{100 * h:.0f}%" for h in heights], fontsize="small")
    share = n_sets / max(n_sets.sum(), 1)
    for j in range(len(kinds)):  # the share of the sets, for the refine bars
        ax.plot(
            [x[-1] + (j - 0.5) * width - width / 2, x[-1] + (j - 0.5) * width + width / 2],
            [share[j]] * 2,
            label="share of the sets" if j == 0 else None,
            color="black",
            linewidth=1.0,
            zorder=3,
        )
    ax.axhline(level, color="#D55E00", linestyle="--", linewidth=1.0, zorder=1)
    ax.text(-0.6, level, f"{level:g}", va="bottom", ha="left", fontsize="small", color="#D55E00")
    ax.set_xticks(x, ["active", "significant", "refine calls"])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share of sets (refine: of calls)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#E5E5E5", zorder=0)
    ax.legend(
        frameon=False,
        fontsize="small",
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncols=3,
        handlelength=1.2,
        columnspacing=1.0,
    )
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_decoy_check", close=created
    )
