"""Lightning training plan and convergence rule for :class:`~spexlvm.SpexLVM`."""

from __future__ import annotations

import logging
import math
from collections import deque

import torch
from lightning.pytorch.callbacks import Callback
from scvi.train import LowLevelPyroTrainingPlan

from ._checkpoint import StatefulCallback
from ._module import AnalyticELBO, SpexLVMModule

logger = logging.getLogger(__name__)


_DIVERGED = (
    "Training diverged at epoch {epoch}, step {step}: {what}. Lower the learning rate "
    "(`lr=`, default 0.05) or check the input for extreme outliers."
)


class FactorwiseAdam(torch.optim.Optimizer):
    """Adam whose step counter is kept per factor, so that factors can start late.

    :class:`torch.optim.Adam` with one difference: parameters whose last dimension is the
    number of factors count Adam's steps per factor, and factors listed in
    :attr:`inactive` are left alone (no update, no moment update, no step). A factor
    held back during a warm-up therefore starts afterwards as under a fresh Adam: its
    bias correction does not assume the steps it sat out (with one shared counter, the
    moments of a late factor are corrected as if they were old, and its first steps
    after the warm-up are up to ~1.6x too long).

    Parameters
    ----------
    params
        Parameters to optimise.
    n_factors
        Size of the last dimension of the per-factor parameters.
    lr, betas, eps
        As in :class:`torch.optim.Adam`.
    """

    def __init__(
        self,
        params,
        n_factors: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.n_factors = int(n_factors)
        #: Factors that neither step nor update their moments (``None``: all step).
        self.inactive: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        """One Adam step; factors in :attr:`inactive` stay as they are."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                per_factor = p.dim() >= 1 and p.shape[-1] == self.n_factors
                if not state:
                    state["step"] = torch.zeros(
                        self.n_factors if per_factor else (), dtype=p.dtype, device=p.device
                    )
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                active = torch.ones_like(state["step"])
                if per_factor and self.inactive is not None:
                    active[self.inactive.to(p.device)] = 0.0
                state["step"].add_(active)
                t = state["step"].clamp_min(1.0)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                # moments move only where active (a = 1): m <- m + a (1 - b) (g - m)
                m.add_(active * (1.0 - beta1) * (grad - m))
                v.add_(active * (1.0 - beta2) * (grad * grad - v))
                m_hat = m / (1.0 - beta1**t)
                v_hat = v / (1.0 - beta2**t)
                p.sub_(active * group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
        return loss


class SpexLVMTrainingPlan(LowLevelPyroTrainingPlan):
    """Minibatch stochastic variational inference with the closed-form ELBO.

    The stock :class:`~scvi.train.LowLevelPyroTrainingPlan` with
    :class:`~spexlvm._module.AnalyticELBO` as the loss and :class:`torch.optim.Adam` on
    the module's parameters; it logs the negative ELBO per cell and entry as
    ``elbo_train`` and stops with a clear error when the loss is not finite.

    Parameters
    ----------
    pyro_module
        The :class:`~spexlvm._module.SpexLVMModule` to train.
    lr
        Adam learning rate.
    frozen_factors
        Factors (the unannotated ones) whose variational parameters stay at their start
        for the first ``warmup_epochs`` epochs.
    warmup_epochs
        Length of that warm-up.
    warmup_optimizer
        ``"separate"`` (default): the held-back factors keep their own Adam step counter
        (:class:`FactorwiseAdam`), so that they start after the warm-up as under a fresh
        optimiser. ``"shared"``: spexlvm 0.1's :class:`torch.optim.Adam` with zeroed
        gradients during the warm-up (one step counter for all factors).
    **kwargs
        Passed to :class:`~scvi.train.LowLevelPyroTrainingPlan`.
    """

    def __init__(
        self,
        pyro_module: SpexLVMModule,
        *,
        lr: float = 0.05,
        frozen_factors: list[int] | None = None,
        warmup_epochs: int = 0,
        warmup_optimizer: str = "separate",
        **kwargs,
    ):
        if warmup_optimizer not in ("separate", "shared"):
            raise ValueError(
                f"warmup_optimizer must be 'separate' or 'shared', got {warmup_optimizer!r}."
            )
        optim_kwargs = dict(kwargs.pop("optim_kwargs", None) or {})
        optim_kwargs.setdefault("lr", lr)
        kwargs.setdefault("loss_fn", AnalyticELBO())
        kwargs.setdefault("n_epochs_kl_warmup", None)
        super().__init__(pyro_module, optim_kwargs=optim_kwargs, **kwargs)
        # the ELBO is reported per observed entry so that its size does not depend on N x G
        self._n_entries = float(pyro_module.n_obs * pyro_module.n_vars)
        self.frozen_factors = list(frozen_factors or [])
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_optimizer = warmup_optimizer

    def configure_optimizers(self):
        """Adam; with factors held back in a warm-up, :class:`FactorwiseAdam`."""
        if self.warmup_optimizer == "separate" and self.frozen_factors and self.warmup_epochs:
            return FactorwiseAdam(
                self.module.parameters(), self.module.n_factors, **self.optim_kwargs
            )
        return super().configure_optimizers()

    def on_after_backward(self):
        """Hold the unannotated factors at their start during the warm-up epochs.

        The annotated factors first explain what their gene sets can; the unannotated
        factors then grow into what is left, instead of taking over a gene set's signal
        (an unannotated factor pays no price for a set's missing genes, so from an equal
        start it can win a set's signal and switch the annotated factor off).
        """
        if not self.frozen_factors:
            return
        optimizers = self.optimizers() if self._trainer is not None else None
        optimizer = getattr(optimizers, "optimizer", optimizers)
        if isinstance(optimizer, FactorwiseAdam):
            frozen = self.current_epoch < self.warmup_epochs
            optimizer.inactive = (
                torch.as_tensor(self.frozen_factors, dtype=torch.long) if frozen else None
            )
        if self.current_epoch >= self.warmup_epochs:
            return
        cols = torch.as_tensor(self.frozen_factors, device=self.module.w_loc.device)
        k = self.module.n_factors
        for name, param in self.module.named_parameters():
            if name.startswith("cov_"):  # covariate effects: genes x design columns
                continue
            if param.grad is not None and param.dim() >= 1 and param.shape[-1] == k:
                param.grad.index_fill_(param.dim() - 1, cols, 0.0)

    def training_step(self, batch, batch_idx):
        """One minibatch step: the negative closed-form ELBO."""
        args, kwargs = self.module._get_fn_args_from_batch(batch)
        hint = _DIVERGED
        try:
            loss = self.differentiable_loss_fn(
                self.module.model, self.module.guide, *args, **kwargs
            )
        except torch.linalg.LinAlgError as err:
            raise FloatingPointError(
                hint.format(
                    epoch=self.current_epoch,
                    step=batch_idx,
                    what="the cell-score precision matrix is no longer positive definite",
                )
            ) from err
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None and self.trainer.world_size > 1:
            # every process stops together: one that raised alone would leave the others
            # waiting for its gradients until the DDP timeout
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise FloatingPointError(
                hint.format(
                    epoch=self.current_epoch,
                    step=batch_idx,
                    what=f"the ELBO became {loss.item()}"
                    + (" (in one of the processes)" if bool(torch.isfinite(loss)) else ""),
                )
            )
        self.training_step_outputs.append(loss.detach())
        return {"loss": loss}

    def on_train_epoch_end(self):
        """Log the mean negative ELBO of the epoch (per matrix entry)."""
        outputs = self.training_step_outputs
        elbo = torch.stack(outputs).mean() / self._n_entries if outputs else torch.tensor(math.nan)
        # averaged over the processes under DDP (each saw its share of the cells)
        self.log(
            "elbo_train",
            elbo,
            prog_bar=True,
            sync_dist=self._trainer is not None and self.trainer.world_size > 1,
        )
        self.training_step_outputs.clear()


class LoadingsConvergence(StatefulCallback, Callback):
    """Stop training when every factor has settled.

    The rule follows what the tools read (each factor's loadings, their posterior
    standard deviations and the factor's scale relative to the other factors), not the
    ELBO, which keeps creeping for 5-10x longer as the horseshoe scales drift after the
    answer stopped moving. After every optimisation step an exponential moving average of
    the loading means and standard deviations and of the log factor scales is updated
    (weight ``1 - smoothing`` on the new step), which removes the step-to-step jitter of
    Adam and of the minibatch gradients without hiding a drift. After every epoch the
    average is compared, **factor by factor**, with the one ``window`` epochs earlier:

    * loadings: ``||ΔA_k|| / max(||M_k||, floor * max_j ||M_j||)``, where ``A_k`` stacks
      factor k's loading means and standard deviations and ``M_k`` its means, so a small
      factor that still moves counts as much as a large one, while a factor the data
      switched off (loadings below ``floor`` of the largest factor's) counts on the
      scale of the fit rather than on its own vanishing one;
    * scale: the relative change of the factor's scale as a fraction of the largest scale
      among factors with the same kind of prior (horseshoe or dense), the quantity
      :func:`spexlvm.tl.active_factors` reads, against ``scale_tol``: horseshoe scales
      keep drifting slowly long after the loadings stopped moving (the ELBO's creep), so
      they get a tolerance of their own.

    An epoch counts as settled when, for every factor, the loadings' change is below
    ``tol`` and the scale's change below ``scale_tol``; training stops once ``patience``
    consecutive epochs settled (and at least ``min_epochs`` have run). ``history`` records
    the largest change per epoch and ``slowest`` the factor it came from. The state
    (moving averages, snapshots, history, settled epochs) goes into checkpoints, so that a
    resumed fit stops where the uninterrupted one would have.

    Parameters
    ----------
    tol
        Largest per-factor relative change across the window for an epoch to count as
        settled.
    window
        Number of epochs between the compared averages (the model's ``train`` picks about
        10 optimisation steps).
    patience
        Number of consecutive settled epochs before stopping.
    min_epochs
        Never stop before this many epochs.
    smoothing
        Weight of the old average in the per-step moving average.
    floor
        Size, relative to the largest factor, below which a factor's change is measured
        against ``floor`` times the largest factor's size instead of its own (0.1: a
        factor with less than 1% of the largest one's variance).
    scale_tol
        Largest relative change of a factor's relative scale across the window; ``None``:
        ``2.5 * tol``.
    """

    def __init__(
        self,
        tol: float = 0.02,
        window: int = 10,
        patience: int = 3,
        min_epochs: int = 10,
        smoothing: float = 0.8,
        floor: float = 0.1,
        scale_tol: float | None = None,
    ):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}.")
        self.tol = tol
        self.window = max(1, int(window))
        self.patience = patience
        self.min_epochs = min_epochs
        self.smoothing = float(smoothing)
        self.floor = float(floor)
        self.scale_tol = 2.5 * tol if scale_tol is None else float(scale_tol)
        self._average: torch.Tensor | None = None
        self._log_scale: torch.Tensor | None = None
        self._snapshots: deque[torch.Tensor] = deque(maxlen=self.window + 1)
        self._scale_snapshots: deque[torch.Tensor] = deque(maxlen=self.window + 1)
        self._settled = 0
        self.history: list[float] = []
        self.slowest: list[int] = []
        self.stopped_epoch: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Update the moving averages (in place: no copy of the loadings per step)."""
        module = pl_module.module
        w, log_scale = module.w_loc.detach(), module.phi_loc.detach()
        if self._average is None or self._average.shape[1:] != w.shape:
            self._average = torch.stack([w, module._sd(module.w_log_sd.detach())])
            self._log_scale = log_scale.clone()
            return
        new = 1.0 - self.smoothing
        self._average[0].mul_(self.smoothing).add_(w, alpha=new)
        self._average[1].mul_(self.smoothing).add_(module._sd(module.w_log_sd.detach()), alpha=new)
        self._log_scale.mul_(self.smoothing).add_(log_scale, alpha=new)

    @staticmethod
    def _relative_scale(log_scale: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Each factor's scale over the largest one with the same kind of prior."""
        out = torch.empty_like(log_scale)
        for kind in (dense, ~dense):
            if bool(kind.any()):
                out[kind] = torch.exp(log_scale[kind] - log_scale[kind].max())
        return out

    def factor_changes(self, module) -> torch.Tensor | None:
        """Per-factor change across the window (``None`` until a window has passed).

        The larger of the loadings' change and the scale's change times
        ``tol / scale_tol``, so that one threshold, ``tol``, decides for both.
        """
        if len(self._snapshots) <= self.window:
            return None
        current, previous = self._snapshots[-1], self._snapshots[0]
        size = torch.linalg.norm(current[0], dim=0)
        denominator = torch.clamp(size, min=self.floor * float(size.max().clamp_min(1e-12)))
        loadings = torch.linalg.norm((current - previous).flatten(0, 1), dim=0) / denominator
        dense = module.dense.to(current.device)
        now = self._relative_scale(self._scale_snapshots[-1], dense)
        before = self._relative_scale(self._scale_snapshots[0], dense)
        # relative change of the relative scale (below `floor`: on the floor's scale), on
        # the loadings' tolerance scale
        scale = (now - before).abs() / torch.maximum(now, before).clamp_min(self.floor)
        return torch.maximum(loadings, scale * (self.tol / self.scale_tol))

    def on_train_epoch_end(self, trainer, pl_module):
        """Measure every factor's change and stop when all have settled."""
        if self._average is None:
            return
        self._snapshots.append(self._average.clone())
        self._scale_snapshots.append(self._log_scale.clone())
        changes = self.factor_changes(pl_module.module)
        if changes is None:
            return
        slowest = int(torch.argmax(changes))
        change = float(changes[slowest])
        self.history.append(change)
        self.slowest.append(slowest)
        pl_module.log("loadings_change", change, prog_bar=True)
        self._settled = self._settled + 1 if change < self.tol else 0
        epoch = trainer.current_epoch + 1
        if self._settled >= self.patience and epoch >= self.min_epochs:
            self.stopped_epoch = epoch
            logger.info(
                "Every factor settled after %d epochs (the one that moved most changed "
                "%.2g%% in the last %d epochs); stopping.",
                epoch,
                100 * change,
                self.window,
            )
            trainer.should_stop = True
