"""One-vs-rest multi-class GP classification against scikit-learn's one-vs-rest GPC."""

import jax
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

from bnn_jax import gp, uncertainty


def test_one_vs_rest_matches_sklearn(x64):
    x, y = make_blobs(n_samples=45, centers=3, cluster_std=1.5, random_state=0)
    x_test = np.random.default_rng(0).uniform(x.min(0) - 2, x.max(0) + 2, size=(20, 2))
    variance, lengthscale = 3.0, 1.5
    sk = GaussianProcessClassifier(
        ConstantKernel(variance, "fixed") * RBF(lengthscale, "fixed"), optimizer=None
    ).fit(x, y)
    kernel, lik = gp.rbf_kernel(variance=variance, lengthscale=lengthscale), gp.logistic()
    posterior = gp.fit_one_vs_rest(kernel, kernel.init(), x, y, num_classes=3, likelihood=lik)
    mean, var = gp.multiclass.latent_predictive(kernel, posterior, x_test)
    for c, estimator in enumerate(sk.base_estimator_.estimators_):
        np.testing.assert_allclose(posterior.modes.f[c], estimator.f_cached, atol=1e-8)
        sk_mean, sk_var = estimator.latent_mean_and_variance(x_test)
        np.testing.assert_allclose(mean[c], sk_mean, atol=1e-8)
        np.testing.assert_allclose(var[c], sk_var, atol=1e-8)
    log_probs = np.asarray(gp.multiclass.predictive_log_probs(lik, mean, var))
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-12)
    # sklearn normalises Williams & Barber's E[sigmoid(f_c)]; ours normalises MacKay's.
    np.testing.assert_allclose(np.exp(log_probs), sk.predict_proba(x_test), atol=2e-2)
    samples = gp.multiclass.sample_log_probs(lik, mean, var, jax.random.key(0), num_samples=64)
    assert samples.shape == (64, 20, 3)
    bald = np.asarray(uncertainty.bald(samples))
    assert np.all((bald >= -1e-12) & (bald <= np.asarray(uncertainty.predictive_entropy(samples))))


def test_one_vs_rest_rejects_bad_labels():
    x = np.zeros((4, 2))
    kernel = gp.rbf_kernel()
    with pytest.raises(ValueError, match="num_classes: expected an integer >= 2, got 1"):
        gp.fit_one_vs_rest(
            kernel, kernel.init(), x, np.zeros(4, int), num_classes=1, likelihood=gp.probit()
        )
    with pytest.raises(ValueError, match=r"y: expected labels in \{0, ..., 2\}, got \[0 3\]"):
        gp.fit_one_vs_rest(
            kernel, kernel.init(), x, np.array([0, 3, 0, 0]), num_classes=3, likelihood=gp.probit()
        )
