"""Lightning training plan of :class:`~spexlvm.SpexLVM` and its optimiser.

The convergence rule, :class:`~spexlvm.train.LoadingsConvergence`, is with the other
callbacks in :mod:`spexlvm.train._callbacks`.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from scvi.train import LowLevelPyroTrainingPlan

from .. import _cavi
from .._module import AnalyticELBO, SpexLVMModule
from .._utils import user_stacklevel

logger = logging.getLogger(__name__)


_DIVERGED = "Training diverged at epoch {epoch}, step {step}: {what}. {advice}"
_ADAM_ADVICE = (
    "Lower the learning rate (`lr=`, default 0.05) or check the input for extreme outliers."
)
_CAVI_ADVICE = (
    "Lower the scales' step size (`lr=`, default 0.2), check the input for extreme "
    "outliers, or use engine='adam'."
)


def _not_positive_definite(
    epoch: int, step: int, advice: str, what: str = "the cell-score precision matrix"
) -> FloatingPointError:
    """The error of a matrix (``what``) that stopped being positive definite."""
    return FloatingPointError(
        _DIVERGED.format(
            epoch=epoch, step=step, what=f"{what} is no longer positive definite", advice=advice
        )
    )


class FactorwiseAdam(torch.optim.Optimizer):
    """Adam whose step counter is kept per factor, so that factors can start late.

    :class:`torch.optim.Adam` with one difference: the parameters in ``per_factor`` (whose
    last dimension is the factor axis) count Adam's steps per factor, and factors listed in
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
    per_factor
        The parameters with a factor axis (last). ``None``: every parameter whose last
        dimension has ``n_factors`` entries, which mistakes a per-gene parameter for a
        per-factor one when there are as many genes (or covariate columns) as factors;
        :meth:`~spexlvm._module.SpexLVMModule.factor_parameters` names them.
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
        per_factor=None,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.n_factors = int(n_factors)
        self._per_factor = None if per_factor is None else {id(p) for p in per_factor}
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
                if self._per_factor is None:
                    per_factor = p.dim() >= 1 and p.shape[-1] == self.n_factors
                else:
                    per_factor = id(p) in self._per_factor
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
                self.module.parameters(),
                self.module.n_factors,
                per_factor=self.module.factor_parameters(),
                **self.optim_kwargs,
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
        try:
            loss = self.differentiable_loss_fn(
                self.module.model, self.module.guide, *args, **kwargs
            )
        except torch.linalg.LinAlgError as err:
            raise _not_positive_definite(self.current_epoch, batch_idx, _ADAM_ADVICE) from err
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None and self.trainer.world_size > 1:
            # every process stops together: one that raised alone would leave the others
            # waiting for its gradients until the DDP timeout
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise FloatingPointError(
                _DIVERGED.format(
                    epoch=self.current_epoch,
                    step=batch_idx,
                    what=f"the ELBO became {loss.item()}"
                    + (" (in one of the processes)" if bool(torch.isfinite(loss)) else ""),
                    advice=_ADAM_ADVICE,
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


class CAVITrainingPlan(SpexLVMTrainingPlan):
    """Coordinate ascent on the closed-form ELBO, one update per pass (``engine="cavi"``).

    Each epoch streams the minibatches once and sums their sufficient statistics (under
    DDP, over the processes too); after the last minibatch the global variational factors
    are updated (:func:`spexlvm._cavi.update`): loadings, covariate effects and noise in
    closed form, the horseshoe scales by ``scale_steps`` Adam steps (see
    :mod:`spexlvm._cavi`). Lightning runs the loop (manual
    optimisation), so checkpoints, the stopping rule and the progress bar work as with
    the gradient engine. ``elbo_train`` is the negative ELBO per entry at the start of the
    pass (exact, not a minibatch estimate).

    Parameters
    ----------
    pyro_module
        The :class:`~spexlvm._module.SpexLVMModule` to train.
    lr
        Adam learning rate of the scale steps.
    scale_steps
        Largest number of Adam steps of the horseshoe scales per pass.
    scale_rel_tol
        The scale steps of a pass stop once one lowered their loss by less than this
        fraction of it (chosen on synthetic data: ``benchmarks/RESULTS.md``, "Coordinate
        ascent"); 0 always takes ``scale_steps``.
    **kwargs
        Passed to :class:`SpexLVMTrainingPlan` (its warm-up options are not used: every
        factor is updated from the first pass).
    """

    def __init__(
        self,
        pyro_module: SpexLVMModule,
        *,
        lr: float = 0.2,
        scale_steps: int = 10,
        scale_rel_tol: float = 1e-5,
        **kwargs,
    ):
        ignored = [
            k for k in ("frozen_factors", "warmup_epochs", "warmup_optimizer") if k in kwargs
        ]
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)} in plan_kwargs are ignored with engine='cavi', which "
                "updates every factor from the first pass (no warm-up). Drop them, or use "
                "engine='adam'.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            for k in ignored:
                kwargs.pop(k)
        super().__init__(pyro_module, lr=lr, **kwargs)
        if int(scale_steps) != scale_steps or scale_steps < 0:
            raise ValueError(f"scale_steps must be a non-negative integer, got {scale_steps!r}.")
        self.scale_steps = int(scale_steps)
        self.scale_rel_tol = float(scale_rel_tol)
        self.automatic_optimization = False
        self._stats: dict[str, torch.Tensor] | None = None
        # the global KL terms of the last update, for the next pass's ELBO
        self._global_terms = _cavi.GlobalTermsCache()
        #: Negative ELBO per matrix entry at the start of the last pass (exact; ``None``
        #: before the first): what :class:`~spexlvm.train.LoadingsConvergence`'s
        #: ``elbo_tol`` compares between passes.
        self.pass_neg_elbo: float | None = None

    def configure_optimizers(self):
        """Adam on the horseshoe scales' variational parameters (the other factors are exact)."""
        return torch.optim.Adam(_cavi.scale_parameters(self.module), **self.optim_kwargs)

    def on_after_backward(self):
        """Nothing to hold back: coordinate ascent has no warm-up."""

    def _reduce(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._trainer is None or self.trainer.world_size <= 1:
            return stats
        return {k: self.trainer.strategy.reduce(v, reduce_op="sum") for k, v in stats.items()}

    def training_step(self, batch, batch_idx):
        """Add the minibatch's statistics; after the last one of the pass, update."""
        args, kwargs = self.module._get_fn_args_from_batch(batch)
        try:
            stats = _cavi.minibatch_statistics(self.module, *args, **kwargs)
        except torch.linalg.LinAlgError as err:
            raise _not_positive_definite(self.current_epoch, batch_idx, _CAVI_ADVICE) from err
        self._stats = _cavi.add_statistics(self._stats, stats)
        n_batches = self.trainer.num_training_batches if self._trainer is not None else 1
        if batch_idx + 1 < n_batches:
            return None
        total = self._reduce(self._stats)
        self._stats = None
        with torch.no_grad():
            elbo = _cavi.elbo_from_statistics(self.module, total, self._global_terms)
        if not bool(torch.isfinite(elbo)):
            raise FloatingPointError(
                _DIVERGED.format(
                    epoch=self.current_epoch,
                    step=batch_idx,
                    what=f"the ELBO became {float(elbo)}",
                    advice=_CAVI_ADVICE,
                )
            )
        optimizer = self.optimizers() if self._trainer is not None else None
        optimizer = getattr(optimizer, "optimizer", optimizer)
        try:
            _cavi.update(
                self.module,
                total,
                optimizer,
                self.scale_steps,
                self.scale_rel_tol,
                cache=self._global_terms,
            )
        except torch.linalg.LinAlgError as err:
            raise _not_positive_definite(
                self.current_epoch, batch_idx, _CAVI_ADVICE, "a loadings update's system"
            ) from err
        self.training_step_outputs.append(-elbo.detach())
        self.pass_neg_elbo = -float(elbo) / self._n_entries
        return None
