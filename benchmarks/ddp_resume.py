"""Data-parallel and resumed fits against one uninterrupted process (F1, loadings).

Usage::

    python benchmarks/ddp_resume.py

Uses the small problem of ``tests/_fit_child.py`` (the tests' DDP and kill-and-resume
fits): 2 CPU processes with ``strategy="ddp"``, and a fit killed with SIGKILL in the
middle of epoch 13 then resumed from its checkpoint. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "_fit_child.py"


def main() -> None:
    """Run the three fits and print the table."""
    sys.path.insert(0, str(CHILD.parent))
    import _fit_child as child

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    tmp = Path(tempfile.mkdtemp(prefix="spexlvm-bench-"))
    t0 = time.perf_counter()
    cmd = [sys.executable, str(CHILD), str(tmp / "ddp.npy"), "--strategy", "ddp"]
    subprocess.run([*cmd, "--devices", "2"], check=True, capture_output=True, env=env)
    t_ddp = time.perf_counter() - t0
    adata, single = child.fit_in_process()
    w_single = single.get_loadings().to_numpy()
    w_ddp = np.load(tmp / "ddp.npy")

    ckpt = tmp / "ckpt"
    kill = ["--checkpoint-dir", str(ckpt), "--kill-at-epoch", "12"]
    killed = subprocess.run(
        [sys.executable, str(CHILD), str(tmp / "k.npy"), *kill],
        capture_output=True,
        env=env,
        check=False,
    )
    epochs = json.loads((ckpt / "spexlvm_checkpoint.json").read_text())["epochs"]
    _, resumed = child.make_model()
    resumed.train(**child.TRAIN, checkpoint_dir=ckpt, checkpoint_interval=0)
    w_resumed = resumed.get_loadings().to_numpy()

    print("| run | F1 | max abs difference of the loadings to one process |")
    print("|---|---|---|")
    print(f"| one process | {child.f1(adata, w_single):.4f} | |")
    print(
        f"| `strategy='ddp', devices=2`, CPU (gloo) ({t_ddp:.0f} s with start-up) | "
        f"{child.f1(adata, w_ddp):.4f} | {np.abs(w_ddp - w_single).max():.1e} |"
    )
    print(
        f"| killed (exit {killed.returncode}) in epoch {epochs + 1}, resumed from the "
        f"checkpoint after {epochs} | {child.f1(adata, w_resumed):.4f} | "
        f"{np.abs(w_resumed - w_single).max():.1e} |"
    )


if __name__ == "__main__":
    main()
