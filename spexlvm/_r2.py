"""The one computation of the variance explained (R²) by each factor.

``R²_k = 1 - SS_res,k / SS_tot`` over the observed entries of the centred data, where the
residual is the data minus the factor's own rank-1 reconstruction ``x_k w_k^T``; the total
R² uses the full reconstruction ``X W^T`` (plus the fitted effects of known covariates).
:meth:`spexlvm.SpexLVM.get_r2` (scores from the module, on its device, as torch tensors),
:func:`spexlvm.tl.variance_explained` and :func:`spexlvm.pl.variance_explained` (scores and
loadings stored in the AnnData, numpy) all add their chunks of cells to a
:class:`R2Accumulator`: the arithmetic works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["R2Accumulator"]


class R2Accumulator:
    """Sums of squares of the centred data and of the per-factor and full residuals.

    Memory: one number per factor, whatever the number of cells and genes (the per-factor
    residual is reduced chunk by chunk, ``SS_res,k - SS_tot`` =
    ``sum_g (-2 w_gk (y^T x_k)_g + w_gk^2 (o^T x_k^2)_g)``).
    """

    def __init__(self) -> None:
        self.ss_tot = 0.0
        # per factor, minus sum(y^2) (added at the end): an array or tensor after `add`
        self.ss_res: Any = 0.0
        self.ss_res_total = 0.0

    def add(self, y: Any, o: Any | None, s: Any, w: Any, known: Any | None = None) -> None:
        """Add a chunk of cells.

        Parameters
        ----------
        y
            The centred data of the chunk, cells x genes (0 where missing).
        o
            Observed mask (1 observed, 0 missing) or ``None`` when every entry is observed.
        s
            The cells' scores, cells x factors.
        w
            The loadings, genes x factors.
        known
            The fitted effects of known covariates (cells x genes), in the total only.
        """
        sumsq = float((y * y).sum())
        self.ss_tot += sumsq
        cross = y.T @ s
        # per gene: sum over its observed cells of x_k^2 (without a mask the same for all)
        sq = (s * s).sum(0) if o is None else o.T @ (s * s)
        if o is None and known is None:
            # complete data: ||Y - S W^T||^2 = ||Y||^2 - 2 tr(W^T Y^T S) + tr(S^T S W^T W)
            # from the G x K cross-product, without forming the cells x genes residual
            fit = float((w * cross).sum())
            self.ss_res_total += sumsq - 2.0 * fit + float(((s.T @ s) * (w.T @ w)).sum())
        else:
            resid = y - s @ w.T
            if known is not None:
                resid = resid - known
            if o is not None:
                resid = resid * o
            self.ss_res_total += float((resid * resid).sum())
        self.ss_res = self.ss_res + (-2.0 * (w * cross).sum(0) + (w * w * sq).sum(0))

    def r2(self) -> tuple[Any, float]:
        """R² per factor (array or tensor, like the inputs) and the total R².

        Both are 0 when the data have no variance (``SS_tot = 0``).
        """
        if self.ss_tot <= 0:
            return self.ss_res * 0.0, 0.0
        per_factor = 1.0 - (self.ss_tot + self.ss_res) / self.ss_tot
        return per_factor, 1.0 - self.ss_res_total / self.ss_tot
