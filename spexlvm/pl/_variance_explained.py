"""Bar chart of the variance explained by the top factors."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from ._utils import KIND_COLORS, KIND_LABELS, factor_kinds, factor_names, get_results
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["variance_explained"]


def _figsize(n_bars: int) -> tuple[float, float]:
    """Figure size that gives every bar label room."""
    return 6.4, max(2.5, 0.28 * n_bars + 1.2)


def variance_explained(
    adata: AnnData,
    *,
    n_top: int = 20,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Horizontal bar chart of the factors that explain the most variance.

    Bars show ``adata.uns[key]["r2"]`` (written by :func:`spexlvm.tl.fit`), largest on
    top. Annotated factors (named after their gene sets) and unannotated sparse and
    dense factors get different colours (Okabe-Ito, colour-blind safe). Gene-set names
    are shortened with :func:`spexlvm.pl.short_name`.

    Parameters
    ----------
    adata
        AnnData with the results of :func:`spexlvm.tl.fit`.
    n_top
        Number of factors to show.
    key
        ``key_added`` given to :func:`spexlvm.tl.fit`.
    ax
        Axes to draw into; a new figure when ``None``.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow`` (and does not show
        when saving).
    save
        ``True`` saves to ``scanpy.settings.figdir`` as
        ``spexlvm_variance_explained.png``; a path saves there.

    Returns
    -------
    The Axes, unless the figure was shown.

    Examples
    --------
    >>> spexlvm.tl.fit(adata, spexlvm.datasets.gene_sets("hallmark"), n_dense=1)
    >>> spexlvm.pl.variance_explained(adata, n_top=15)
    """
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top!r}.")
    results = get_results(adata, key)
    names = factor_names(adata, key)
    kinds = factor_kinds(adata, key)
    r2 = np.asarray(results["r2"], dtype=np.float64).reshape(-1)
    if r2.size != len(names):
        raise ValueError(
            f"adata.uns[{key!r}] has {r2.size} R² values for {len(names)} factor names."
        )
    order = np.argsort(-np.nan_to_num(r2, nan=-np.inf), kind="stable")[: int(n_top)]
    labels = _unique_labels([_short_name(names[i]) for i in order])
    values = r2[order]
    bar_kinds = [kinds[i] for i in order]

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=_figsize(len(order)), layout="constrained")

    y = np.arange(len(order))[::-1]  # largest on top
    ax.barh(y, values, color=[KIND_COLORS[k] for k in bar_kinds], height=0.75, zorder=2)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlim(0, max(float(np.nanmax(values)) * 1.1, 1e-3) if values.size else 1.0)
    ax.set_xlabel("variance explained (R²)")
    ax.set_ylabel("factor")
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    total = results.get("r2_total")
    title = f"Top {len(order)} of {len(names)} factors"
    if total is not None:
        title += f"; all together R² {float(total):.2f}"
    # right-aligned: long factor labels make the axes narrow, the title may extend left
    ax.set_title(title, loc="right")
    present = [k for k in KIND_LABELS if k in bar_kinds]
    handles = [Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in present]
    ax.legend(handles=handles, loc="lower right", frameon=False)
    return _save_or_show(
        ax, show=show, save=save, default_name="spexlvm_variance_explained", close=created
    )


def _unique_labels(labels: list[str]) -> list[str]:
    """Make labels unique: two long names may shorten alike; number the repeats."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out
