"""The callbacks of a fit: convergence rule, checkpoints, time and memory monitor.

:class:`LoadingsConvergence` stops the fit once every factor settled,
:class:`PeriodicCheckpoint` saves it (see :mod:`spexlvm.train._checkpoint`) and
:class:`FitMonitor` logs the time estimate and the memory used. The first two keep their
run state in checkpoints (:class:`StatefulCallback`), so that a resumed fit stops where the
uninterrupted one would have.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from .._utils import atomic_write
from .._utils import package_version as _package_version

logger = logging.getLogger(__name__)

CKPT_NAME = "last.ckpt"
INFO_NAME = "spexlvm_checkpoint.json"
_FORMAT = 1


#: Steps timed (after one warm-up step) before the time estimate is logged.
_PROBE_STEPS = 3


class StatefulCallback:
    """Mixin: a Lightning callback whose run state goes into checkpoints.

    Saves every instance attribute except the constructor's arguments (the settings of
    the current call win on resume); deques and tuples are stored as lists, so that the
    checkpoint loads with ``torch.load(weights_only=True)``.
    """

    def _settings(self) -> set[str]:
        names: set[str] = set()
        for cls in type(self).__mro__:
            init = cls.__dict__.get("__init__")
            if init is not None:
                names.update(inspect.signature(init).parameters)
        return names - {"self", "args", "kwargs"}

    def state_dict(self) -> dict[str, Any]:
        """The run state (not the settings) of the callback."""
        skip = self._settings()
        state = {}
        for name, value in vars(self).items():
            if name in skip:
                continue
            if isinstance(value, deque | tuple):
                value = list(value)
            if _storable(value):  # not what Lightning attaches (e.g. `log`, a bound method)
                state[name] = value
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the run state, keeping each attribute's container type."""
        for name, value in state_dict.items():
            current = getattr(self, name, None)
            if isinstance(current, deque):
                value = deque(value, maxlen=current.maxlen)
            setattr(self, name, value)


