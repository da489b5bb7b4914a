"""bfloat16 forward passes: every product of the wrapped model runs in bfloat16 (no float32
operand promotes a layer back), outputs are float32, close to the float32 model's, and the MC
predictive through it agrees with the float32 one to bfloat16 accuracy."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import curvature, data, laplace, losses, models, precision, predictive


def _product_dtypes(fn, *args) -> set:
    jaxpr = jax.make_jaxpr(fn)(*args)
    dtypes = set()

    def visit(jpr):
        for eqn in jpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                dtypes.update(str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return dtypes


@pytest.mark.parametrize(
    ("model", "shape"),
    [(models.MLP((16,), 3), (5,)), (models.ResNet(depth=8, width=4, num_outputs=3), (8, 8, 1))],
)
def test_in_dtype_computes_in_bfloat16_and_returns_float32(model, shape):
    variables = models.init(model, jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (4, *shape))
    full = models.make_apply_fn(model, variables)
    half = precision.in_dtype(full)
    params = variables["params"]
    assert _product_dtypes(full, params, x) == {"float32"}
    assert _product_dtypes(half, params, x) == {"bfloat16"}
    out, ref = half(params, x), full(params, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()) + 1e-3)


def test_mc_predictive_in_bfloat16_matches_float32():
    model = models.MLP((16,), 3)
    variables = models.init(model, jax.random.key(0), (5,))
    apply_fn, params = models.make_apply_fn(model, variables), variables["params"]
    x = jax.random.normal(jax.random.key(1), (12, 5))
    y = jax.random.randint(jax.random.key(2), (12,), 0, 3)
    lik = losses.categorical()
    curv = curvature.diagonal(apply_fn, lik, fisher=curvature.exact_fisher())
    post = laplace.fit(
        curv, params, data.Batches(np.asarray(x), np.asarray(y), 6),
        key=jax.random.key(3), prior_prec=1.0, progress=False,
    )  # fmt: skip
    key = jax.random.key(4)
    ref = predictive.laplace_log_probs(post, x, key=key, num_samples=8, chunk_size=4)
    fast = post.replace(
        curvature=post.curvature._replace(apply_fn=precision.in_dtype(post.apply_fn))
    )
    got = predictive.laplace_log_probs(fast, x, key=key, num_samples=8, chunk_size=4)
    assert got.dtype == jnp.float32 and got.shape == ref.shape
    # the same weight draws (float32 sampling): probabilities within bfloat16 rounding
    np.testing.assert_allclose(jnp.exp(got), jnp.exp(ref), atol=2e-2)
    assert float(jnp.abs(jnp.exp(got) - jnp.exp(ref)).max()) > 0  # it did run in bfloat16
