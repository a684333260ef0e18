"""Nothing lost on disk: every file is written to a temporary file and renamed into place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import spexlvm
from spexlvm._utils import TMP_SUFFIX, atomic_write, write_h5ad
from spexlvm.cli import main

ROOT = Path(__file__).parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


def test_error_in_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.")
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with atomic_write(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # replaced only at the end
    assert path.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_link_followed_and_permissions_kept(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with atomic_write(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh.txt"
    with atomic_write(fresh) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600
    with pytest.raises(IsADirectoryError, match="is a directory"), atomic_write(tmp_path):
        pass


def test_sigkill_during_h5ad_write_keeps_the_previous_file(tmp_path):
    """A child writes a large h5ad through our writer and is killed half-way."""
    path = tmp_path / "out.h5ad"
    old = ad.AnnData(np.arange(12, dtype=np.float32).reshape(4, 3))
    write_h5ad(old, path)
    code = textwrap.dedent(
        """
        import importlib.util
        import sys

        import anndata as ad
        import numpy as np

        # spexlvm/_utils.py alone (importing the package, torch included, takes seconds)
        spec = importlib.util.spec_from_file_location("spexlvm_utils", sys.argv[2])
        utils = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(utils)
        write_h5ad = utils.write_h5ad

        x = np.random.default_rng(0).random((6000, 2000), dtype=np.float32)  # 48 MB
        print("writing", flush=True)
        write_h5ad(ad.AnnData(x), sys.argv[1], compression="gzip")  # slow: random data
        print("done", flush=True)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(ROOT / "spexlvm" / "_utils.py")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        partial = None
        while proc.poll() is None and time.monotonic() < deadline:
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)]
            if tmps and tmps[0].stat().st_size > 2**20:  # 1 MiB of the new file written
                partial = tmps[0]
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert partial is not None, f"the child finished before it could be killed: {out!r}"
    assert proc.returncode == -signal.SIGKILL and "done" not in out
    # the previous file is intact and loadable
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, old.X)
    # the half-written file is hidden and never looks like an output
    assert sorted(p.name for p in tmp_path.glob("*.h5ad")) == ["out.h5ad"]
    assert _leftovers(tmp_path) == [partial.name]
    assert partial.name.startswith(".") and not partial.name.endswith(".h5ad")


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    adata = spexlvm.datasets.synthetic(200, 80, 3, seed=0)
    path = tmp_path_factory.mktemp("same") / "in.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("how", ["same", "relative", "symlink"])
def test_cli_out_is_the_input(annotated, tmp_path, monkeypatch, how):
    """`spexlvm fit IN.h5ad --out IN.h5ad` rewrites the input atomically."""
    path = tmp_path / "in.h5ad"
    path.write_bytes(annotated.read_bytes())
    x_before = ad.read_h5ad(path).X.copy()
    monkeypatch.chdir(tmp_path)
    out = {"same": str(path), "relative": "in.h5ad", "symlink": "link.h5ad"}[how]
    if how == "symlink":
        (tmp_path / "link.h5ad").symlink_to(path)
    assert main(["-q", "fit", str(path), "--out", out, "--max-epochs", "3"]) == 0
    result = ad.read_h5ad(path)
    np.testing.assert_array_equal(result.X, x_before)
    assert result.obsm["X_spexlvm"].shape == (200, 3)
    if how == "symlink":
        assert (tmp_path / "link.h5ad").is_symlink()
    assert _leftovers(tmp_path) == []


def test_cli_backed_out_is_the_input_is_refused(annotated, tmp_path, capsys):
    path = tmp_path / "in.h5ad"
    path.write_bytes(annotated.read_bytes())
    (tmp_path / "link.h5ad").symlink_to(path)
    before = path.read_bytes()
    for out in (path, tmp_path / "link.h5ad"):
        code = main(["-q", "fit", str(path), "--backed", "--out", str(out), "--max-epochs", "3"])
        assert code == 2
        err = capsys.readouterr().err
        assert "is the input file" in err and "drop --backed" in err
    assert path.read_bytes() == before


def test_figures_and_gmt_are_written_whole(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    spexlvm.pl._utils.save_figure(fig, tmp_path / "f.png")
    spexlvm.pl._utils.save_figure(fig, tmp_path / "f.pdf")
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    spexlvm.tl.write_gmt({"A": ["g1", "g2"]}, tmp_path / "s.gmt")
    assert (tmp_path / "s.gmt").read_text() == "A\trefined by spexlvm\tg1\tg2\n"
    assert _leftovers(tmp_path) == []


def test_save_model_is_whole_or_not_at_all(tmp_path):
    """A failed save leaves the previous model folder as it was; a good one replaces it."""
    from spexlvm._utils import save_model

    class Model:
        def __init__(self, content, fail=False):
            self.content, self.fail = content, fail

        def save(self, dir_path, overwrite=False):
            os.makedirs(dir_path, exist_ok=overwrite)
            with open(os.path.join(dir_path, "model.pt"), "w") as fh:
                fh.write(self.content)
                if self.fail:
                    raise OSError("disk full")

    target = tmp_path / "model"
    save_model(Model("one"), target)
    assert (target / "model.pt").read_text() == "one"
    with pytest.raises(OSError, match="disk full"):
        save_model(Model("two", fail=True), target)
    assert (target / "model.pt").read_text() == "one"
    save_model(Model("three"), target)
    assert (target / "model.pt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="saved as a folder"):
        save_model(Model("four"), tmp_path / "file")
