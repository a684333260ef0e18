"""Where the fit starts (``spexlvm._init``): each set's axis on standardised genes."""

from __future__ import annotations

import numpy as np
import torch

import spexlvm
from spexlvm._init import masked_power_iteration, standardised_set_axes
from spexlvm._utils import column_correlation
from spexlvm.datasets._graded import graded_effects


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson r| of two vectors."""
    return abs(float(column_correlation(a[:, None], b[:, None])[0, 0]))


def test_a_loud_gene_of_another_programme_does_not_choose_the_start():
    """40 genes with a weak programme of their own and, in the same set (annotation noise),
    one gene with 30x the standard deviation driven by another programme: the set's raw
    leading axis is that gene's programme, the standardised one the set's own."""
    rng = np.random.default_rng(0)
    n, g = 1000, 60
    own, other = rng.normal(size=n), rng.normal(size=n)
    y = rng.normal(size=(n, g))
    y[:, :40] += 0.5 * own[:, None]
    y[:, 40] = 30.0 * (other + 0.3 * rng.normal(size=n))
    mask = np.zeros((g, 1), bool)
    mask[:41] = True
    yt, mt = torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(mask)
    raw = masked_power_iteration(yt, mt).numpy()[:, 0]
    std = standardised_set_axes(yt, mt).numpy()[:, 0]
    assert _corr(y @ raw, other) > 0.9  # the loud gene chooses the raw start
    assert _corr(y / y.std(0) @ (std / y.std(0)), own) > 0.9
    assert np.all(std[~mask[:, 0]] == 0)


def test_standardised_axis_has_the_data_units():
    """Rank one, genes of very different scales: a unit-variance score along the start
    reproduces the data, so the loadings are the planted ones up to the sign."""
    rng = np.random.default_rng(1)
    n = 500
    z = rng.normal(size=n)
    z = (z - z.mean()) / z.std()
    a = rng.normal(size=30) * np.exp(rng.normal(0, 1.0, size=30))
    y = np.outer(z, a)
    mask = np.ones((30, 1), bool)
    mask[25:] = False
    a[25:] = 0.0
    y[:, 25:] = 0.0  # constant genes outside the set stay at zero
    w = standardised_set_axes(torch.as_tensor(y), torch.as_tensor(mask)).numpy()[:, 0]
    sign = np.sign(w @ a)
    np.testing.assert_allclose(sign * w, a, rtol=1e-4, atol=1e-8)


def test_coordinate_ascent_keeps_every_planted_programme_on_its_own_factor():
    """Synthetic choice data of the start (graded effects, seed 6, 10 decoys): from the raw
    axes two planted factors started on other programmes and decoys took theirs
    (|r| 0.01 and 0.03 with their own programme); from standardised axes none is lost."""
    adata, sets, _ = graded_effects(6)
    decoys = spexlvm.pp.decoy_gene_sets(adata, sets, n=10, seed=6)
    spexlvm.tl.fit(
        adata, {**sets, **decoys}, seed=6, nested="keep", engine="cavi", progress_bar=False
    )
    z, truth = adata.obsm["X_spexlvm"], adata.obsm["X_true"]
    own = np.abs(column_correlation(truth, z[:, : truth.shape[1]], paired=True))
    assert min(own) > 0.85, np.round(own, 2)


def test_one_sampled_cell_gives_a_finite_start():
    """A single sampled cell (sd 0 for every gene): the start is zero, not NaN."""
    y = torch.randn(1, 8)
    mask = torch.ones(8, 2, dtype=torch.bool)
    w = standardised_set_axes(y, mask)
    assert torch.isfinite(w).all()
    assert torch.equal(w, torch.zeros_like(w))
