"""Factor scores through scanpy's plots: on an embedding, and by group of cells."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import factor_names, resolve_factors, unique_labels
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["dotplot", "embedding", "matrixplot", "violin"]

#: Percentile of ``|score|`` that sets the colour limits (robust to a few extreme cells).
_PERCENTILE = 99.0
#: A cell "scores high" on a factor when its standardised score exceeds this (dotplot).
_CUTOFF = 1.0
#: Percentile of ``|group mean|`` that sets the colour limits of dotplot / matrixplot.
_GROUP_PERCENTILE = 95.0


def _factors_adata(adata: AnnData, key: str = KEYS.UNS) -> AnnData:
    """Cells x factors AnnData: :func:`spexlvm.get.factors`.

    Scores as ``X``, factor names as ``var_names``; ``obs``, ``obsm`` and the
    ``*_colors`` of ``uns`` kept.
    """
    from ..get import factors

    return factors(adata, key=key)


def _selected(
    adata: AnnData, factors: Any, key: str, *, n_top: int = 8, standardize: bool = False
) -> tuple[AnnData, list[str]]:
    """The factors AnnData cut to the asked factors, with short unique names as var_names."""
    names = factor_names(adata, key)
    idx = resolve_factors(adata, factors, key, n_top=n_top)
    full = _factors_adata(adata, key)
    sub = full[:, idx].copy()
    labels = unique_labels([_short_name(names[k]) for k in idx])
    sub.var_names = labels
    sub.var["factor_name"] = [names[k] for k in idx]
    if standardize:
        x = np.asarray(sub.X, dtype=np.float64)
        sd = x.std(axis=0)
        sub.X = ((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    return sub, labels


def _robust_limit(values: np.ndarray, percentile: float) -> float:
    """Symmetric colour limit: the ``percentile`` of ``|values|`` (never 0)."""
    finite = np.abs(values[np.isfinite(values)])
    lim = float(np.percentile(finite, percentile)) if finite.size else 1.0
    return lim if lim > 0 else float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _check_groupby(adata: AnnData, groupby: str) -> None:
    if groupby not in adata.obs.columns:
        raise KeyError(
            f"groupby={groupby!r} is not a column of adata.obs; columns: "
            f"{', '.join(map(repr, adata.obs.columns[:15]))}."
        )


def _check_percentile(percentile: float) -> float:
    if not 50.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in [50, 100], got {percentile!r}.")
    return float(percentile)


@plot_docs("spexlvm_embedding")
def embedding(
    adata: AnnData,
    basis: str = "umap",
    factors: Sequence[str | int] | str | int | None = None,
    *,
    color: str | Sequence[str] | None = None,
    n_top: int = 4,
    percentile: float = _PERCENTILE,
    cmap: str = "RdBu_r",
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Axes | list[Axes] | None:
    """Factor scores on an embedding (UMAP, t-SNE, ...), one panel per factor.

    Calls :func:`scanpy.pl.embedding` on a cells x factors AnnData (the factor scores as
    ``X``, ``obs``, ``obsm`` and the colours of ``adata`` kept), so every option of
    scanpy's embedding plots works. Scores are signed: a diverging colour map centred at
    0 (red: the factor's genes up, blue: down) with symmetric limits at the
    ``percentile`` of ``|score|``, so that a few extreme cells do not wash out the rest
    (cells beyond the limit get the end colour).

    Parameters
    ----------
    adata
        AnnData with the results of :func:`spexlvm.tl.fit` and ``obsm[f"X_{basis}"]``
        (e.g. from ``sc.pp.neighbors(adata, use_rep="X_spexlvm"); sc.tl.umap(adata)``).
    basis
        Embedding in ``adata.obsm`` (``"umap"`` reads ``obsm["X_umap"]``).
    factors
        Factors to show: full names, short names (:func:`spexlvm.pl.short_name`), the name
        of a gene set merged into a factor, or column indices; ``None``: the ``n_top``
        factors with the largest R².
    color
        ``obs`` columns to show in further panels before the factors (e.g. the cell type).
    n_top
        Number of factors shown when ``factors`` is ``None``.
    percentile
        Percentile of ``|score|`` used as colour limit (``100``: the largest score).
    cmap
        Diverging colour map.
    %(key_fit)s
    ax
        Axes to draw into (one panel only); a new figure when ``None``.
    %(show)s
    %(save)s
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``ncols``, ``size``, ``frameon``, ...);
        ``vmin`` / ``vmax`` given here replace the robust limits.

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns with ``show=False`` (the Axes, or a list of
    Axes for several panels), unless the figure was shown. Panel titles are the short
    factor names.

    Examples
    --------
    >>> sc.pp.neighbors(adata, use_rep="X_spexlvm")
    >>> sc.tl.umap(adata)
    >>> spexlvm.pl.embedding(adata, "umap", factors=["MHC class II antigen presentation"])
    """
    import scanpy as sc

    percentile = _check_percentile(percentile)
    sub, labels = _selected(adata, factors, key, n_top=n_top)
    if f"X_{basis}" not in sub.obsm and basis not in sub.obsm:
        raise KeyError(
            f"adata.obsm['X_{basis}'] not found; compute the embedding first, e.g. "
            "sc.pp.neighbors(adata, use_rep='X_spexlvm'); sc.tl.umap(adata)."
        )
    extra = [] if color is None else [color] if isinstance(color, str) else list(color)
    for column in extra:
        if column not in sub.obs.columns:
            raise KeyError(f"color={column!r} is not a column of adata.obs.")
    limits = [_robust_limit(np.asarray(sub[:, lab].X).ravel(), percentile) for lab in labels]
    vmin = kwargs.pop("vmin", [None] * len(extra) + [-lim for lim in limits])
    vmax = kwargs.pop("vmax", [None] * len(extra) + limits)
    if ax is not None and len(extra) + len(labels) > 1:
        raise ValueError(
            f"ax= takes one panel but {len(extra) + len(labels)} were asked; give one factor "
            "or no ax."
        )
    kwargs.setdefault("frameon", False)
    if extra:  # room for the legend of a categorical panel before the factor panels
        kwargs.setdefault("wspace", 0.6)
    result = sc.pl.embedding(
        sub,
        basis,
        color=[*extra, *labels],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        ax=ax,
        show=False,
        **kwargs,
    )
    axes = result if isinstance(result, list) else [result]
    fig = axes[0].figure
    out = _save_or_show(
        fig, show=show, save=save, default_name="spexlvm_embedding", close=ax is None
    )
    return None if out is None else result


def _group_plot(
    kind: Literal["dotplot", "matrixplot"],
    adata: AnnData,
    groupby: str,
    factors: Any,
    *,
    n_top: int,
    cutoff: float,
    percentile: float,
    cmap: str,
    key: str,
    ax: Axes | None,
    show: bool | None,
    save: Any,
    kwargs: dict[str, Any],
) -> Any:
    import pandas as pd
    import scanpy as sc

    _check_groupby(adata, groupby)
    percentile = _check_percentile(percentile)
    sub, labels = _selected(adata, factors, key, n_top=n_top, standardize=True)
    z = sub.to_df()
    group = sub.obs[groupby]
    means = z.groupby(group.to_numpy(), observed=True).mean()
    lim = _robust_limit(means.to_numpy().ravel(), percentile)
    return_fig = bool(kwargs.pop("return_fig", False))
    kwargs.setdefault("vmin", -lim)
    kwargs.setdefault("vmax", lim)
    kwargs.setdefault("vcenter", 0.0)
    colorbar_title = kwargs.pop("colorbar_title", "mean score\n(z over all cells)")
    if kind == "dotplot":
        # size: the fraction of the group's cells beyond `cutoff` SD on the side of its mean
        sign = np.sign(means.to_numpy())
        size = np.zeros(means.shape)
        for i, g in enumerate(means.index):
            zg = z.to_numpy()[(group == g).to_numpy()]
            size[i] = (sign[i] * zg > cutoff).mean(axis=0)
        dot_size_df = pd.DataFrame(size, index=means.index, columns=means.columns)
        size_title = kwargs.pop("size_title", f"cells beyond\n{cutoff:g} SD (%)")
        dendrogram = kwargs.pop("dendrogram", False)
        swap = kwargs.pop("swap_axes", False)
        style = {k: kwargs.pop(k) for k in ("dot_max", "dot_min", "smallest_dot") if k in kwargs}
        plot = sc.pl.DotPlot(
            sub,
            labels,
            groupby,
            expression_cutoff=float(cutoff),
            dot_size_df=dot_size_df,
            ax=ax,
            **kwargs,
        )
        if dendrogram:
            plot.add_dendrogram(dendrogram_key=None if dendrogram is True else dendrogram)
        if swap:
            plot.swap_axes()
        plot = plot.style(cmap=cmap, **style).legend(
            colorbar_title=colorbar_title, size_title=size_title
        )
    else:
        plot = sc.pl.matrixplot(
            sub,
            labels,
            groupby,
            cmap=cmap,
            colorbar_title=colorbar_title,
            ax=ax,
            show=False,
            return_fig=True,
            **kwargs,
        )
    plot.make_figure()
    out = _save_or_show(
        plot.fig, show=show, save=save, default_name=f"spexlvm_{kind}", close=ax is None
    )
    if out is None:
        return None
    return plot if return_fig else plot.get_axes()


@plot_docs("spexlvm_dotplot")
def dotplot(
    adata: AnnData,
    groupby: str,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int = 10,
    cutoff: float = _CUTOFF,
    percentile: float = _GROUP_PERCENTILE,
    cmap: str = "RdBu_r",
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Factor scores by group of cells as a dot plot (:func:`scanpy.pl.dotplot`).

    Factor scores are signed and centred, so scanpy's gene-expression reading
    (colour = mean expression, size = fraction of cells expressing) is adapted:

    * scores are first **standardised** per factor over all cells (z: mean 0, SD 1), so
      that factors are comparable;
    * **colour** is the group's mean z, on a diverging map centred at 0 with symmetric
      limits at the ``percentile`` of ``|group mean|`` (red: the group scores above the
      average cell, blue: below; a mean beyond the limit gets the end colour);
    * **dot size** is the fraction of the group's cells beyond ``cutoff`` SD on the side
      of the group's mean (``z > cutoff`` for a red dot, ``z < -cutoff`` for a blue
      one): how consistently the group's cells share its direction. A big dark dot is a
      factor clearly up (red) or down (blue) in most cells of the group; a small pale
      one, a group like the average cell.

    For the group means alone, see :func:`spexlvm.pl.matrixplot`.

    Parameters
    ----------
    %(adata_fit)s
    groupby
        Categorical column of ``adata.obs`` (the cell type, cluster, ...).
    factors
        Factors (columns), full names, short names, merged-member names or indices;
        ``None``: the ``n_top`` factors with the largest R².
    n_top
        Number of factors shown when ``factors`` is ``None``.
    cutoff
        A cell counts towards the dot size when its standardised score is beyond this,
        on the side of its group's mean.
    percentile
        Percentile of the ``|group means|`` used as colour limit (``100``: the largest).
    cmap
        Diverging colour map.
    %(key_fit)s
    %(ax)s
    %(show)s
    %(save)s
    **kwargs
        Passed to :class:`scanpy.pl.DotPlot` as :func:`scanpy.pl.dotplot` does
        (``dendrogram``, ``swap_axes``, ``figsize``, ``categories_order``, ``vmin``,
        ``vmax``, ``dot_max``, ``return_fig``, ...).

    Returns
    -------
    The dict of Axes of :class:`scanpy.pl.DotPlot` (``"mainplot_ax"``, ...) unless
    shown; with ``return_fig=True`` the :class:`scanpy.pl.DotPlot` (its ``dot_color_df``
    holds the group means of z, ``dot_size_df`` the fractions).

    Examples
    --------
    >>> spexlvm.pl.dotplot(adata, "bulk_labels", n_top=8, dendrogram=True)
    """
    return _group_plot(
        "dotplot",
        adata,
        groupby,
        factors,
        n_top=n_top,
        cutoff=cutoff,
        percentile=percentile,
        cmap=cmap,
        key=key,
        ax=ax,
        show=show,
        save=save,
        kwargs=kwargs,
    )


