"""``laplace.diagnostics``: the effective number of parameters against dense float64 references
for every structure, the prior's share of the variance, Hutchinson's estimate and the errors."""

import functools

import jax
import jax.flatten_util
import numpy as np
import pytest
from test_laplace_problems import dense_covariance, fit, posterior, problem, structure_factory
from test_laplace_problems import key as make_key

from bnn_jax import curvature, laplace
from bnn_jax.curvature import subset as subsets
from bnn_jax.curvature.base import prior_vector
from bnn_jax.curvature.layout import Layout

FACTORIES = {
    "block_diagonal": curvature.block_diagonal,
    "low_rank": functools.partial(curvature.low_rank, rank=3, key=make_key(7)),
}


def _partition(apply_fn, likelihood, *, fisher, subset=None):
    del subset
    _, params, x, _ = problem("mlp")
    last = subsets.last_layer(apply_fn, params, x[:1])
    return curvature.partition(
        [
            curvature.dense(apply_fn, likelihood, fisher=fisher, subset=last),
            curvature.diagonal(
                apply_fn, likelihood, fisher=fisher, subset=subsets.complement(last)
            ),
        ]
    )


def _posterior(name, last_layer=False, layerwise=False):
    if name in ("dense", "diagonal", "kfac", "kfac_per_factor", "efb"):
        return posterior(name, last_layer=last_layer, layerwise=layerwise)[0]
    factory = _partition if name == "partition" else FACTORIES[name]
    apply_fn, params, x, y = problem("mlp")
    subset = subsets.last_layer(apply_fn, params, x[:1]) if last_layer else None
    return fit(factory, apply_fn, params, x, y, subset=subset, prior_prec=0.5, scale=1.5)


def _reference(post):
    """``P - tr(diag(tau) Sigma)`` and ``tr(Sigma) / tr(diag(1/tau))`` from the dense inverse
    of the precision built column by column (float64)."""
    sigma = dense_covariance(post)
    taus = np.asarray(prior_vector(post.prior_prec, Layout.of(post.subset.select(post.mean))))
    gamma = len(taus) - np.sum(taus * np.diag(sigma))
    return gamma, np.trace(sigma) / np.sum(1.0 / taus)


CASES = [
    ("dense", False, False),
    ("diagonal", False, False),
    ("kfac", False, False),
    ("kfac", True, False),
    ("kfac", False, True),
    ("kfac_per_factor", False, False),
    ("efb", False, False),
    ("diagonal", False, True),
    ("block_diagonal", False, False),
    ("low_rank", False, False),
    ("partition", False, False),
    ("dense", True, False),
]


@pytest.mark.parametrize("name,last_layer,layerwise", CASES)
def test_gamma_equals_the_dense_reference(x64, name, last_layer, layerwise):
    post = _posterior(name, last_layer, layerwise)
    gamma, share = _reference(post)
    d = laplace.diagnostics(post)
    expected_method = "layer_precisions" if post.curvature.layer_precisions else "solves"
    assert d.method == expected_method
    np.testing.assert_allclose(d.gamma, gamma, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(d.prior_share, share, rtol=1e-9)
    assert d.num_params == jax.flatten_util.ravel_pytree(post.subset.select(post.mean))[0].size
    np.testing.assert_allclose(d.fraction, gamma / d.num_params, rtol=1e-9)
    assert 0 < d.gamma < d.num_params and d.std_error == 0.0


@pytest.mark.parametrize("name", ["dense", "diagonal", "kfac", "efb"])
def test_gamma_is_the_eigenvalue_sum_where_the_precision_is_s_c_plus_tau(x64, name):
    """``sum_i s lam_i / (s lam_i + tau)`` over the eigenvalues of ``C`` (``to_dense``); with a
    scalar tau the prior share is ``1 - gamma / P``."""
    post = _posterior(name)
    lam = np.linalg.eigvalsh(np.asarray(post.curvature.to_dense(post.state)))
    s, tau = float(post.scale), float(post.prior_prec)
    d = laplace.diagnostics(post)
    np.testing.assert_allclose(d.gamma, np.sum(s * lam / (s * lam + tau)), rtol=1e-9)
    np.testing.assert_allclose(d.prior_share, 1 - d.fraction, rtol=1e-9)
    # limits: a huge prior leaves the prior (gamma -> 0), a huge scale the data (gamma -> rank)
    prior_only = laplace.diagnostics(post.replace(prior_prec=post.prior_prec * 1e9))
    assert prior_only.fraction < 1e-6 and prior_only.prior_share > 1 - 1e-6


def test_hutchinson_estimate_and_the_error_naming_the_structure(x64):
    post = _posterior("partition")
    exact = laplace.diagnostics(post)
    with pytest.raises(ValueError, match=r"PartitionState.*layer_precisions.*key="):
        laplace.diagnostics(post, max_exact=4)
    est = laplace.diagnostics(post, max_exact=4, key=make_key(0), num_probes=2000)
    assert est.method == "hutchinson" and est.std_error > 0
    assert abs(est.gamma - exact.gamma) < 4 * est.std_error + 1e-9
    with pytest.raises(ValueError, match="num_probes"):
        laplace.diagnostics(post, num_probes=1)


def test_a_collapsed_curvature_is_prior_dominated(x64):
    """A curvature near zero (a saturated MAP) leaves the posterior at the prior."""
    apply_fn, params, x, y = problem("mlp")
    post = fit(structure_factory("kfac"), apply_fn, params, x, y, scale=1e-9)
    d = laplace.diagnostics(post)
    assert d.fraction < 1e-6 and d.prior_share > 1 - 1e-6
