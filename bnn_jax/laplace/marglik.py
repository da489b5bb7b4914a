"""Laplace approximation of the log marginal likelihood, and its maximisation over (N, tau).

With the likelihood tempered by ``s`` (``p(D | theta)^s``, whose GGN is ``s C``), the prior
``N(0, tau^-1 I)`` on the ``P`` selected parameters and the Gaussian integral around the MAP
``theta*``::

    log p(D) ~= -s NLL(theta*) - tau/2 ||theta*_sel||^2 + P/2 log tau
                - 1/2 log det(s C + tau I)

where ``NLL(theta*)`` is the training NLL summed over the examples (``posterior.train_nll``)
and the ``2 pi`` factors of the prior and of the Gaussian integral cancel. ``s`` enters the
likelihood term and the curvature alike (laplace-torch does the same with its temperature),
so ``s = 1`` is the ordinary evidence. The MAP is kept fixed when ``(s, tau)`` change (no
retraining), as usual. For Kronecker structures with ``kron.per_factor_prior()`` the
log-determinant is that of their per-factor precision.

Gaussian likelihoods (regression): tempering ``N(y; f, sigma^2 I)`` by ``s`` gives, up to a
constant, ``N(y; f, sigma^2 / s I)``, and its GGN is ``s C`` (``C`` was estimated at ``sigma``
and scales as ``1 / sigma^2``). So for a Gaussian posterior the scale *is* the observation
noise: the posterior with scale ``s`` is the (untempered) posterior of the noise
``sigma_s = sigma / sqrt(s)`` (``noise_std``), and its evidence is that of the normalised
Gaussian. With ``M = N K`` target values (``N = state.num_data`` examples, ``K =
likelihood.num_outputs``) and the squared residuals recovered from the stored NLL,
``SSE / (2 sigma^2) = NLL(theta*) - M/2 log(2 pi sigma^2)``,

    -NLL_s(theta*) = -s SSE / (2 sigma^2) - M/2 log(2 pi sigma^2 / s)

replaces ``-s NLL(theta*)`` above (they agree at ``s = 1``). Its stationary point in ``s`` is
MacKay's ``sigma_s^2 = (SSE + sigma_s^2 tr(Sigma s C)) / M``. ``optimize_marglik(...,
tune_noise=True)`` tunes ``sigma_s`` jointly with ``tau`` this way and returns the posterior
with the new scale ``s = sigma^2 / sigma_s^2``; the likelihood, the curvature and ``train_nll``
stay those of the fit, so every predictive sees the new noise through the scale.

With a layer-wise prior (one ``tau_l`` per selected leaf ``l`` of ``P_l`` scalars) the prior
terms are ``sum_l (-tau_l/2 ||theta*_l||^2 + P_l/2 log tau_l)`` and the determinant is that of
``s C + diag(tau)``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import checks
from bnn_jax.curvature.base import is_scalar_prior, prior_per_leaf
from bnn_jax.curvature.layout import Layout
from bnn_jax.laplace.posterior import Posterior, check_hyperparameters_of, check_posterior

__all__ = ["MarglikTrace", "log_marginal_likelihood", "noise_std", "optimize_marglik"]


def _is_gaussian(posterior: Posterior) -> bool:
    return posterior.likelihood.task == "regression"


def _check_num_outputs(posterior: Posterior) -> None:
    if _is_gaussian(posterior) and posterior.likelihood.num_outputs is None:
        raise ValueError(
            "posterior: the marginal likelihood of a Gaussian posterior counts the N K target "
            "values; fit it with losses.gaussian(sigma=..., num_outputs=K)"
        )


def noise_std(posterior: Posterior, scale=None) -> jax.Array:
    """The observation noise ``sigma / sqrt(scale)`` of a Gaussian (regression) posterior, with
    ``sigma`` its likelihood's (module docstring); ``scale`` defaults to ``posterior.scale``.

    Example:
      >>> post, _ = laplace.optimize_marglik(post, steps=300, learning_rate=0.05,
      ...                                    tune_noise=True)
      >>> float(laplace.noise_std(post))                  # the learned noise
    """
    if not _is_gaussian(posterior):
        raise ValueError(
            "posterior: noise_std is for regression, but the posterior's likelihood is for "
            f"{posterior.likelihood.task}"
        )
    scale = posterior.scale if scale is None else scale
    return posterior.likelihood.sigma * jax.lax.rsqrt(jnp.asarray(scale, posterior.scale.dtype))


def _data_term(posterior: Posterior, scale) -> jax.Array:
    """``s NLL(theta*)``, or for a Gaussian posterior the NLL at noise ``sigma / sqrt(s)``."""
    if not _is_gaussian(posterior):
        return scale * posterior.train_nll
    num_targets = posterior.state.num_data * posterior.likelihood.num_outputs
    log_norm = jnp.log(2 * jnp.pi * posterior.likelihood.sigma**2)
    quadratic = posterior.train_nll - 0.5 * num_targets * log_norm  # SSE / (2 sigma^2)
    return scale * quadratic + 0.5 * num_targets * (log_norm - jnp.log(scale))


def log_marginal_likelihood(posterior: Posterior, scale=None, prior_prec=None) -> jax.Array:
    """The Laplace log marginal likelihood (formula in the module docstring).

    Differentiable in ``scale`` and ``prior_prec`` (and in their logarithms); the curvature is
    never re-estimated, so it is cheap to evaluate, differentiate or ``vmap`` over a grid.

    Args:
      posterior: a fitted :class:`Posterior`.
      scale: ``s > 0`` (default ``posterior.scale``); for a Gaussian posterior the noise
        ``sigma / sqrt(s)``.
      prior_prec: ``tau > 0``, a scalar or one value per selected leaf (default
        ``posterior.prior_prec``).

    Example:
      >>> grad = jax.grad(lambda t: log_marginal_likelihood(post, prior_prec=jnp.exp(t)))
      >>> grad(jnp.log(post.prior_prec))
    """
    check_posterior(posterior)
    scale = posterior.scale if scale is None else scale
    prior_prec = posterior.prior_prec if prior_prec is None else prior_prec
    check_hyperparameters_of(posterior, scale, prior_prec)
    _check_num_outputs(posterior)
    return _jitted_log_marginal_likelihood(posterior, scale, prior_prec)


def _log_marginal_likelihood(posterior: Posterior, scale, prior_prec) -> jax.Array:
    theta = posterior.subset.select(posterior.mean)
    leaves = jax.tree.leaves(theta)
    taus = prior_per_leaf(prior_prec, Layout.of(theta))
    prior = sum(
        -0.5 * t * jnp.vdot(w, w) + 0.5 * w.size * jnp.log(t)
        for w, t in zip(leaves, taus, strict=True)
    )
    log_det = posterior.curvature.log_det(posterior.state, scale, prior_prec)
    return -_data_term(posterior, scale) + prior - 0.5 * log_det


# Called directly (not this jitted wrapper) inside ``_optimize``'s scan: differentiating a
# nested jit saves the per-entry residuals (e.g. ``1 / (s lam_A lam_G + tau)``) between two
# separate computations; inlined, the value and the gradient fuse into one pass per step.
_jitted_log_marginal_likelihood = jax.jit(_log_marginal_likelihood)


class MarglikTrace(NamedTuple):
    """Per optimisation step, the values before that step's update: ``log_marglik``,
    ``prior_prec`` and ``scale`` (each ``[steps]``; a layer-wise ``prior_prec`` is its pytree
    with ``[steps]`` leaves)."""

    log_marglik: jax.Array
    prior_prec: jax.Array
    scale: jax.Array


def optimize_marglik(
    posterior: Posterior,
    *,
    steps: int,
    learning_rate: float,
    tune_scale: bool = False,
    tune_noise: bool = False,
) -> tuple[Posterior, MarglikTrace]:
    """Maximise the log marginal likelihood over ``log prior_prec`` (and ``log scale``) with Adam.

    Starts from the posterior's ``(scale, prior_prec)``; one jitted ``lax.scan`` of ``steps``
    Adam steps on ``-log_marginal_likelihood``, in log space so the values stay positive. A
    layer-wise ``prior_prec`` is tuned with one value per layer (module: the leaves sharing a
    path up to the last entry, e.g. a kernel and its bias), which every structure can take;
    its leaves must start equal within each module.

    Args:
      posterior: a fitted :class:`Posterior` with ``prior_prec > 0``.
      steps: number of Adam steps (>= 1).
      learning_rate: Adam step size in log space (e.g. 0.1).
      tune_scale: also tune ``log scale`` (otherwise ``scale`` stays fixed); classification.
      tune_noise: also tune the observation noise of a Gaussian posterior (through its scale,
        ``noise_std = sigma / sqrt(scale)``; module docstring).

    Returns:
      ``(tuned_posterior, trace)``: the posterior with the final ``(scale, prior_prec)`` and a
      :class:`MarglikTrace`.

    Raises:
      ValueError: naming ``learning_rate`` when the optimisation diverged (a non-finite
        marginal likelihood or hyperparameter at some step: the step size is too large).

    Example:
      >>> post, trace = laplace.optimize_marglik(post, steps=100, learning_rate=0.1)
      >>> float(post.prior_prec), trace.log_marglik[-1]
      >>> reg, _ = laplace.optimize_marglik(reg, steps=300, learning_rate=0.05, tune_noise=True)
      >>> float(laplace.noise_std(reg))
    """
    steps = checks.positive_int("steps", steps)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float):
        raise ValueError(f"learning_rate: expected a number > 0, got {learning_rate!r}")
    checks.positive("learning_rate", learning_rate)
    check_posterior(posterior)
    if tune_noise and not _is_gaussian(posterior):
        raise ValueError(
            "tune_noise: the posterior's likelihood is for "
            f"{posterior.likelihood.task}; only a Gaussian (regression) posterior has a noise"
        )
    if tune_scale and _is_gaussian(posterior):
        raise ValueError(
            "tune_scale: for a Gaussian posterior the scale is the observation noise; "
            "use tune_noise=True"
        )
    _check_num_outputs(posterior)
    groups = _module_groups(posterior)
    tuned, trace = _optimize(
        posterior, steps, float(learning_rate), bool(tune_scale or tune_noise), groups
    )
    finite = np.isfinite(np.asarray(trace.log_marglik)) & np.isfinite(np.asarray(trace.scale))
    for leaf in jax.tree.leaves(trace.prior_prec):
        finite &= np.isfinite(np.asarray(leaf))
    final = [np.asarray(v) for v in jax.tree.leaves((tuned.scale, tuned.prior_prec))]
    if not (finite.all() and all(np.all(np.isfinite(v) & (v > 0)) for v in final)):
        step = int(np.argmin(finite)) if not finite.all() else steps
        raise ValueError(
            f"learning_rate: the optimisation diverged (non-finite marginal likelihood or "
            f"hyperparameters from step {step} of {steps}) with learning_rate={learning_rate}; "
            "use a smaller learning_rate"
        )
    return tuned, trace


def _module_groups(posterior) -> tuple[int, ...] | None:
    """For a layer-wise prior, the module index of every selected leaf (``None`` for a
    scalar prior); ``ValueError`` when a module's leaves start with different values."""
    if is_scalar_prior(posterior.prior_prec):
        return None
    layout = Layout.of(posterior.subset.select(posterior.mean))
    modules = list(dict.fromkeys(p[:-1] for p in layout.paths))
    index = tuple(modules.index(p[:-1]) for p in layout.paths)
    values = [np.asarray(t) for t in prior_per_leaf(posterior.prior_prec, layout)]
    for i, module in enumerate(modules):
        start = {float(v) for v, g in zip(values, index, strict=True) if g == i}
        if len(start) > 1:
            raise ValueError(
                f"prior_prec: optimize_marglik tunes one value per layer; the leaves of "
                f"{'/'.join(module)} start at different values {sorted(start)}"
            )
    return index


