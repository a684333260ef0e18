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
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._callbacks import CKPT_NAME

logger = logging.getLogger(__name__)


def digest(values: Any) -> str:
    h = hashlib.sha1()
    if isinstance(values, torch.Tensor):
        h.update(values.detach().cpu().contiguous().numpy().tobytes())
    else:
        for v in values:
            h.update(str(v).encode())
            h.update(b"\x00")
    return h.hexdigest()[:16]


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


def prepare(
    directory: str | os.PathLike, fingerprint: dict[str, Any], *, resume: bool
) -> tuple[Path | None, dict[str, Any] | None]:
    """Create the directory; return the checkpoint to resume from and its spexlvm entry.

    Raises a clear error when the directory holds a checkpoint of another fit (whose
    fingerprint differs from ``fingerprint``, the model's ``_fingerprint()``).
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
    check_fingerprint(info.get("fingerprint", {}), fingerprint, directory)
    return path, info


def restore_finished(module: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load a finished fit's parameters into ``module``; return the callbacks' states."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {
        k.removeprefix("module."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("module.")
    }
    module.load_state_dict(state)
    module.eval()
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
