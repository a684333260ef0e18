"""Checkpoints of a running fit, and resuming one (``SpexLVM.train(checkpoint_dir=...)``).

Layout of a checkpoint directory::

    checkpoint_dir/
        last.ckpt                 Lightning checkpoint: the module's parameters, Adam's state,
                                  the epoch, the callbacks' state (convergence rule, ELBO
                                  history), the minibatch shuffle seed, and a fingerprint
                                  of the model and the data ("spexlvm" entry)
        spexlvm_checkpoint.json   the same fingerprint and the status, human-readable

``last.ckpt`` is replaced atomically (written to a temporary file, then renamed), so a
run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from ._utils import atomic_write
from ._utils import package_version as _package_version

if TYPE_CHECKING:
    from ._model import SpexLVM

logger = logging.getLogger(__name__)

CKPT_NAME = "last.ckpt"
INFO_NAME = "spexlvm_checkpoint.json"
_FORMAT = 1


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


def _digest(values: Any) -> str:
    h = hashlib.sha1()
    if isinstance(values, torch.Tensor):
        h.update(values.detach().cpu().contiguous().numpy().tobytes())
    else:
        for v in values:
            h.update(str(v).encode())
            h.update(b"\x00")
    return h.hexdigest()[:16]


def fingerprint(model: SpexLVM) -> dict[str, Any]:
    """What must match for a checkpoint to continue this fit.

    The model class and settings, the genes, cells and factors, and digests of the
    per-gene statistics and slab widths computed from the data and the annotation.
    """
    module = model.module
    init = getattr(model, "init_params_", {}) or {}
    settings = {
        k: v
        for part in ("non_kwargs", "kwargs")
        for k, v in (init.get(part) or {}).items()
        if k != "adata"
    }
    if not getattr(module, "n_covariates", 0):  # a fit without covariates: as before
        settings.pop("covariate_prior_scale", None)
    setup = model.adata_manager.registry.get("setup_args", {})
    out = {
        "model": type(model).__name__,
        "settings": json.loads(json.dumps(settings, default=str)),
        "layer": str(setup.get("layer") or ""),
        "n_obs": int(model.summary_stats.n_cells),
        "n_vars": int(model.summary_stats.n_vars),
        "var_names": _digest(model.adata.var_names),
        "obs_names": _digest(model.adata.obs_names),
        "factor_names": [str(n) for n in model.factor_names],
        "data": _digest(torch.cat([module.gene_mean.flatten(), module.data_scale.flatten()])),
        "annotation": _digest(module.slab),
    }
    if getattr(module, "n_covariates", 0):  # only then: older fingerprints stay valid
        out["covariates"] = [str(c) for c in model.covariate_names_]
    return out


_WHAT = {
    "model": "model class",
    "settings": "model settings",
    "layer": "layer",
    "n_obs": "number of cells",
    "n_vars": "number of genes",
    "var_names": "gene names",
    "obs_names": "cell names",
    "factor_names": "factors",
    "data": "data values (per-gene means)",
    "annotation": "gene-set annotation / slab widths",
    "covariates": "known covariates (design columns)",
}


def _describe(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _difference(what: str, saved: Any, current: Any) -> str:
    """One difference between two fingerprints, in words."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = [k for k in {**saved, **current} if saved.get(k) != current.get(k)]
        return f"{what}: " + ", ".join(
            f"{k} {_describe(saved.get(k))} in the checkpoint, now {_describe(current.get(k))}"
            for k in keys
        )
    if isinstance(saved, list) and isinstance(current, list):
        first = next(
            (i for i, (a, b) in enumerate(zip(saved, current, strict=False)) if a != b),
            min(len(saved), len(current)),
        )
        return (
            f"{what}: {len(saved)} in the checkpoint, now {len(current)}; first difference at "
            f"position {first}"
        )
    return f"{what}: {_describe(saved)} in the checkpoint, now {_describe(current)}"


def read_checkpoint_info(path: Path) -> dict[str, Any]:
    """The ``spexlvm`` entry of a Lightning checkpoint (fingerprint and status)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any damage gets the same advice
        raise ValueError(
            f"Could not read the checkpoint {str(path)!r} ({type(err).__name__}: {err}). It "
            "is damaged or not a spexlvm checkpoint: delete it, pass another checkpoint_dir, "
            "or resume=False to start again."
        ) from err
    info = ckpt.get("spexlvm") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict):
        raise ValueError(
            f"{str(path)!r} is a Lightning checkpoint but not one written by spexlvm: pass "
            "another checkpoint_dir, or resume=False to overwrite it."
        )
    return info


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], directory: Path) -> None:
    """Raise a clear error when a checkpoint belongs to another model or other data."""
    differ = [k for k in current if saved.get(k) != current[k]]
    differ += [k for k in saved if k not in current]  # e.g. covariates saved, none now
    if not differ:
        return
    details = "; ".join(_difference(_WHAT.get(k, k), saved.get(k), current.get(k)) for k in differ)
    raise ValueError(
        f"checkpoint_dir {str(directory)!r} holds a checkpoint of a different fit ({details}). "
        "Pass the same data, annotation and model settings to resume it, another "
        "checkpoint_dir for a new fit, or resume=False to overwrite it."
    )


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


def prepare(
    model: SpexLVM, directory: str | os.PathLike, *, resume: bool
) -> tuple[Path | None, dict[str, Any] | None]:
    """Create the directory; return the checkpoint to resume from and its spexlvm entry.

    Raises a clear error when the directory holds a checkpoint of another fit.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"checkpoint_dir {str(directory)!r} is a file; pass a directory (it is created)."
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CKPT_NAME
    if not path.is_file():
        return None, None
    if not resume:
        logger.warning("resume=False: the checkpoint in %s will be overwritten.", directory)
        return None, None
    info = read_checkpoint_info(path)
    check_fingerprint(info.get("fingerprint", {}), fingerprint(model), directory)
    return path, info


def restore_finished(model: SpexLVM, path: Path) -> dict[str, Any]:
    """Load a finished fit's parameters into ``model``; return the callbacks' states."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {
        k.removeprefix("module."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("module.")
    }
    model.module.load_state_dict(state)
    model.module.eval()
    model.is_trained_ = True
    return dict(ckpt.get("callbacks", {}))


def history_frames(metrics: dict[str, list[list[float]]]) -> dict[str, Any]:
    """scvi-tools style history (one DataFrame per metric, indexed by epoch)."""
    import pandas as pd

    out = {}
    for name, rows in metrics.items():
        if not rows:
            continue
        arr = np.asarray(rows, dtype=np.float64)
        df = pd.DataFrame({name: arr[:, 1]}, index=pd.Index(arr[:, 0].astype(int), name="epoch"))
        out[name] = df
    return out


def merge_history(earlier: dict[str, Any], later: dict[str, Any] | None) -> dict[str, Any]:
    """History of a resumed fit: the checkpoint's epochs, then the new ones."""
    import pandas as pd

    later = dict(later or {})
    for name, df in earlier.items():
        new = later.get(name)
        if new is None or len(new) == 0:
            later[name] = df
            continue
        with contextlib.suppress(TypeError, ValueError):
            first = int(np.asarray(new.index)[0])
            df = df[np.asarray(df.index) < first]
        later[name] = pd.concat([df, new])
        later[name].index.name = new.index.name or "epoch"
    return later
