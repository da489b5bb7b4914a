"""Gaussian-process classification, the notebook's reference model: kernels in log space,
binary Laplace inference (Rasmussen & Williams Alg. 3.1, 3.2, 5.1), type-II maximum likelihood,
predictive entropy and Houlsby's BALD.

Example:
  >>> from bnn_jax import gp
  >>> kernel, lik = gp.arcsine_kernel(), gp.probit()
  >>> result = gp.optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=lik)
  >>> posterior = gp.fit(kernel, result.params, x, y, likelihood=lik)
  >>> mean, var = gp.latent_predictive(kernel, posterior, x_grid)
  >>> entropy, bald = gp.predictive_entropy(lik, mean, var), gp.houlsby_bald(mean, var)

Multi-class one-vs-rest lives in :mod:`bnn_jax.gp.multiclass` (``gp.fit_one_vs_rest``).
"""

from bnn_jax.gp import multiclass
from bnn_jax.gp.classification import (
    GPPosterior,
    LaplaceMode,
    find_mode,
    fit,
    log_marginal_likelihood,
)
from bnn_jax.gp.hyperparameters import (
    HyperparameterFit,
    negative_log_marginal_likelihood,
    optimize_hyperparameters,
)
from bnn_jax.gp.kernels import (
    ArcCosineParams,
    ArcSineParams,
    Kernel,
    RBFParams,
    arccosine_kernel,
    arcsine_kernel,
    rbf_kernel,
    sum_kernel,
)
from bnn_jax.gp.likelihoods import Likelihood, logistic, probit
from bnn_jax.gp.multiclass import OneVsRestPosterior, fit_one_vs_rest
from bnn_jax.gp.predict import (
    houlsby_bald,
    latent_function_samples,
    latent_joint_predictive,
    latent_predictive,
    latent_sample_log_probs,
    monte_carlo_bald,
    predictive_entropy,
    predictive_log_probs,
)

__all__ = [
    "ArcCosineParams",
    "ArcSineParams",
    "GPPosterior",
    "HyperparameterFit",
    "Kernel",
    "LaplaceMode",
    "Likelihood",
    "OneVsRestPosterior",
    "RBFParams",
    "arccosine_kernel",
    "arcsine_kernel",
    "find_mode",
    "fit",
    "fit_one_vs_rest",
    "houlsby_bald",
    "latent_function_samples",
    "latent_joint_predictive",
    "latent_predictive",
    "latent_sample_log_probs",
    "log_marginal_likelihood",
    "logistic",
    "monte_carlo_bald",
    "multiclass",
    "negative_log_marginal_likelihood",
    "optimize_hyperparameters",
    "predictive_entropy",
    "predictive_log_probs",
    "probit",
    "rbf_kernel",
    "sum_kernel",
]
