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
    """The Adam engine stops when every factor settled."""
    adata = small_adata.copy()
    spexlvm.tl.fit(adata, progress_bar=False, engine="adam")
    uns = adata.uns["spexlvm"]
    assert bool(uns["converged"]) and uns["params"]["engine"] == "adam"
    changes = uns["history"]["loadings_change"]
    assert changes.size > 0 and changes[-1] < 0.02
    assert uns["params"]["n_epochs"] < 1500


def test_converged_cavi_fit_records_why(small_adata):
    """Coordinate ascent (the default) stops when the loadings settle or the exact ELBO
    (per matrix entry, recorded each pass) gains less than its tolerance in ``patience``
    passes in a row; the recorded history shows that one of the two held."""
    from spexlvm.train._run import CAVI_ELBO_TOL

    adata = small_adata.copy()
    spexlvm.tl.fit(adata, progress_bar=False)
    uns = adata.uns["spexlvm"]
    assert bool(uns["converged"]) and uns["params"]["engine"] == "cavi"
    changes = uns["history"]["loadings_change"]
    gains = -np.diff(np.asarray(uns["history"]["elbo_train"], dtype=np.float64).ravel())
    assert gains.size >= 3 and (gains >= -1e-6).all()  # coordinate ascent never loses
    assert changes.size > 0
    assert changes[-1] < 0.02 or (gains[-3:] < CAVI_ELBO_TOL).all()
    assert uns["params"]["n_epochs"] < 200


def test_unsettled_message_says_whether_the_last_change_was_below_tol():
    """A fit that stops at max_epochs while its last change is already below ``tol`` (but
    not yet for ``patience`` epochs in a row) is not told that it moved "above tol"."""
    from spexlvm.train import LoadingsConvergence

    rule = LoadingsConvergence(tol=0.02, patience=3)
    rule.history, rule.slowest, rule._settled = [0.05, 0.019], [0, 1], 1
    text = rule.unsettled_message(8, ["a", "b"])
    assert "1.9%" in text and "below tol=0.02 in 1 of the 3 epochs in a row" in text
    assert "'b'" in text and "above tol" not in text
    rule.history = [0.019, 0.05]
    assert "still moved by up to 5% over the last" in rule.unsettled_message(8, ["a", "b"])
