"""Property-based tests over AnnData inputs (hypothesis): fit, or a clear error.

Every generated case either fits with finite outputs or raises a ``ValueError`` /
``KeyError`` whose message names the problem: shapes down to one cell or one gene,
dense / CSR / CSC storage, float32 / float64 / integer values, NaN in rows, columns or
scattered, gene sets of every size from empty to all genes, duplicated and unicode names.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import spexlvm

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAMES = {
    "ascii": lambda i: f"G{i}",
    "unicode": lambda i: f"Gène-{i}-β",
    "duplicated": lambda i: f"G{i // 2}",
}


@st.composite
def cases(draw):
    n_obs = draw(st.integers(1, 12))
    n_vars = draw(st.integers(1, 10))
    dtype = draw(st.sampled_from(["float32", "float64", "int64"]))
    storage = draw(st.sampled_from(["dense", "csr", "csc"]))
    nan = draw(st.sampled_from(["none", "row", "column", "scattered", "all"]))
    names = draw(st.sampled_from(sorted(NAMES)))
    seed = draw(st.integers(0, 2**16))
    n_sets = draw(st.sampled_from([0, 1, 1, 2, 2, 3]))
    sizes = [draw(st.integers(0, n_vars + 2)) for _ in range(n_sets)]
    n_dense = draw(st.integers(0, 1))
    return n_obs, n_vars, dtype, storage, nan, names, seed, sizes, n_dense


def _adata(n_obs, n_vars, dtype, storage, nan, names, seed):
    rng = np.random.default_rng(seed)
    x = rng.gamma(1.0, 1.0, size=(n_obs, n_vars))
    if dtype == "int64":
        x = np.round(x * 3)
    x = x.astype(dtype)
    if dtype != "int64":
        if nan == "row":
            x[0, :] = np.nan
        elif nan == "column":
            x[:, 0] = np.nan
        elif nan == "scattered":
            x[rng.random(x.shape) < 0.2] = np.nan
        elif nan == "all":
            x[:] = np.nan
    if storage == "csr":
        x = sp.csr_matrix(x)
    elif storage == "csc":
        x = sp.csc_matrix(x)
    var = pd.DataFrame(index=pd.Index([NAMES[names](i) for i in range(n_vars)], dtype=str))
    obs = pd.DataFrame(index=pd.Index([f"c{i}" for i in range(n_obs)], dtype=str))
    return AnnData(x, obs=obs, var=var)


def _gene_sets(adata, sizes, seed):
    rng = np.random.default_rng(seed + 1)
    genes = [*adata.var_names, "NOT_MEASURED_1", "NOT_MEASURED_2"]
    return {
        f"SET_{i}_ü": list(rng.choice(genes, size=min(size, len(genes)), replace=False))
        for i, size in enumerate(sizes)
    }


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_fit_or_clear_error(case):
    n_obs, n_vars, dtype, storage, nan, names, seed, sizes, n_dense = case
    adata = _adata(n_obs, n_vars, dtype, storage, nan, names, seed)
    sets = _gene_sets(adata, sizes, seed)
    x_before = adata.X.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spexlvm.tl.fit(
                adata,
                sets or None,
                n_dense=n_dense,
                max_epochs=2,
                progress_bar=False,
                seed=0,
            )
    except (ValueError, KeyError) as err:
        message = str(err)
        assert len(message) > 20, f"unhelpful error for {case}: {message!r}"
        # raised by spexlvm's own checks, not by a library deep inside the fit
        frame = err.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        where = frame.tb_frame.f_code.co_filename
        assert "spexlvm" in where and "site-packages" not in where, (case, where, message)
        # the input is not modified on failure
        _assert_same(adata.X, x_before)
        return
    scores = adata.obsm["X_spexlvm"]
    loadings = adata.varm["spexlvm_loadings"]
    assert scores.shape[0] == n_obs
    assert loadings.shape[0] == n_vars
    assert np.isfinite(scores).all(), case
    assert np.isfinite(loadings).all(), case
    assert np.isfinite(adata.uns["spexlvm"]["r2"]).all(), case
    _assert_same(adata.X, x_before)


def _assert_same(a, b):
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    np.testing.assert_array_equal(a, b)
