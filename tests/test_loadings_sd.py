"""The loadings' posterior sd with a full K x K posterior per gene (``get_loadings_sd``)."""

import numpy as np
import pytest
import torch


def _brute_force_var(model, adata):
    """Per gene: inverse of E[prec_g] n_g/N sum_n E[z z^T] + diag(E[1/v_g]) in float64."""
    module = model.module
    with torch.no_grad():
        moment = None
        for x, design in model._batches(model._validate_anndata(adata), None):
            post = module.score_posterior(x, design=design)
            m, cov = post["means"].double(), post["cov"].double()
            part = m.T @ m + (cov * m.shape[0] if cov.dim() == 2 else cov.sum(0))
            moment = part if moment is None else moment + part
        prec = module.expected_precision().double()
        n_obs = 2.0 * (module.prec_shape - module.noise_prior_shape).double()
        prior = module.prior_precision_moments()[0].double()
    out = np.empty(tuple(prior.shape))
    for g in range(prior.shape[0]):
        lam = prec[g] * n_obs[g] / module.n_obs * moment + torch.diag(prior[g])
        out[g] = torch.diagonal(torch.linalg.inv(lam)).numpy()
    return out * float(module.data_scale) ** 2


def test_joint_sd_is_the_inverse_of_each_genes_precision(small_fit):
    adata, model = small_fit
    joint = model.get_loadings_sd("joint").to_numpy()
    expected = np.sqrt(_brute_force_var(model, adata))
    np.testing.assert_allclose(joint, expected, rtol=2e-3)
    # tl.fit stores the mean-field sd (the default)
    mean_field = model.get_loadings_sd().to_numpy()
    np.testing.assert_allclose(adata.varm["spexlvm_loadings_sd"], mean_field, rtol=1e-6)


def test_joint_sd_is_at_least_the_conditional_mean_field_sd(small_fit):
    """[Lambda^-1]_kk >= 1 / Lambda_kk: a factor that shares genes with another is less sure."""
    adata, model = small_fit
    module = model.module
    with torch.no_grad():
        moment = sum(
            module.score_second_moment(x, design)
            for x, design in model._batches(model._validate_anndata(adata), None)
        )
        prec = module.expected_precision()
        prior = module.prior_precision_moments()[0]
        diag = prec[:, None] * torch.diagonal(moment)[None, :] + prior
    conditional = (torch.rsqrt(diag) * module.data_scale).numpy()
    joint = model.get_loadings_sd("joint").to_numpy()
    assert np.all(joint >= conditional * (1 - 1e-4))


def test_get_loadings_sd_rejects_unknown_kind(small_fit):
    _, model = small_fit
    with pytest.raises(ValueError, match="kind must be 'joint' or 'mean_field'"):
        model.get_loadings_sd("full")
