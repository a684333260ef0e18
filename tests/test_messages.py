"""What a user sees in plain Python: warnings to act on, log lines at scanpy's verbosity."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import spexlvm
from spexlvm import _logging

SCRIPT = textwrap.dedent(
    """
    import warnings
    import scanpy as sc
    import spexlvm

    adata = spexlvm.datasets.synthetic(120, 60, 3, seed=0)
    print("=== default verbosity", flush=True)
    spexlvm.tl.fit(adata.copy(), max_epochs=2, progress_bar=False)
    sc.settings.verbosity = "info"
    print("=== info verbosity", flush=True)
    spexlvm.tl.fit(adata.copy(), max_epochs=2, progress_bar=False)
    """
)


def test_plain_python_shows_warnings_and_follows_scanpy_verbosity(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert err.count("before every factor settled") == 2, err[-3000:]
    assert "train longer" in err
    # INFO lines only once scanpy's verbosity asks for them
    assert err.count("Training SpexLVM for at most") == 1, err[-3000:]
    assert "Wrote obsm['X_spexlvm']" in err


def test_scanpy_verbosity_maps_to_levels(monkeypatch):
    class Settings:
        verbosity = 2

    fake = type(sys)("scanpy")
    fake.settings = Settings()
    monkeypatch.setitem(sys.modules, "scanpy", fake)
    assert _logging.scanpy_level() == logging.INFO
    Settings.verbosity = 0
    assert _logging.scanpy_level() == logging.ERROR
    Settings.verbosity = 4
    assert _logging.scanpy_level() == logging.DEBUG
    monkeypatch.delitem(sys.modules, "scanpy")
    assert _logging.scanpy_level() == logging.WARNING


def test_sync_keeps_a_level_set_by_somebody_else(monkeypatch):
    package = logging.getLogger("spexlvm")
    saved = package.level
    try:
        _logging.sync_verbosity()
        synced = package.level
        assert synced == _logging.scanpy_level()
        package.setLevel(logging.DEBUG)  # e.g. the CLI's -v
        _logging.sync_verbosity()
        assert package.level == logging.DEBUG
    finally:
        package.setLevel(saved)


def test_not_converged_warns_and_is_recorded(small_adata):
    adata = small_adata.copy()
    with pytest.warns(UserWarning, match="before every factor settled"):
        spexlvm.tl.fit(adata, max_epochs=3, progress_bar=False)
    uns = adata.uns["spexlvm"]
    assert uns["converged"] is False or uns["converged"] == np.False_
    assert uns["history"]["loadings_change"].ndim == 1


def test_converged_fit_records_it(small_adata):
    adata = small_adata.copy()
    spexlvm.tl.fit(adata, progress_bar=False)
    uns = adata.uns["spexlvm"]
    assert bool(uns["converged"])
    changes = uns["history"]["loadings_change"]
    assert changes.size > 0 and changes[-1] < 0.02
    assert uns["params"]["n_epochs"] < 1500
