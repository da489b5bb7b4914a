"""Laplace approximations of the weight posterior: fit, sample, marginal likelihood, tuning.

``posterior = fit(curvature, params, batches, ...)`` builds ``N(theta*, (s C + tau I)^-1)``;
``sample``, ``log_det`` and ``log_marginal_likelihood`` use it; ``optimize_marglik`` (gradient
ascent of the evidence) and ``search`` (grid/random search on a validation objective) tune
``(scale, prior_prec)`` without re-estimating the curvature; ``save``/``load`` store a fitted
posterior (msgpack, checked against the curvature and the parameters when loaded);
``diagnostics`` reports how much of it the data determine (effective number of parameters).

Example:
  >>> curv = curvature.kfac(apply_fn, lik, fisher=curvature.mc_fisher())
  >>> post = laplace.fit(curv, params, data.Batches(x, y, 256), key=key, prior_prec=1.0)
  >>> post, trace = laplace.optimize_marglik(post, steps=100, learning_rate=0.1)
  >>> thetas = laplace.sample(post, key, 30)                # leading sample axis
"""

from bnn_jax.laplace.diagnostics import Diagnostics, diagnostics
from bnn_jax.laplace.marglik import (
    MarglikTrace,
    log_marginal_likelihood,
    noise_std,
    optimize_marglik,
)
from bnn_jax.laplace.posterior import (
    Posterior,
    fit,
    layerwise_prior,
    log_det,
    sample,
    sample_one,
)
from bnn_jax.laplace.search import (
    GridEdgeWarning,
    SearchResult,
    error_plus_ece,
    search,
    validation_objective,
)
from bnn_jax.laplace.storage import load, save

__all__ = [
    "Diagnostics",
    "GridEdgeWarning",
    "MarglikTrace",
    "Posterior",
    "SearchResult",
    "diagnostics",
    "error_plus_ece",
    "fit",
    "layerwise_prior",
    "load",
    "log_det",
    "log_marginal_likelihood",
    "noise_std",
    "optimize_marglik",
    "sample",
    "sample_one",
    "save",
    "search",
    "validation_objective",
]
