"""Shared tiny problems and dense references for the Laplace and predictive tests (no tests
here). Everything is float64: call these helpers from tests that use the ``x64`` fixture."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bnn_jax import curvature, laplace, losses, models
from bnn_jax.curvature import subset as subsets
from bnn_jax.data import Batches

NUM_CLASSES = 3


def key(seed: int) -> jax.Array:
    """A PRNG key of the ``rbg`` implementation: the library works with any key, and these
    compile several times faster than threefry keys in sampling code (the tests' main cost)."""
    return jax.random.key(seed, impl="rbg")


class TinyCNN(nn.Module):
    """4x4x1 inputs -> conv 2@3x3 (SAME) -> LayerNorm -> relu -> dense 3 (the LayerNorm scale
    and offset are "other" parameters for the layer-structured curvatures)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.LayerNorm()(nn.Conv(2, (3, 3), padding="SAME")(x)))
        return nn.Dense(NUM_CLASSES)(h.reshape(h.shape[0], -1))


def _train(apply_fn, params, x, y, steps):
    def loss(p):
        log_p = jax.nn.log_softmax(apply_fn(p, x))
        flat = ravel_pytree(p)[0]
        return -jnp.sum(jnp.take_along_axis(log_p, y[:, None], 1)) + 0.5 * flat @ flat

    opt = optax.adam(0.05)

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p), state)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), length=steps))(params)
    return params


@functools.cache
def problem(kind="mlp", n=24, train_steps=150):
    """``(apply_fn, params, x, y)``: a 3-4-3 MLP (``"mlp"``) or a tiny CNN (``"cnn"``) trained
    with Adam and weight decay (prior precision 1) on random data."""
    if kind == "mlp":
        model, shape = models.MLP(widths=(4,), num_outputs=NUM_CLASSES), (3,)
        variables = models.init(model, jax.random.key(0), shape)
        apply_fn = models.make_apply_fn(model, variables)
    else:
        model, shape = TinyCNN(), (4, 4, 1)
        variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
        apply_fn = lambda p, x: model.apply({"params": p}, x)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), variables["params"])
    x = jax.random.normal(jax.random.key(1), (n, *shape), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (n,), 0, NUM_CLASSES)
    params = _train(apply_fn, params, x, y, train_steps)
    return apply_fn, params, np.asarray(x), np.asarray(y)


def structure_factory(name):
    """Curvature factories by test-case name."""
    return {
        "dense": curvature.dense,
        "diagonal": curvature.diagonal,
        "kfac": curvature.kfac,
        "kfac_per_factor": functools.partial(
            curvature.kfac, prior=curvature.kron.per_factor_prior()
        ),
        "efb": curvature.efb,
    }[name]


def fit(
    structure,
    apply_fn,
    params,
    x,
    y,
    *,
    subset=None,
    prior_prec=1.0,
    scale=1.0,
    batch=8,
    fisher=None,
):
    """``laplace.fit`` with the exact Fisher over ``Batches(x, y, batch)``; a callable
    ``prior_prec`` gives each selected leaf ``prior_prec(path)`` (``laplace.layerwise_prior``)."""
    lik = losses.categorical()
    fisher = curvature.exact_fisher() if fisher is None else fisher
    curv = structure(apply_fn, lik, fisher=fisher, subset=subset)
    if callable(prior_prec):
        prior_prec = laplace.layerwise_prior(curv, params, prior_prec)
    return laplace.fit(
        curv,
        params,
        Batches(x, y, batch),
        key=key(3),
        prior_prec=prior_prec,
        scale=scale,
        progress=False,
    )


LAYER_TAUS = {"Dense_0": 0.3, "Dense_1": 3.0, "Conv_0": 0.3, "LayerNorm_0": 2.0}


@functools.cache
def posterior(name, kind="mlp", last_layer=False, layerwise=False, prior_prec=0.5):
    """``(posterior, x)``: the cached fit of structure ``name`` (exact Fisher, scale 1.5) on
    :func:`problem` ``kind``, over all parameters or the last layer, with ``prior_prec`` or,
    if ``layerwise``, one prior precision per layer (``LAYER_TAUS``)."""
    apply_fn, params, x, y = problem(kind)
    if layerwise:
        prior_prec = lambda path: LAYER_TAUS[path[0]]
    subset = subsets.last_layer(apply_fn, params, x[:1]) if last_layer else None
    factory = structure_factory(name)
    post = fit(factory, apply_fn, params, x, y, subset=subset, prior_prec=prior_prec, scale=1.5)
    return post, x


@functools.cache
def covariance(name, kind="mlp", last_layer=False, layerwise=False) -> np.ndarray:
    """:func:`dense_covariance` of the cached :func:`posterior`."""
    return dense_covariance(posterior(name, kind, last_layer, layerwise)[0])


def dense_covariance(posterior) -> np.ndarray:
    """``Sigma`` as the inverse of the precision built column by column with the structure's
    ``precision_mvp`` (``tree.ravel`` order of the selected parameters)."""
    theta = posterior.subset.select(posterior.mean)
    flat, unravel = ravel_pytree(theta)
    eye = jnp.eye(flat.size, dtype=flat.dtype)

    def column(e):
        out = posterior.curvature.precision_mvp(
            posterior.state, unravel(e), posterior.scale, posterior.prior_prec
        )
        return ravel_pytree(out)[0]

    precision = np.asarray(jax.jit(jax.vmap(column))(eye)).T
    np.testing.assert_allclose(precision, precision.T, rtol=1e-9, atol=1e-10)
    return np.linalg.inv(precision)
