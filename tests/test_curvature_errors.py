"""Bad input to the curvature factories and functions: ValueErrors naming the argument."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from bnn_jax import curvature as cv
from bnn_jax import losses, models
from bnn_jax.types import Batch


class NoLayers(nn.Module):
    """Parameters but no Dense/Conv layer."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(), (x.shape[-1], 3))
        return x @ w


def _mlp():
    model = models.MLP((3,), 3)
    variables = models.init(model, jax.random.key(0), (2,))
    apply_fn = models.make_apply_fn(model, variables)
    batch = Batch(jnp.ones((4, 2)), jnp.array([0, 1, 2, 1]))
    return apply_fn, variables["params"], batch


def _fitted_diagonal():
    apply_fn, params, batch = _mlp()
    curv = cv.diagonal(apply_fn, losses.categorical(), fisher=cv.exact_fisher())
    state = curv.init(params, batch.x)
    state = curv.finalize(curv.update(state, params, batch, jax.random.key(0)))
    return curv, state, params


def test_factory_options_are_checked():
    apply_fn, _, _ = _mlp()
    lik, fisher = losses.categorical(), cv.exact_fisher()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_samples: expected an integer >= 1"):
            cv.mc_fisher(num_samples=bad)
    with pytest.raises(ValueError, match=r"prior: expected kron.eigen_prior\(\) or"):
        cv.kfac(apply_fn, lik, fisher=fisher, prior="per_factor")
    with pytest.raises(ValueError, match=r"bias: expected blocks.homogeneous_bias\(\) or"):
        cv.efb(apply_fn, lik, fisher=fisher, bias="separate")
    for factory in (cv.diagonal, cv.dense, cv.kfac, cv.efb, cv.block_diagonal):
        for bad in (0, 2.5, True):
            with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
                factory(apply_fn, lik, fisher=fisher, chunk_size=bad)
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        cv.low_rank(apply_fn, lik, fisher=fisher, rank=2, key=0)
    with pytest.raises(ValueError, match="curvatures: expected a non-empty list"):
        cv.partition([])
    with pytest.raises(ValueError, match="rank: expected an integer >= 1"):
        cv.low_rank(apply_fn, lik, fisher=fisher, rank=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_iterations"):
        cv.low_rank(apply_fn, lik, fisher=fisher, rank=2, key=jax.random.key(0), num_iterations=-1)


def test_rank_larger_than_the_parameters():
    apply_fn, params, _ = _mlp()
    curv = cv.low_rank(
        apply_fn, losses.categorical(), fisher=cv.exact_fisher(), rank=10**6, key=jax.random.key(0)
    )
    with pytest.raises(ValueError, match="rank: expected at most the 21 selected parameters"):
        curv.init(params, jnp.ones((1, 2)))


@pytest.mark.parametrize("factory", [cv.kfac, cv.efb, cv.block_diagonal])
def test_kronecker_structures_need_a_dense_or_conv_layer(factory):
    model = NoLayers()
    variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    curv = factory(apply_fn, losses.categorical(), fisher=cv.exact_fisher())
    with pytest.raises(ValueError, match=r"apply_fn: .* needs at least one selected nn\.Dense"):
        curv.init(variables["params"], jnp.ones((1, 2)))
    # the diagonal works on any parameters
    diag = cv.diagonal(apply_fn, losses.categorical(), fisher=cv.exact_fisher())
    batch = Batch(jnp.ones((3, 2)), jnp.array([0, 1, 2]))
    state = diag.init(variables["params"], batch.x)
    diag.update(state, variables["params"], batch, jax.random.key(0))


def test_subset_matching_nothing():
    apply_fn, params, _ = _mlp()
    nothing = cv.subset.where(lambda path: path[0] == "Conv_0")
    for curv in [
        cv.dense(apply_fn, losses.categorical(), fisher=cv.exact_fisher(), subset=nothing),
        cv.kfac(apply_fn, losses.categorical(), fisher=cv.exact_fisher(), subset=nothing),
    ]:
        with pytest.raises(ValueError, match="subset: no parameter matches"):
            curv.init(params, jnp.ones((1, 2)))


def test_bad_batches():
    apply_fn, params, batch = _mlp()
    curv = cv.kfac(apply_fn, losses.categorical(), fisher=cv.mc_fisher())
    state = curv.init(params, batch.x)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        curv.update(state, params, batch._replace(y=jnp.array([0, 1, 3, 1])), key)
    with pytest.raises(ValueError, match="y: expected integer labels of shape"):
        curv.update(state, params, batch._replace(y=jnp.array([0, 1, 2])), key)
    with pytest.raises(ValueError, match="x: inputs of shape"):
        curv.update(state, params, batch._replace(x=jnp.ones((4, 5))), key)
    # traced labels are only shape-checked: the value check needs concrete labels
    jax.jit(curv.update)(state, params, batch, key)
    reg = cv.diagonal(apply_fn, losses.gaussian(sigma=1.0), fisher=cv.exact_fisher())
    with pytest.raises(ValueError, match="y: expected regression targets of shape"):
        reg.update(reg.init(params, batch.x), params, batch, key)
    with pytest.raises(ValueError, match=r"x: expected an example batch of inputs \[batch"):
        curv.init(params, jnp.ones(()))


def test_hyperparameters_are_checked_when_concrete():
    curv, state, params = _fitted_diagonal()
    v = jax.tree.map(jnp.ones_like, params)
    key = jax.random.key(0)
    inverses = [
        lambda s, t: curv.solve(state, v, s, t),
        lambda s, t: curv.sample(state, key, s, t),
        lambda s, t: curv.log_det(state, s, t),
    ]
    for call in [lambda s, t: curv.precision_mvp(state, v, s, t), *inverses]:
        with pytest.raises(ValueError, match="prior_prec: expected a finite value"):
            call(1.0, -0.1)
        with pytest.raises(ValueError, match="scale: expected a finite value > 0"):
            call(0.0, 1.0)
        with pytest.raises(ValueError, match="scale: expected a finite value > 0"):
            call(jnp.nan, 1.0)
    # a precision-vector product needs no inverse: tau = 0 gives s C v; the others refuse it
    curv.precision_mvp(state, v, 1.0, 0.0)
    for call in inverses:
        with pytest.raises(ValueError, match="prior_prec: expected a finite value > 0, got 0"):
            call(1.0, 0.0)
    # traced values pass through (vmap over a grid of prior precisions)
    grid = jax.vmap(lambda t: curv.log_det(state, 1.0, t))(jnp.array([0.5, 1.0]))
    assert grid.shape == (2,)


def test_non_finite_curvature_is_reported():
    apply_fn, params, batch = _mlp()
    bad = jax.tree.map(lambda a: a.at[..., 0].set(jnp.nan), params)
    curv = cv.kfac(apply_fn, losses.categorical(), fisher=cv.exact_fisher())
    state = jax.jit(curv.update)(curv.init(bad, batch.x), bad, batch, jax.random.key(0))
    with pytest.raises(ValueError, match="curvature: non-finite values"):
        curv.finalize(state)
    jitted = jax.jit(curv.finalize)(state)  # traced: no check inside jit ...
    with pytest.raises(ValueError, match="curvature: non-finite values"):
        cv.check_finite(jitted)  # ... so the caller checks