def _storable(value: Any) -> bool:
    """Whether ``torch.load(weights_only=True)`` can read the value back."""
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return True
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _storable(v) for k, v in value.items())
    return False


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
    elbo_tol
        With exact passes (coordinate ascent, whose ELBO is exact and never falls): an
        epoch also counts as settled when the negative ELBO per matrix entry fell by less
        than this since the previous epoch, and training stops once ``patience``
        consecutive epochs settled by either measure. The textbook stopping rule of
        coordinate ascent; it ends the slow tail in which factors the data switched off
        keep shrinking by a few percent per pass while the bound, and what the tools
        read, no longer change. ``None``: the loadings alone decide (the gradient
        engine, whose per-epoch ELBO is a minibatch estimate).
    elbo_rtol
        As ``elbo_tol``, but relative: an epoch counts as settled by the ELBO when it
        gained less than this fraction of everything the fit gained since the first
        epoch's ELBO. Free of the data's scale (an absolute tolerance per entry is
        crossed early on data where the loadings' prior terms weigh little against the
        data, and late where they weigh much). With both set, an epoch must meet both.
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
        elbo_tol: float | None = None,
        elbo_rtol: float | None = None,
    ):
        super().__init__()
        if elbo_tol is not None and not elbo_tol >= 0:
            raise ValueError(f"elbo_tol must be >= 0, got {elbo_tol}.")
        if elbo_rtol is not None and not elbo_rtol >= 0:
            raise ValueError(f"elbo_rtol must be >= 0, got {elbo_rtol}.")
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
        self.elbo_tol = None if elbo_tol is None else float(elbo_tol)
        self.elbo_rtol = None if elbo_rtol is None else float(elbo_rtol)
        self._first_elbo: float | None = None
        self._last_elbo: float | None = None
        self._elbo_settled = 0
        #: Whether the ELBO's rule (not the loadings') stopped the fit.
        self.stopped_by_elbo = False
        self.history: list[float] = []
        self.slowest: list[int] = []
        self.stopped_epoch: int | None = None

    @classmethod
    def record(cls, states: dict[str, Any]) -> tuple[list[float], bool]:
        """The rule's record in a checkpoint's callback ``states``.

        Its history and whether it stopped the fit (empty and ``False`` when the fit ran
        without the rule).
        """
        state = states.get(cls.__qualname__) or {}
        return list(state.get("history", [])), state.get("stopped_epoch") is not None

    def unsettled_message(self, max_epochs: int, factor_names: list[str]) -> str:
        """The warning of a fit that reached ``max_epochs`` before every factor settled."""
        if self.history:
            which = f" (most: {factor_names[self.slowest[-1]]!r})" if self.slowest else ""
            last = self.history[-1]
            if last < self.tol:  # below tol, but not yet in `patience` epochs in a row
                moved = (
                    f"the factors moved by up to {100 * last:.2g}% over the last "
                    f"{self.window} epoch(s){which}, below tol={self.tol} in "
                    f"{self._settled} of the {self.patience} epochs in a row the rule needs"
                )
            else:
                moved = (
                    f"the factors still moved by up to {100 * last:.2g}% "
                    f"over the last {self.window} epoch(s){which}, above tol={self.tol}"
                )
        else:
            moved = (
                f"it ran fewer epochs than the stopping rule needs to measure a change "
                f"({self.window + 1})"
            )
        return (
            f"Training reached max_epochs={max_epochs} before every factor settled: "
            f"{moved}. The results may still change: train longer (`max_epochs=`, e.g. "
            "twice as many) or, to accept the fit as it is, pass a larger `tol=`."
        )

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
        parts = self.change_parts(module)
        if parts is None:
            return None
        loadings, scale = parts
        return torch.maximum(loadings, scale * (self.tol / self.scale_tol))

    def change_parts(self, module) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The loadings' and the scale's change per factor across the window, apart.

        What :meth:`factor_changes` combines (the scale's on its own tolerance,
        ``scale_tol``); ``None`` until a window has passed.
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
        return loadings, scale

    @property
    def _uses_elbo(self) -> bool:
        return self.elbo_tol is not None or self.elbo_rtol is not None

    def _elbo_threshold(self, value: float) -> float:
        """The gain below which the epoch that reached ``value`` counts as settled."""
        limits = []
        if self.elbo_tol is not None:
            limits.append(self.elbo_tol)
        if self.elbo_rtol is not None:
            limits.append(self.elbo_rtol * max(self._first_elbo - value, 0.0))
        return min(limits)

    def _elbo_step(self, pl_module) -> None:
        """Count the epoch as settled by the ELBO when it improved by less than the tolerance.

        Reads the exact negative ELBO per entry of the pass that the coordinate-ascent plan
        keeps (``pass_neg_elbo``); a plan without it (the gradient engine, whose epoch ELBO
        is a minibatch estimate) leaves the rule to the loadings.
        """
        value = getattr(pl_module, "pass_neg_elbo", None)
        if not self._uses_elbo or value is None:
            return
        value = float(value)
        if self._first_elbo is None:
            self._first_elbo = value
        if self._last_elbo is not None:
            gain = self._last_elbo - value
            settled = gain < self._elbo_threshold(value)
            self._elbo_settled = self._elbo_settled + 1 if settled else 0
        self._last_elbo = value

    def _elbo_reason(self) -> str:
        """Why the ELBO's rule stopped the fit, in words."""
        parts = []
        if self.elbo_tol is not None:
            parts.append(f"less than {self.elbo_tol:.2g} per entry")
        if self.elbo_rtol is not None:
            parts.append(f"less than {self.elbo_rtol:.2g} of its gain since the first epoch")
        return f"the ELBO gained {' and '.join(parts)} in each of the last {self.patience} epochs"

    def on_train_epoch_end(self, trainer, pl_module):
        """Measure every factor's change and stop when all have settled."""
        self._elbo_step(pl_module)
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
        by_elbo = self._uses_elbo and self._elbo_settled >= self.patience
        if (self._settled >= self.patience or by_elbo) and epoch >= self.min_epochs:
            self.stopped_epoch = epoch
            self.stopped_by_elbo = self._settled < self.patience
            if self.stopped_by_elbo:
                why = self._elbo_reason()
            else:
                why = "every factor settled"
            logger.info(
                "Stopping after %d epochs: %s (the factor that moved most changed %.2g%% in "
                "the last %d epochs).",
                epoch,
                why,
                100 * change,
                self.window,
            )
            trainer.should_stop = True


