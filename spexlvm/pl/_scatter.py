"""Scatter plot of two factors' cell scores."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import (
    NA_COLOR,
    category_colors,
    factor_names,
    get_scores,
    legend_outside,
    resolve_factor,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["scatter"]


@plot_docs("spexlvm_scatter")
def scatter(
    adata: AnnData,
    x: str | int,
    y: str | int,
    *,
    color: str | None = None,
    robust: bool | float = True,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Axes | None:
    """Cell scores of two factors against each other.

    Reads the scores from ``adata.obsm[f"X_{key}"]`` and the factor names from
    ``adata.uns[key]["factor_names"]`` (written by :func:`spexlvm.tl.fit`).

    Parameters
    ----------
    %(adata_fit)s
    x, y
        Factors on the x and y axes: the full name
        (``"REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"``), the short name of
        :func:`spexlvm.pl.short_name` (``"MHC class II antigen presentation"``; any case,
        prefix optional) or the column index. An unknown name raises a :class:`KeyError`
        that lists close matches.
    color
        Column of ``adata.obs`` to colour the cells by. Categorical columns (and strings
        or booleans) get a legend, with the colours of ``adata.uns[f"{color}_colors"]``
        when present (scanpy's convention), else a colour-blind-safe palette; numeric
        columns get a colour bar (viridis). Cells with a missing value are grey.
    robust
        Axis limits that a few extreme cells cannot squash: ``True`` sets each axis to
        the 0.5-99.5 percentiles of the scores (plus a 5% margin), a float ``q`` to the
        ``q`` to ``100 - q`` percentiles, except on a side without a real outlier (the
        extreme within a further 25% of that range), which keeps its extreme cell;
        ``False`` shows every cell. Cells beyond the
        limits stay in the scatter (at their true scores) and are marked at the edge of
        the axes by hollow black circles (``ax.lines``), with a note of how many.
    %(key_fit)s
    %(ax)s
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow`` (and does not show
        when saving).
    %(save)s
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.scatter` (``s``, ``alpha``, ``cmap``, ...).

    Returns
    -------
    The Axes, unless the figure was shown. All cells are one
    :class:`~matplotlib.collections.PathCollection` (``ax.collections[0]``), drawn in a
    fixed random order so that no group hides another.

    Examples
    --------
    >>> spexlvm.pl.scatter(
    ...     adata,
    ...     "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION",
    ...     "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR",
    ...     color="bulk_labels",
    ... )
    """
    names = factor_names(adata, key)
    scores = get_scores(adata, key)
    ix, iy = resolve_factor(adata, x, key), resolve_factor(adata, y, key)
    sx, sy = scores[:, ix], scores[:, iy]

    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")

    n = adata.n_obs
    kwargs.setdefault("s", float(np.clip(12000 / max(n, 1), 1.0, 20.0)))
    kwargs.setdefault("linewidths", 0)
    kwargs.setdefault("rasterized", n > 20000)
    order = np.random.default_rng(0).permutation(n)

    if color is None:
        kwargs.setdefault("color", "#0072B2")
        ax.scatter(sx[order], sy[order], **kwargs)
    else:
        if color not in adata.obs.columns:
            raise KeyError(
                f"color={color!r} is not a column of adata.obs; columns: "
                f"{', '.join(map(repr, adata.obs.columns[:15]))}."
            )
        values = adata.obs[color]
        if _is_categorical(values):
            _scatter_categorical(adata, ax, color, values, sx, sy, order, kwargs, Line2D)
        else:
            numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            cmap = plt.get_cmap(kwargs.pop("cmap", "viridis"))
            kwargs["cmap"] = cmap.with_extremes(bad=NA_COLOR)
            kwargs.setdefault("plotnonfinite", True)
            points = ax.scatter(sx[order], sy[order], c=numeric[order], **kwargs)
            ax.figure.colorbar(points, ax=ax, label=color, pad=0.01)
        ax.set_title(color)

    _robust_limits(ax, sx, sy, robust)
    ax.set_xlabel(f"{_short_name(names[ix])} (factor score)")
    ax.set_ylabel(f"{_short_name(names[iy])} (factor score)")
    ax.spines[["top", "right"]].set_visible(False)
    return _save_or_show(ax, show=show, save=save, default_name="spexlvm_scatter", close=created)


#: Default percentile (each side) cut by ``robust=True``.
_ROBUST_Q = 0.5


def robust_range(values: np.ndarray, q: float = _ROBUST_Q) -> tuple[float, float]:
    """Axis range that outliers cannot stretch.

    The ``q`` to ``100 - q`` percentile range with a 5% margin; on a side where the most
    extreme value lies within a further 25% of that range (no real outlier), the range
    reaches it (with the margin), so that only cells far out are cut.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return -1.0, 1.0
    # no interpolation towards an outlier when there are few cells
    lo = float(np.percentile(finite, q, method="higher"))
    hi = float(np.percentile(finite, 100.0 - q, method="lower"))
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    vmin, vmax = float(finite.min()), float(finite.max())
    lo = vmin if vmin >= lo - 0.25 * span else lo
    hi = vmax if vmax <= hi + 0.25 * span else hi
    pad = 0.05 * (hi - lo if hi > lo else span)
    return lo - pad, hi + pad


def _robust_limits(ax, sx: np.ndarray, sy: np.ndarray, robust: bool | float) -> None:
    """Clip the axes to robust ranges; mark the cells beyond them at the edge."""
    if robust is False or robust is None:
        return
    q = _ROBUST_Q if robust is True else float(robust)
    if not 0.0 <= q < 50.0:
        raise ValueError(f"robust must be True, False or a percentile in [0, 50), got {robust!r}.")
    (x0, x1), (y0, y1) = robust_range(sx, q), robust_range(sy, q)
    outside = (sx < x0) | (sx > x1) | (sy < y0) | (sy > y1)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if not outside.any():
        return
    ax.plot(
        np.clip(sx[outside], x0, x1),
        np.clip(sy[outside], y0, y1),
        ls="",
        marker="o",
        markersize=5,
        markerfacecolor="none",
        markeredgecolor="black",
        markeredgewidth=0.8,
        clip_on=False,
        zorder=5,
        label="beyond the axes",
    )
    n = int(outside.sum())
    ax.annotate(  # below the x-axis label, right-aligned
        f"{n} cell{'s' * (n > 1)} beyond the axes, shown at the edge (○)",
        xy=(1.0, 0.0),
        xycoords="axes fraction",
        xytext=(0, -40),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize="x-small",
        color="#555555",
    )


def _is_categorical(values: pd.Series) -> bool:
    return bool(
        isinstance(values.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(values)
        or pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
    )


def _scatter_categorical(adata, ax, color, values, sx, sy, order, kwargs, line_cls) -> None:
    """One PathCollection with per-cell colours, legend from proxy markers."""
    categorical = values.astype("category")
    categories = [str(c) for c in categorical.cat.categories]
    palette = category_colors(adata, color, categories)
    codes = categorical.cat.codes.to_numpy()
    lut = np.array([*palette, NA_COLOR], dtype=object)
    colors = lut[np.where(codes < 0, len(palette), codes)]
    kwargs.pop("color", None)
    ax.scatter(sx[order], sy[order], c=list(colors[order]), **kwargs)
    counts = np.bincount(codes[codes >= 0], minlength=len(categories))
    labels = [(cat, col) for cat, col, k in zip(categories, palette, counts, strict=True) if k]
    if (codes < 0).any():
        labels.append(("NA", NA_COLOR))
    handles = [
        line_cls([], [], marker="o", linestyle="", color=col, markersize=6, label=cat)
        for cat, col in labels
    ]
    legend_outside(ax, handles)
