"""Shared fixtures: quiet logging, small synthetic data, one fitted model reused by many tests."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import spexlvm
from spexlvm.datasets import synthetic

#: Size of the paper's small synthetic benchmark (section 3.1): cells, genes, factors.
N_OBS, N_VARS, N_FACTORS = 2000, 1000, 20

_NOISY_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "scvi",
    "pyro",
)


def pytest_configure(config):
    """Lightning's warnings about the loop (no validation step, deprecated pytree API)."""
    for line in (
        "ignore:You passed in a `val_dataloader` but have no `validation_step`:UserWarning",
        "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",
        "ignore:.*does not have many workers.*:UserWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session", autouse=True)
def _quiet():
    """Silence Lightning's banners, scvi-tools' set-up messages and their warnings."""
    import scvi

    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    old_verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.ERROR
    yield
    scvi.settings.verbosity = old_verbosity
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _fit(adata, **kwargs):
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("seed", 0)
    return spexlvm.tl.fit(adata, **kwargs)


@pytest.fixture(scope="session")
def run_fit():
    """``spexlvm.tl.fit`` with ``seed=0`` and no progress bar unless given."""
    return _fit


def make_small(seed: int = 1, **kwargs):
    """A small synthetic problem (300 cells, 200 genes, 5 factors + 1 extra set)."""
    kwargs.setdefault("noise", 0.2)
    kwargs.setdefault("extra", 0.2)
    return synthetic(300, 200, 5, seed=seed, **kwargs)


@pytest.fixture(scope="session")
def small_data():
    """Factory of small synthetic AnnData objects (:func:`make_small`)."""
    return make_small


@pytest.fixture
def small_adata():
    """A fresh small synthetic AnnData (function scope: tests may modify it)."""
    return make_small()


@pytest.fixture(scope="session")
def small_fit():
    """A model fitted to :func:`make_small` with one sparse and one dense factor.

    Session scope: tests must not modify ``adata`` or the model.
    """
    adata = make_small()
    model = _fit(adata, n_sparse=1, n_dense=1)
    return adata, model


@pytest.fixture(scope="session")
def paper_fit():
    """``tl.fit`` defaults on the paper's synthetic data (N=2000, G=1000, K=20, 20% noise,
    20% extra sets), seed 0. Session scope: tests must not modify ``adata`` or the model.
    """
    adata = synthetic(N_OBS, N_VARS, N_FACTORS, noise=0.2, extra=0.2, seed=0)
    model = _fit(adata)
    return adata, model


def recovery_metrics(adata, n_factors: int = N_FACTORS) -> dict[str, float]:
    """F1 of the annotated loadings, R² of the extra sets, factor correlations."""
    loadings = adata.varm["spexlvm_loadings"]
    factors = adata.obsm["X_spexlvm"]
    truth = adata.obsm["X_true"]
    f1 = spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :n_factors], loadings[:, :n_factors])
    r2 = np.asarray(adata.uns["spexlvm"]["r2"])
    corr = np.array([abs(np.corrcoef(factors[:, k], truth[:, k])[0, 1]) for k in range(n_factors)])
    return {
        "f1": float(f1),
        "extra_r2": float(r2[n_factors:].sum()),
        "corr_fraction": float(np.mean(corr > 0.9)),
        "corr_min": float(corr.min()),
        "r2_total": float(adata.uns["spexlvm"]["r2_total"]),
        "n_epochs": int(adata.uns["spexlvm"]["params"]["n_epochs"]),
    }


def assert_nested_equal(a, b, path: str = "") -> None:
    """Recursive, exact equality of uns-like dicts (string arrays compare by value)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for key in a:
            assert_nested_equal(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.shape == b.shape, path
        if a.dtype.kind in "UOS":
            assert b.dtype.kind in "UOS", path
            assert [str(x) for x in a.ravel()] == [str(x) for x in b.ravel()], path
        else:
            assert a.dtype == b.dtype, path
            np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, str | bool | np.bool_):
        assert type(a) is type(b) or (isinstance(a, str) and isinstance(b, str)), (
            path,
            type(a),
            type(b),
        )
        assert a == b, path
    else:
        assert a == b, (path, a, b)
        assert isinstance(b, type(a)) or isinstance(a, type(b)), (path, type(a), type(b))


@pytest.fixture(scope="session")
def recovery():
    """:func:`recovery_metrics`."""
    return recovery_metrics


@pytest.fixture(scope="session")
def nested_equal():
    """:func:`assert_nested_equal`."""
    return assert_nested_equal


@pytest.fixture
def data_passes(monkeypatch):
    """A list that grows by one for every pass the tools' statistics make over the data
    (each call of ``spexlvm.tl._calls.dense_chunks``)."""
    from spexlvm.tl import _calls

    passes = []
    original = _calls.dense_chunks

    def counting(x, chunk):
        passes.append(chunk)
        return original(x, chunk)

    monkeypatch.setattr(_calls, "dense_chunks", counting)
    return passes