@jax.jit(static_argnums=(1, 3, 4))
def _optimize(posterior, steps, learning_rate, tune_scale, groups):
    optimizer = optax.adam(learning_rate)
    treedef = jax.tree.structure(posterior.prior_prec)

    def prior_of(log_prior):
        if groups is None:
            return jnp.exp(log_prior)
        taus = jnp.exp(log_prior)[jnp.asarray(groups)]
        return jax.tree.unflatten(treedef, list(taus))

    # Only the tuned values are differentiated: carrying an unused log scale through
    # value_and_grad doubled the cost of every step (Adam acts elementwise, so the prior
    # precision's trajectory is the same either way).
    def unpack(log_hyper):
        if tune_scale:
            log_scale, log_prior_prec = log_hyper
            return jnp.exp(log_scale), prior_of(log_prior_prec)
        return posterior.scale, prior_of(log_hyper)

    def loss(log_hyper):
        return -_log_marginal_likelihood(posterior, *unpack(log_hyper))

    def step(carry, _):
        log_hyper, opt_state = carry
        value, grad = jax.value_and_grad(loss)(log_hyper)
        updates, opt_state = optimizer.update(grad, opt_state)
        scale, prior_prec = unpack(log_hyper)
        return (optax.apply_updates(log_hyper, updates), opt_state), (-value, prior_prec, scale)

    if groups is None:
        log_prior_prec = jnp.log(posterior.prior_prec)
    else:  # one value per module: the first leaf of each
        leaves = jax.tree.leaves(posterior.prior_prec)
        first = [groups.index(g) for g in range(max(groups) + 1)]
        log_prior_prec = jnp.log(jnp.stack([leaves[i] for i in first]))
    init = (jnp.log(posterior.scale), log_prior_prec) if tune_scale else log_prior_prec
    (log_hyper, _), trace = jax.lax.scan(step, (init, optimizer.init(init)), length=steps)
    scale, prior_prec = unpack(log_hyper)
    tuned = posterior.replace(scale=scale, prior_prec=prior_prec)
    return tuned, MarglikTrace(*trace)