class PeriodicCheckpoint(StatefulCallback, Checkpoint):
    """Save ``last.ckpt`` at the end of an epoch every ``interval`` seconds, and at the end.

    Checkpoints are taken at epoch ends only, so a resumed run starts a fresh epoch
    with the saved shuffle seed and draws exactly the minibatches the interrupted run
    would have drawn. Runs after the module's ``on_train_epoch_end`` (a ``Checkpoint``
    callback), so the ELBO of the epoch is in the saved history.

    Parameters
    ----------
    directory
        Where ``last.ckpt`` and ``spexlvm_checkpoint.json`` go.
    info
        The fingerprint of the fit (:func:`fingerprint`), saved in every checkpoint.
    interval
        Minimum seconds between two checkpoints (0: every epoch).
    """

    def __init__(self, directory: str | os.PathLike, info: dict[str, Any], interval: float = 300):
        super().__init__()
        self.directory = Path(directory)
        self.info = info
        self.interval = float(interval)
        self.metrics: dict[str, list[list[float]]] = {}
        self.finished = False
        self._last_save = time.monotonic()
        self.n_saved = 0

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.directory / CKPT_NAME

    def on_train_start(self, trainer, pl_module) -> None:
        """Start the clock of the interval."""
        self._last_save = time.monotonic()
        self.finished = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Record the epoch's metrics; save when the interval has passed."""
        epoch = int(trainer.current_epoch)
        for name in ("elbo_train", "loadings_change"):
            value = trainer.callback_metrics.get(name)
            if value is not None:
                self.metrics.setdefault(name, []).append([float(epoch), float(value)])
        due = time.monotonic() - self._last_save >= self.interval
        # the clocks of the processes differ: rank 0 decides for all of them
        due = bool(trainer.strategy.broadcast(due, src=0))
        if due:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        """Save the finished fit."""
        self.finished = True
        self.save(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Put the fingerprint and the status into the checkpoint."""
        checkpoint["spexlvm"] = {
            "format": _FORMAT,
            "fingerprint": self.info,
            "finished": self.finished,
            "epochs": _epochs_done(trainer, self.finished),
            "version": _package_version(),
        }

    def save(self, trainer) -> None:
        """Write ``last.ckpt`` atomically (and the json summary) from rank 0."""
        tmp = self.directory / f".{CKPT_NAME}.tmp"
        trainer.save_checkpoint(tmp)  # every process takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
            _write_json(
                self.directory / INFO_NAME,
                {
                    "fingerprint": self.info,
                    "finished": self.finished,
                    "epochs": _epochs_done(trainer, self.finished),
                    "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "spexlvm_version": _package_version(),
                },
            )
        trainer.strategy.barrier("spexlvm-checkpoint")
        self._last_save = time.monotonic()
        self.n_saved += 1
        logger.debug("Saved checkpoint %s (epoch %d).", self.path, trainer.current_epoch)


def _epochs_done(trainer, finished: bool) -> int:
    """Completed epochs: at an epoch's end the epoch counter has not moved on yet."""
    return int(trainer.current_epoch) + (0 if finished else 1)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str))


class FitMonitor(Callback):
    """Logs a time estimate after the first steps and a summary at the end.

    After one warm-up step, :data:`_PROBE_STEPS` steps are timed and the estimate is
    logged: seconds per epoch and the longest the fit can take (``max_epochs``; the
    convergence rule usually stops it earlier). At the end: epochs, seconds per epoch
    and the peak resident memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds_per_epoch: float | None = None
        self.n_epochs = 0
        self._t_probe: float | None = None
        self._steps = 0
        self._t_start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        """Start the clock."""
        self._t_start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Time the first steps and log the estimate."""
        self._steps += 1
        if self._steps == 1:
            self._t_probe = time.perf_counter()
            return
        if self._steps != 1 + _PROBE_STEPS or self._t_probe is None:
            return
        per_step = (time.perf_counter() - self._t_probe) / _PROBE_STEPS
        steps = max(1, int(trainer.num_training_batches))
        self.seconds_per_epoch = per_step * steps
        remaining = max(0, int(trainer.max_epochs) - int(trainer.current_epoch))
        if trainer.is_global_zero:
            logger.info(
                "Estimate: %.3g s per step, about %s per epoch of %d steps; at most %d epochs "
                "left, %s (the convergence rule usually stops earlier).",
                per_step,
                _duration(self.seconds_per_epoch),
                steps,
                remaining,
                _duration(self.seconds_per_epoch * remaining),
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Count the epoch."""
        self.n_epochs += 1

    def on_train_end(self, trainer, pl_module) -> None:
        """Log the summary."""
        n = self.n_epochs
        if n and trainer.is_global_zero:
            wall = time.perf_counter() - self._t_start
            logger.info(
                "Trained %d epochs in %s (%.3g s per epoch); peak memory of this process %.2f GB.",
                n,
                _duration(wall),
                wall / n,
                peak_rss_gb(),
            )


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
