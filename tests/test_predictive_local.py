"""Local reparameterisation predictive: exact per-input distributions, the same as weight
sampling for each input."""

import numpy as np
import pytest
import scipy.stats
from test_laplace_problems import key as make_key
from test_laplace_problems import posterior

from bnn_jax import predictive


def _logit_differences(log_probs):
    """``f_k - f_0`` per sample, input and class ``k > 0`` (log-softmax keeps differences)."""
    return np.asarray(log_probs[..., 1:] - log_probs[..., :1])


def test_last_layer_draws_are_the_exact_gaussian_of_the_linear_outputs(x64):
    # Only the last (Dense) layer is random, so the logits are linear in the random weights and
    # exactly N(mu, J Sigma J^T): the linearised moments are the reference.
    post, x = posterior("diagonal", "mlp", True)
    x = x[:4]
    num = 20000
    diff = _logit_differences(predictive.local_log_probs(post, x, key=make_key(0), num_samples=num))
    moments = predictive.glm_moments(post, x)
    a = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    mean = np.asarray(moments.mean) @ a.T
    cov = np.einsum("ik,bkl,jl->bij", a, np.asarray(moments.covariance), a)
    var = np.diagonal(cov, axis1=1, axis2=2)
    assert np.max(np.abs(diff.mean(0) - mean) / np.sqrt(var / num)) < 5
    centred = diff - mean
    emp = np.einsum("tbi,tbj->bij", centred, centred) / num
    std = np.sqrt((var[:, :, None] * var[:, None, :] + cov**2) / num)
    assert np.max(np.abs(emp - cov) / std) < 5


def test_per_input_distribution_equals_weight_sampling(x64):
    # KFAC (per-factor prior) on the CNN: local draws for the Dense layer, one weight draw per
    # input for the Conv layer and the LayerNorm parameters.
    post, x = posterior("kfac_per_factor", "cnn")
    x = x[:4]
    num = 2000
    local = _logit_differences(
        predictive.local_log_probs(post, x, key=make_key(1), num_samples=num, chunk_size=500)
    )
    weights = _logit_differences(
        predictive.laplace_log_probs(post, x, key=make_key(2), num_samples=num)
    )
    p_values = [
        scipy.stats.ks_2samp(local[:, b, k], weights[:, b, k]).pvalue
        for b in range(x.shape[0])
        for k in range(2)
    ]
    assert min(p_values) > 1e-4, p_values
    # Draws are independent across inputs (unlike weight sampling's common random numbers).
    corr_local = np.corrcoef(local[:, 0, 0], local[:, 1, 0])[0, 1]
    corr_weights = np.corrcoef(weights[:, 0, 0], weights[:, 1, 0])[0, 1]
    assert abs(corr_local) < 0.1 < abs(corr_weights)


def test_bad_inputs_raise_value_errors(x64):
    post, x = posterior("dense")
    with pytest.raises(ValueError, match="posterior"):
        predictive.local_log_probs(post, x, key=make_key(0), num_samples=2)
    post, x = posterior("kfac")
    with pytest.raises(ValueError, match="num_samples"):
        predictive.local_log_probs(post, x, key=make_key(0), num_samples=0)
    with pytest.raises(ValueError, match="x"):
        predictive.local_log_probs(post, x * np.nan, key=make_key(0), num_samples=2)
