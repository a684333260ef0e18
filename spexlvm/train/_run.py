"""Training infrastructure of :meth:`SpexLVM.train`: devices and DDP, checkpoints, estimates.

Kept apart from the model class so that the statistical settings of ``train`` (batch
size, epochs, learning rate, convergence rule) and the machinery that runs the fit can
change independently. Nothing here knows the model class: :class:`TrainingRun` receives
the fingerprint of the fit, the module and the input reader as arguments and hands the
history and the callbacks' states back; the model writes its own attributes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_only

from .._constants import DEFAULT_ENGINE
from . import _checkpoint
from ._callbacks import FitMonitor, LoadingsConvergence, PeriodicCheckpoint

if TYPE_CHECKING:
    from .._data import RowReader

logger = logging.getLogger(__name__)

#: Steps per epoch from which the progress bar advances per step instead of per epoch.
_STEP_BAR_FROM = 20

_DDP_START = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def resolve_strategy(strategy: str | Strategy | None) -> str | Strategy:
    """Lightning strategy for ``strategy``; DDP names become a tuned :class:`DDPStrategy`.

    Every parameter of the model is global (loadings, horseshoe scales, noise) and the
    cell scores are computed per minibatch, so data parallelism is all that is needed:
    each process computes the ELBO of its share of a minibatch and DDP averages the
    gradients. The module's buffers (slab widths, gene means) never change, so they are
    not broadcast at every step (``broadcast_buffers=False``).
    """
    if strategy is None or strategy == "auto":
        return "auto"
    if isinstance(strategy, str):
        name = strategy.lower()
        find_unused = name.endswith("_find_unused_parameters_true")
        base = name.removesuffix("_find_unused_parameters_true").removesuffix(
            "_find_unused_parameters_false"
        )
        if base in _DDP_START:
            return DDPStrategy(
                start_method=_DDP_START[base],
                find_unused_parameters=find_unused,
                **_no_buffer_sync(),
            )
        if base in ("single_device", "single_xla"):
            return strategy
        raise ValueError(
            f"strategy={strategy!r} is not supported. spexlvm's parameters are small (genes x "
            "factors), so data parallelism is all it needs: use strategy='ddp' (one process per "
            "device; scripts, SLURM, torchrun), 'ddp_notebook' (interactive sessions), or "
            "'auto' for one device."
        )
    return strategy


def _no_buffer_sync() -> dict[str, bool]:
    """DDP argument that stops the per-step broadcast of buffers (renamed in torch 2.13)."""
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def is_rank_zero() -> bool:
    """Whether this is the main process (rank 0) of a (possibly distributed) run."""
    return getattr(rank_zero_only, "rank", 0) == 0


def world_size(strategy: str | Strategy, devices: Any, num_nodes: int = 1) -> int:
    """Number of processes a strategy / devices pair will run (for the log line)."""
    if isinstance(strategy, str) and strategy == "auto" and devices in ("auto", 1, "1", None):
        return 1
    env = os.environ.get("WORLD_SIZE")
    if env and env.isdigit():
        return int(env)
    if isinstance(devices, list | tuple):
        n = len(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    elif isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        n = int(devices)
        if n == -1:
            n = max(1, torch.cuda.device_count())
    else:
        n = 1
    return max(1, n) * max(1, int(num_nodes))


def memory_estimate(
    n_obs: int,
    n_vars: int,
    n_factors: int,
    cells_per_process: int,
    *,
    prefetch: int,
    data_in_memory: float,
) -> str:
    """A log line: memory a fit needs besides Python and the libraries (about 0.6 GB).

    Minibatches (the batch, its centred copy and temporaries, the ones read ahead), the
    parameters (8 genes x factors arrays with gradients, Adam's moments and temporaries)
    and the results (cells x factors scores, twice while they are written).
    """
    batch = 4.0 * cells_per_process * n_vars * (3 + prefetch)
    params = 4.0 * n_vars * n_factors * 8 * 6
    results = 4.0 * n_obs * n_factors * 2
    total = batch + params + results
    text = (
        f"about {total / 2**30:.2f} GB besides Python and the libraries: minibatches of "
        f"{cells_per_process} cells x {n_vars} genes"
        + (f" ({prefetch} read ahead)" if prefetch else "")
        + f" {batch / 2**30:.2f} GB, parameters {params / 2**30:.2f} GB, scores "
        f"{results / 2**30:.2f} GB"
    )
    if data_in_memory:
        text += f"; the data already in memory take {data_in_memory / 2**30:.2f} GB"
    return text


#: Inference engines of :meth:`SpexLVM.train <spexlvm.SpexLVM.train>`.
ENGINES = ("adam", "cavi")
#: Coordinate ascent also stops once each of ``patience`` passes raised the ELBO by less
#: than this per matrix entry (nats; the data are standardised). Chosen on the C8
#: signatures on PBMC and synthetic data (benchmarks/RESULTS.md, "Coordinate ascent:
#: when to stop on real data"); 1e-4 before, which stopped real-data fits early.
CAVI_ELBO_TOL = 1e-5


@dataclasses.dataclass
class Schedule:
    """The statistical settings of one fit (see :func:`schedule`)."""

    #: Cells per optimisation step (over all processes).
    batch_size: int
    steps_per_epoch: int
    max_epochs: int
    #: Arguments of :class:`~spexlvm.train.SpexLVMTrainingPlan`.
    plan_kwargs: dict[str, Any]
    #: The stopping rule (``None`` without early stopping).
    convergence: LoadingsConvergence | None

    @property
    def callbacks(self) -> list[Callback]:
        """The callbacks of the schedule (the stopping rule)."""
        return [self.convergence] if self.convergence is not None else []


def schedule(
    n_obs: int,
    batch_size: int,
    *,
    max_epochs: int | None,
    lr: float | None,
    plan_kwargs: dict[str, Any] | None,
    n_annotated: int,
    n_free: int,
    early_stopping: bool,
    tol: float,
    patience: int,
    engine: str = DEFAULT_ENGINE,
) -> Schedule:
    """Epochs, warm-up and stopping rule of a fit of ``n_obs`` cells.

    ``max_epochs=None`` gives about 1,500 optimisation steps (at least 100 epochs); the
    ``n_free`` unannotated factors (after the ``n_annotated`` gene sets' factors) wait
    about 50 steps while the gene sets settle; the stopping rule compares averages about
    10 steps apart (at least one epoch) and never stops before the warm-up plus 10 epochs.
    See :meth:`SpexLVM.train <spexlvm.SpexLVM.train>` for the arguments.

    With ``engine="cavi"`` an epoch is one exact coordinate-ascent update: ``max_epochs=None``
    gives 200 passes, there is no warm-up, and the stopping rule compares consecutive passes
    (no moving average: the iterates have no step-to-step jitter) from the third pass on,
    on the loadings alone (the factor scales' part is off: ``scale_tol=inf``);
    it also stops once the exact ELBO gains less than :data:`CAVI_ELBO_TOL` per entry in
    ``patience`` consecutive passes.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if lr is None:  # chosen on synthetic data (benchmarks/RESULTS.md, "Coordinate ascent")
        lr = 0.2 if engine == "cavi" else 0.05
    batch_size = int(min(batch_size, n_obs))
    steps_per_epoch = math.ceil(n_obs / batch_size)
    if engine == "cavi":
        max_epochs = 200 if max_epochs is None else int(max_epochs)
        plan_kwargs = dict(plan_kwargs or {})
        plan_kwargs.setdefault("lr", lr)
        convergence = None
        if early_stopping:
            convergence = LoadingsConvergence(
                tol=tol,
                window=1,
                patience=patience,
                min_epochs=min(max_epochs, 3),
                smoothing=0.0,
                # the loadings alone: with exact passes the factor scales of sets whose
                # loadings no longer move keep drifting by 5-10% per pass while the
                # scores, loadings and calls stay put (benchmarks/RESULTS.md)
                scale_tol=math.inf,
                elbo_tol=CAVI_ELBO_TOL,
            )
        return Schedule(batch_size, steps_per_epoch, max_epochs, plan_kwargs, convergence)
    if max_epochs is None:
        max_epochs = int(max(100, math.ceil(1500 / steps_per_epoch)))
    plan_kwargs = dict(plan_kwargs or {})
    plan_kwargs.setdefault("lr", lr)
    # unannotated factors wait ~50 optimisation steps while the gene sets settle
    warmup = 0
    if n_annotated and n_free:
        warmup = min(max_epochs // 2, math.ceil(50 / steps_per_epoch))
        plan_kwargs.setdefault("frozen_factors", list(range(n_annotated, n_annotated + n_free)))
        warmup = int(plan_kwargs.setdefault("warmup_epochs", warmup))
    convergence = None
    if early_stopping:
        convergence = LoadingsConvergence(
            tol=tol,
            window=math.ceil(10 / steps_per_epoch),
            patience=patience,
            min_epochs=min(max_epochs, 10 + warmup),
        )
    return Schedule(batch_size, steps_per_epoch, max_epochs, plan_kwargs, convergence)


def stopping_rule(engine: str = DEFAULT_ENGINE, *, tol: float = 0.02, patience: int = 3):
    """The default stopping rule of ``engine`` for a full-batch fit (:func:`schedule`'s).

    What benchmarks and tests compare candidate rules with; a fresh instance each call.
    """
    return schedule(
        1000,
        1000,
        max_epochs=None,
        lr=None,
        plan_kwargs=None,
        n_annotated=1,
        n_free=0,
        early_stopping=True,
        tol=tol,
        patience=patience,
        engine=engine,
    ).convergence


class TrainingRun:
    """The machinery around one call of :meth:`SpexLVM.train`.

    Resolves the strategy and devices, prepares the checkpoint directory (and finds
    a checkpoint to resume), and provides the callbacks, the Trainer and data-module
    arguments, and the post-processing (history of a resumed fit). It never touches the
    model: :meth:`restore_finished` and :meth:`finish` return what the model stores.

    Parameters
    ----------
    fingerprint
        What must match for a checkpoint to continue this fit (the model's
        ``_fingerprint()``: settings, genes, cells, digests of the statistics); needed
        with ``checkpoint_dir`` only.
    """

    def __init__(
        self,
        *,
        fingerprint: dict[str, Any] | None,
        strategy: str | Strategy | None,
        device: Any,
        trainer_kwargs: dict[str, Any],
        checkpoint_dir: str | os.PathLike | None,
        checkpoint_interval: float,
        resume: bool,
        block_size: int | None,
        steps_per_epoch: int,
    ):
        if checkpoint_interval < 0:
            raise ValueError(
                f"checkpoint_interval must be >= 0 seconds, got {checkpoint_interval}."
            )
        if block_size is not None and (int(block_size) != block_size or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
        self.strategy = resolve_strategy(strategy)
        self.device = device
        self.world_size = world_size(
            self.strategy, device, int(trainer_kwargs.get("num_nodes", 1) or 1)
        )
        self.block_size = block_size
        self.steps_per_epoch = steps_per_epoch
        self.monitor = FitMonitor()
        self.checkpoint: PeriodicCheckpoint | None = None
        self.resume_from: Path | None = None
        self.resume_info: dict[str, Any] | None = None
        self.finished_info: dict[str, Any] | None = None
        if checkpoint_dir is not None:
            if fingerprint is None:
                raise TypeError("TrainingRun needs the fit's fingerprint with checkpoint_dir.")
            path, info = _checkpoint.prepare(checkpoint_dir, fingerprint, resume=resume)
            self.checkpoint = PeriodicCheckpoint(checkpoint_dir, fingerprint, checkpoint_interval)
            if info is not None and info.get("finished"):
                self.finished_info = info
            self.resume_from, self.resume_info = path, info

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1 or isinstance(self.strategy, DDPStrategy)

    def callbacks(self) -> list[Callback]:
        """The infrastructure callbacks: time estimate, checkpoints."""
        out: list[Callback] = [self.monitor]
        if self.checkpoint is not None:
            out.append(self.checkpoint)
        return out

    def trainer_kwargs(self, trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Trainer arguments for the strategy, checkpoints and the progress bar."""
        out = dict(trainer_kwargs)
        out["strategy"] = self.strategy
        if self.distributed:
            # the data module deals each process its share of every step itself
            out.setdefault("use_distributed_sampler", False)
        if self.checkpoint is not None:
            # None: Lightning enables checkpointing (our Checkpoint callback) without
            # scvi-tools adding its validation-loss checkpoint
            out["enable_checkpointing"] = None
            if self.resume_from is not None:
                out["ckpt_path"] = str(self.resume_from)
        else:
            out.setdefault("enable_checkpointing", False)
        # long epochs: a progress bar that moves with every step, not once per epoch
        if self.steps_per_epoch >= _STEP_BAR_FROM:
            out.setdefault("simple_progress_bar", False)
        return out

    def datasplitter_kwargs(self) -> dict[str, Any]:
        """Arguments of :class:`~spexlvm._data.SpexLVMDataModule`."""
        return {"block_size": self.block_size}

    def log_start(self, batch_size: int, *, reader: RowReader, n_factors: int) -> None:
        """The memory estimate (and where the fit resumes), for the input ``reader``."""
        from .._data import _PREFETCH

        in_memory = 0.0
        if not reader.on_disk:
            x = reader.x
            in_memory = float(getattr(x, "nbytes", 0) or 0)
            if hasattr(x, "data") and hasattr(x, "indices"):
                in_memory = float(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
        if not is_rank_zero():
            return
        per_process = math.ceil(batch_size / self.world_size)
        logger.info(
            "Memory: %s.",
            memory_estimate(
                reader.n_obs,
                reader.n_vars,
                n_factors,
                per_process,
                prefetch=_PREFETCH if reader.on_disk else 0,
                data_in_memory=in_memory,
            ),
        )
        if self.distributed:
            logger.info(
                "Data parallel over %d processes: each computes the ELBO of %d of the %d "
                "cells of a step; gradients are averaged.",
                self.world_size,
                per_process,
                batch_size,
            )
        if self.resume_from is not None and self.finished_info is None:
            logger.info(
                "Resuming from %s (%d epochs done).",
                self.resume_from,
                int((self.resume_info or {}).get("epochs", 0)),
            )

    @contextlib.contextmanager
    def context(self) -> Iterator[dict[str, Any]]:
        """Around the fit: a temporary log directory under DDP, quiet DDP warnings.

        Under DDP scvi-tools writes the training history to disk for the main process.
        """
        extra: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            if self.distributed:
                extra["log_save_dir"] = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="spexlvm-log-")
                )
            if self.forked and torch.get_num_threads() > 1:
                # a process forked after OpenMP ran with several threads deadlocks at its
                # first parallel region (GNU libgomp is not fork-safe): the forked
                # processes get one thread each (they share the cores anyway)
                logger.info(
                    "Forked DDP processes (%s) train with 1 torch thread each: forking after "
                    "multi-threaded OpenMP deadlocks. strategy='ddp' keeps every thread.",
                    getattr(self.strategy, "_start_method", "fork"),
                )
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, threads)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="early_stopping was automatically")
                warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
                yield extra

    @property
    def forked(self) -> bool:
        """Whether the fit runs in processes forked from this one (``ddp_notebook``)."""
        return (
            isinstance(self.strategy, DDPStrategy)
            and getattr(self.strategy, "_start_method", "popen") == "fork"
        )

    def restore_finished(
        self, module: torch.nn.Module
    ) -> tuple[dict[str, Any], list[float], bool]:
        """Load a finished fit into ``module`` from the checkpoint instead of training again.

        Returns the training history (scvi-tools style), the convergence rule's record
        and whether it stopped the fit (see :meth:`LoadingsConvergence.record`).
        """
        assert self.resume_from is not None
        states = _checkpoint.restore_finished(module, self.resume_from)
        ckpt_state = states.get(self.checkpoint.state_key) if self.checkpoint else None
        if ckpt_state:
            self.checkpoint.load_state_dict(ckpt_state)
        history = _checkpoint.history_frames(self.checkpoint.metrics if self.checkpoint else {})
        logger.info(
            "%s holds a finished fit (%d epochs): loaded it without training. Pass "
            "resume=False (or another checkpoint_dir) to train again.",
            self.resume_from,
            int(self.finished_info.get("epochs", 0)) if self.finished_info else 0,
        )
        return (history, *LoadingsConvergence.record(states))

    @property
    def trained_in_workers(self) -> bool:
        """Whether the fit ran in spawned / forked processes (not in this one)."""
        method = getattr(self.strategy, "_start_method", "popen")
        return isinstance(self.strategy, DDPStrategy) and method != "popen"

    def finish(
        self,
        history: Any,
        convergence: LoadingsConvergence | None = None,
        max_epochs: int | None = None,
    ) -> Any:
        """After the fit: complete what the callbacks of this process could not see.

        Returns the history of the fit (``history``, scvi-tools' record of this call; for a
        resumed fit with the checkpoint's epochs before it). After a fit in spawned or
        forked processes (``ddp_spawn``, ``ddp_notebook``) the parameters and the history
        come back to this process, the callbacks do not: the convergence rule's record is
        rebuilt from the logged ``loadings_change``.
        """
        if self.checkpoint is not None and self.resume_from is not None:
            earlier = _checkpoint.history_frames(self.checkpoint.metrics)
            history = _checkpoint.merge_history(
                earlier, history if isinstance(history, dict) else {}
            )
        history_dict = history if isinstance(history, dict) else {}
        if convergence is not None and self.trained_in_workers and not convergence.history:
            changes = history_dict.get("loadings_change")
            n_epochs = len(history_dict.get("elbo_train", []))
            if changes is not None:
                convergence.history = [float(v) for v in np.asarray(changes).ravel()]
            if max_epochs is not None and 0 < n_epochs < max_epochs:
                convergence.stopped_epoch = n_epochs
        return history
