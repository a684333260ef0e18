"""Each number has one implementation: pl draws tl's numbers, the model's R² is tl's.

R² (:class:`spexlvm._r2.R2Accumulator`), AUROC (:func:`spexlvm.tl._auroc.one_vs_rest_auroc`)
and the top genes of a factor (:func:`spexlvm.tl._calls.top_genes`) are computed in one
place each; these tests check that every caller gets the same numbers (exactly where the
same arithmetic runs, within float round-off where the model computes on its device).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import spexlvm
from spexlvm._r2 import R2Accumulator
from spexlvm.tl._auroc import one_vs_rest_auroc
from spexlvm.tl._calls import top_genes

pytestmark = pytest.mark.filterwarnings("ignore:Training reached max_epochs")


@pytest.fixture(scope="module")
def fitted():
    adata = spexlvm.datasets.synthetic(300, 80, 3, seed=3)
    model = spexlvm.tl.fit(adata, seed=0, max_epochs=30, enable_progress_bar=False)
    true = adata.obsm["X_true"]
    adata.obs["group"] = pd.Categorical(
        np.select([true[:, 0] > 0.5, true[:, 1] > 0.5], ["A", "B"], "C")
    )
    return adata, model


def test_r2_accumulator_known_truth():
    """A rank-1 signal without noise: its factor explains all of it, the other nothing."""
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 2))
    w = np.zeros((10, 2))
    w[:, 0] = rng.normal(size=10)
    w[:, 1] = 0.0
    y = s[:, :1] @ w[:, :1].T
    acc = R2Accumulator()
    for rows in (slice(0, 70), slice(70, 200)):  # chunks add up
        acc.add(y[rows], None, s[rows], w)
    r2, total = acc.r2()
    np.testing.assert_allclose(r2, [1.0, 0.0], atol=1e-12)
    assert total == pytest.approx(1.0, abs=1e-12)
    # missing entries (mask 0) leave the R² of the rest
    o = np.ones_like(y)
    o[::3, ::2] = 0.0
    acc = R2Accumulator()
    acc.add(y * o, o, s, w)
    np.testing.assert_allclose(acc.r2()[0], [1.0, 0.0], atol=1e-12)


def test_r2_accumulator_complete_data_shortcut_is_the_residual_sum():
    """Complete data without covariates: the total R² from the cross-products equals the
    explicit residual sum of squares; with an all-ones mask (the explicit path) too, and
    in torch as in numpy."""
    rng = np.random.default_rng(3)
    s, w = rng.normal(size=(300, 4)), rng.normal(size=(25, 4))
    y = s @ w.T + rng.normal(size=(300, 25))
    y -= y.mean(0)
    expected = 1.0 - ((y - s @ w.T) ** 2).sum() / (y * y).sum()
    per_factor = [
        1.0 - ((y - np.outer(s[:, k], w[:, k])) ** 2).sum() / (y * y).sum() for k in range(4)
    ]
    fast, explicit, tensors = R2Accumulator(), R2Accumulator(), R2Accumulator()
    fast.add(y, None, s, w)
    explicit.add(y, np.ones_like(y), s, w)
    tensors.add(torch.as_tensor(y), None, torch.as_tensor(s), torch.as_tensor(w))
    for acc in (fast, explicit, tensors):
        r2, total = acc.r2()
        assert total == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(np.asarray(r2), per_factor, rtol=1e-10)


def test_model_tl_and_pl_r2_agree(fitted):
    adata, model = fitted
    adata = adata.copy()
    df = spexlvm.tl.variance_explained(adata, groupby="group")
    names = list(spexlvm.get.factor_names(adata))
    r2_model = model.get_r2()
    np.testing.assert_allclose(df.loc[names, "r2"], r2_model.loc[names], rtol=1e-5, atol=1e-7)
    assert df.attrs["total"] == pytest.approx(r2_model.attrs["total"], rel=1e-5)
    from spexlvm.pl._variance_explained import r2_by_group

    per_group, groups = r2_by_group(adata, "group", list(range(len(names))))
    assert groups == ["A", "B", "C"]
    stored = adata.uns["spexlvm"]["variance_explained"]["r2_by_group"]  # groups x factors
    np.testing.assert_array_equal(per_group, np.asarray(stored).T)  # the same arithmetic


def test_auroc_is_sklearns_and_pl_draws_tls(fitted):
    adata, _ = fitted
    adata = adata.copy()
    scores = adata.obsm["X_spexlvm"]
    inside = (adata.obs["group"] == "A").to_numpy()
    auc, pval = one_vs_rest_auroc(scores, inside)
    expected = [roc_auc_score(inside, scores[:, k]) for k in range(scores.shape[1])]
    np.testing.assert_allclose(auc, expected, rtol=1e-12)
    assert np.all((pval >= 0) & (pval <= 1))
    assert np.isnan(one_vs_rest_auroc(scores, np.ones(len(inside), bool))[0]).all()

    from spexlvm.pl._auroc import _auroc_matrix

    idx = list(range(scores.shape[1]))
    names = [str(n) for n in spexlvm.get.factor_names(adata)]
    computed, groups, source = _auroc_matrix(adata, "group", idx, names, "spexlvm", "auroc")
    assert source == "computed"  # tl.auroc has not run: pl computes, with tl's function
    tl = spexlvm.tl.auroc(adata, "group")
    table = tl.pivot(index="factor", columns="group", values="auroc").loc[names, groups]
    np.testing.assert_array_equal(computed, table.to_numpy())
    stored, _, source = _auroc_matrix(adata, "group", idx, names, "spexlvm", "auroc")
    assert source == "tl"
    np.testing.assert_array_equal(stored, computed)


def test_top_genes_rule_and_its_users(fitted):
    w = np.array([[1.0, 0.0], [-0.5, 0.0], [0.1, 0.0], [0.09, 0.0]])
    np.testing.assert_array_equal(
        top_genes(w), [[True, False], [True, False], [True, False], [False, False]]
    )
    np.testing.assert_array_equal(top_genes(w[:, 0], 0.6), [True, False, False, False])

    adata, _ = fitted
    from spexlvm.pl._utils import gene_status

    status, source = gene_status(adata, 0)
    assert source == "threshold"  # no tl.refine result: the top-genes rule
    top = top_genes(adata.varm["spexlvm_loadings"][:, 0])
    annotated = spexlvm.get.fit_mask(adata)[:, 0]
    np.testing.assert_array_equal(status == "added", top & ~annotated)
    np.testing.assert_array_equal(status == "removed", ~top & annotated)
