"""Posterior predictives: Monte Carlo over posterior samples (weight samples with common random
numbers, or local reparameterisation through Kronecker factors) and the linearised (GLM)
predictive with probit and MC links; for regression (Gaussian likelihood) the predictive mean
and variance, linearised or by MC (``glm_regression``, ``mc_regression``).

Predictive samples are log-probabilities ``[num_samples, batch, classes]``;
``uncertainty.mean_log_probs`` turns them into the log of the MC mean probability.
"""

from bnn_jax.predictive.linearised import (
    FunctionalMoments,
    glm_mc_log_probs,
    glm_moments,
    glm_probit_log_probs,
    jacobian_covariance,
    mc_link,
    probit_link,
)
from bnn_jax.predictive.local import local_log_probs
from bnn_jax.predictive.monte_carlo import laplace_log_probs, sample_log_probs
from bnn_jax.predictive.regression import RegressionPredictive, glm_regression, mc_regression
from bnn_jax.uncertainty import mean_log_probs

__all__ = [
    "FunctionalMoments",
    "RegressionPredictive",
    "glm_mc_log_probs",
    "glm_moments",
    "glm_probit_log_probs",
    "glm_regression",
    "jacobian_covariance",
    "laplace_log_probs",
    "local_log_probs",
    "mc_link",
    "mc_regression",
    "mean_log_probs",
    "probit_link",
    "sample_log_probs",
]
