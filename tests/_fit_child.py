"""A fit run as a separate process by the tests (DDP, kill-and-resume).

Usage::

    python tests/_fit_child.py OUT.npy [--strategy ddp --devices 2] [--checkpoint-dir DIR]
                               [--kill-at-epoch E] [--engine cavi]

Builds the data and the model exactly like :func:`fit_in_process` (same seeds), trains
and, on the main process, saves the loadings to ``OUT.npy``. ``--kill-at-epoch E``
kills the process (SIGKILL, no clean-up) in the middle of epoch ``E``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

import numpy as np

#: The data and the settings shared by the child and the in-process reference fits.
DATA = {"n_obs": 600, "n_vars": 200, "n_factors": 5, "noise": 0.2, "extra": 0.2, "seed": 4}
#: The Adam engine's settings: these fits test its checkpoints and DDP (test_atlas.py);
#: test_cavi.py overrides the engine for coordinate ascent's.
TRAIN = {"batch_size": 150, "max_epochs": 30, "enable_progress_bar": False, "engine": "adam"}


def make_model():
    """The data and an untrained model (seeded)."""
    import scvi

    import spexlvm

    d = dict(DATA)
    adata = spexlvm.datasets.synthetic(d.pop("n_obs"), d.pop("n_vars"), d.pop("n_factors"), **d)
    scvi.settings.seed = 0
    spexlvm.SpexLVM.setup_anndata(adata)
    return adata, spexlvm.SpexLVM(adata, n_sparse=1)


def f1(adata, loadings) -> float:
    """F1 of the annotated factors' loadings against the truth."""
    import spexlvm

    k = DATA["n_factors"]
    return spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :k], loadings[:, :k])


def fit_in_process(**train_kwargs):
    """The reference fit in the calling process; returns (adata, model)."""
    adata, model = make_model()
    model.train(**{**TRAIN, **train_kwargs})
    return adata, model


def main() -> None:
    """Parse the arguments, fit, save the loadings (main process only)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--kill-at-epoch", type=int, default=-1)
    parser.add_argument("--engine", default="adam")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from lightning.pytorch.callbacks import Callback

    class Kill(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == args.kill_at_epoch and batch_idx == 1:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    adata, model = make_model()
    kwargs = dict(TRAIN, engine=args.engine)
    if args.strategy != "auto":
        kwargs.update(strategy=args.strategy, devices=args.devices, accelerator="cpu")
    if args.checkpoint_dir:
        kwargs.update(checkpoint_dir=args.checkpoint_dir, checkpoint_interval=0)
    callbacks = [Kill()] if args.kill_at_epoch >= 0 else []
    model.train(callbacks=callbacks, **kwargs)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        np.save(args.out, model.get_loadings().to_numpy())
        print(f"F1 {f1(adata, model.get_loadings().to_numpy()):.4f}", flush=True)


if __name__ == "__main__":
    main()