@plot_docs("spexlvm_matrixplot")
def matrixplot(
    adata: AnnData,
    groupby: str,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int = 10,
    percentile: float = _GROUP_PERCENTILE,
    cmap: str = "RdBu_r",
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Mean standardised factor score per group of cells (:func:`scanpy.pl.matrixplot`).

    Scores are standardised per factor over all cells (z: mean 0, SD 1); each cell of
    the matrix is a group's mean z, on a diverging map centred at 0 with symmetric limits
    at the ``percentile`` of ``|group mean|`` (red: above the average cell, blue: below).
    Options as :func:`spexlvm.pl.dotplot`.

    Parameters
    ----------
    %(adata_fit)s
    groupby
        Categorical column of ``adata.obs`` (the cell type, cluster, ...).
    factors
        Factors (columns), full names, short names, merged-member names or indices;
        ``None``: the ``n_top`` factors with the largest R².
    n_top
        Number of factors shown when ``factors`` is ``None``.
    percentile
        Percentile of the ``|group means|`` used as colour limit (``100``: the largest).
    cmap
        Diverging colour map.
    %(key_fit)s
    %(ax)s
    %(show)s
    %(save)s
    **kwargs
        Passed to :func:`scanpy.pl.matrixplot` (``dendrogram``, ``swap_axes``,
        ``figsize``, ``categories_order``, ``vmin``, ``vmax``, ``return_fig``, ...).

    Returns
    -------
    The dict of Axes of :func:`scanpy.pl.matrixplot` unless shown; with
    ``return_fig=True`` the :class:`scanpy.pl.MatrixPlot` (``values_df``: the means).

    Examples
    --------
    >>> spexlvm.pl.matrixplot(adata, "bulk_labels", n_top=8)
    """
    return _group_plot(
        "matrixplot",
        adata,
        groupby,
        factors,
        n_top=n_top,
        cutoff=_CUTOFF,
        percentile=percentile,
        cmap=cmap,
        key=key,
        ax=ax,
        show=show,
        save=save,
        kwargs=kwargs,
    )


@plot_docs("spexlvm_violin")
def violin(
    adata: AnnData,
    groupby: str,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    n_top: int = 4,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Distribution of factor scores per group of cells (:func:`scanpy.pl.violin`).

    One panel per factor (titled with its short name), the raw (not standardised) scores
    of each group as a violin, with a line at 0 (the average cell).

    Parameters
    ----------
    %(adata_fit)s
    groupby
        Categorical column of ``adata.obs``.
    factors
        Factors, full names, short names, merged-member names or indices; ``None``: the
        ``n_top`` factors with the largest R².
    n_top
        Number of factors shown when ``factors`` is ``None``.
    %(key_fit)s
    ax
        Axes to draw into (one factor only).
    %(show)s
    %(save)s
    **kwargs
        Passed to :func:`scanpy.pl.violin` (``stripplot``, ``rotation``, ``size``, ...).

    Returns
    -------
    The Axes (one factor) or the list of Axes, unless shown.

    Examples
    --------
    >>> spexlvm.pl.violin(adata, "bulk_labels", factors=["MHC class II antigen presentation"])
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    _check_groupby(adata, groupby)
    sub, labels = _selected(adata, factors, key, n_top=n_top)
    if ax is not None and len(labels) > 1:
        raise ValueError(f"ax= takes one factor but {len(labels)} were asked; give one factor.")
    kwargs.setdefault("rotation", 90)
    kwargs.setdefault("stripplot", sub.n_obs <= 5000)
    kwargs.setdefault("size", 1)
    created = ax is None
    n_groups = sub.obs[groupby].nunique()
    # room below the panels for the rotated group labels
    longest = max((len(str(g)) for g in sub.obs[groupby].dropna().unique()), default=1)
    height = 2.8 + 0.075 * longest if kwargs["rotation"] else 3.6
    if len(labels) == 1:
        if ax is None:
            _, ax = plt.subplots(
                figsize=(max(3.5, 0.45 * n_groups + 1.5), height), layout="constrained"
            )
        axes = [sc.pl.violin(sub, labels, groupby, ax=ax, show=False, **kwargs)]
        result: Any = axes[0]
    else:
        # several factors: one row of panels, each with its own y axis
        n = len(labels)
        _, axes = plt.subplots(
            1, n, figsize=(n * max(3.0, 0.4 * n_groups + 1.0), height), layout="constrained"
        )
        axes = list(np.atleast_1d(axes))
        for a, label in zip(axes, labels, strict=True):
            sc.pl.violin(sub, label, groupby, ax=a, show=False, **kwargs)
        result = axes
    for a, label in zip(axes, labels, strict=True):
        a.axhline(0, color="#555555", lw=0.8, ls="--", zorder=0)
        a.set_title(label, fontsize="medium")
        a.set_ylabel("factor score")
    return (
        None
        if _save_or_show(
            axes[0].figure, show=show, save=save, default_name="spexlvm_violin", close=created
        )
        is None
        else result
    )
