"""Every gene set its own factor by default; merged factors found by any member's name."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import spexlvm
from spexlvm.datasets import synthetic


def _sets(adata) -> dict[str, list[str]]:
    """The synthetic annotation as a dict, plus a near-copy of the first set (NEAR_COPY)."""
    names = [str(n) for n in adata.uns["spexlvm_mask"]["names"]]
    mask = adata.varm["spexlvm_mask"]
    sets = {n: list(adata.var_names[mask[:, j]]) for j, n in enumerate(names)}
    first = sets[names[0]]
    outside = next(g for g in adata.var_names if g not in first)
    sets["NEAR_COPY"] = [*first[1:], outside]  # same size, all but one gene shared
    return sets


@pytest.fixture(scope="module")
def merged_fit(run_fit):
    """A short fit with nested="merge": the first set and NEAR_COPY are one factor."""
    adata = synthetic(200, 120, 4, noise=0.2, seed=0)
    sets = _sets(adata)
    del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    truth = adata.obsm["X_true"][:, 0]
    adata.obs["group"] = pd.Categorical(np.where(truth > 0, "high", "low"))
    with pytest.warns(UserWarning, match="merged 1 gene set"):
        model = run_fit(adata, gene_sets=sets, nested="merge", max_epochs=5, early_stopping=False)
    return adata, model, sets


def test_default_keeps_every_set(run_fit):
    adata = synthetic(200, 120, 4, noise=0.2, seed=0)
    sets = _sets(adata)
    del adata.varm["spexlvm_mask"], adata.uns["spexlvm_mask"]
    # the first set and its near-copy stay two factors and compete: tl.fit says so
    with pytest.warns(UserWarning, match=r"NEAR_COPY.*spexlvm\.tl\.competing_sets\(adata"):
        run_fit(adata, gene_sets=sets, n_dense=1, max_epochs=3, early_stopping=False)
    assert list(adata.uns["spexlvm"]["factor_names"]) == [*sets, "dense_1"]
    assert adata.uns["spexlvm"]["params"]["mask_key"] == "spexlvm_mask"
    assert adata.uns["spexlvm_mask"]["params"]["nested"] == "keep"
    assert adata.uns["spexlvm_mask"]["merged"]["name"].size == 0


def test_merged_factor_named_after_members(merged_fit):
    adata, model, sets = merged_fit
    first = next(iter(sets))
    merged = f"{first} + NEAR_COPY"
    names = list(adata.uns["spexlvm"]["factor_names"])
    assert names == [merged, *(n for n in sets if n not in (first, "NEAR_COPY"))]
    assert model.factor_names == names
    for member in (first, "NEAR_COPY", merged, "near copy", 0):
        assert spexlvm.tl.factor_name(adata, member) == merged
    # a DataFrame column lookup goes through the resolver
    column = model.get_factors()[spexlvm.tl.factor_name(adata, "NEAR_COPY")]
    np.testing.assert_allclose(column.to_numpy(), adata.obsm["X_spexlvm"][:, 0], rtol=1e-5)
    with pytest.raises(KeyError, match="not found"):
        spexlvm.tl.factor_name(adata, "NO_SUCH_SET")
    assert spexlvm.pl.short_name("REACTOME_A_B + REACTOME_C") == "A B + C"


@pytest.mark.parametrize("member", ["NEAR_COPY", "first"])
def test_every_function_taking_factor_names_accepts_a_member(merged_fit, member):
    adata, _, sets = merged_fit
    first = next(iter(sets))
    member = first if member == "first" else member
    merged = f"{first} + NEAR_COPY"
    other = next(n for n in sets if n not in (first, "NEAR_COPY"))

    df = spexlvm.tl.auroc(adata, "group", factors=[member, other])
    assert df["factor"].unique().tolist() == [merged, other]
    df = spexlvm.tl.auroc(adata, "group", factors=member)
    assert df["factor"].unique().tolist() == [merged]

    ax = spexlvm.pl.scatter(adata, member, other, color="group", show=False)
    assert ax.get_xlabel().startswith(spexlvm.pl.short_name(merged))
    ax = spexlvm.pl.top_loadings(adata, member, show=False)
    assert ax is not None
    ax = spexlvm.pl.auroc(adata, "group", factors=[member], show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == [spexlvm.pl.short_name(merged)]
    fig = spexlvm.pl.mask_heatmap(adata, factors=[member, other], show=False)
    assert fig is not None
    ax = spexlvm.pl.refinement(adata, [member], show=False)
    assert ax is not None
    plt.close("all")
