"""Laplace fit (curvature accumulation in ``fit``'s step) and MC prediction with the batch
sharded over 4 simulated CPU devices equal the single-device results (float32)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from bnn_jax import curvature, laplace, losses, models, predictive
    from bnn_jax.types import Batch

    assert len(jax.devices()) == 4, jax.devices()
    model = models.MLP(widths=(16,), num_outputs=3)
    variables = models.init(model, jax.random.key(0), (8, 8, 1))
    apply_fn = models.make_apply_fn(model, variables)
    params = variables["params"]
    x = jax.random.uniform(jax.random.key(1), (32, 8, 8, 1))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 3)
    lik = losses.categorical()
    curv = curvature.kfac(apply_fn, lik, fisher=curvature.mc_fisher())

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    shard = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
    replicate = lambda t: jax.device_put(t, NamedSharding(mesh, P()))

    def posterior(batches, params):
        return laplace.fit(curv, params, batches, key=jax.random.key(3), prior_prec=1.0,
                           progress=False)

    single = posterior([Batch(x[:16], y[:16]), Batch(x[16:], y[16:])], params)
    sharded_batches = [Batch(shard(x[:16]), shard(y[:16])), Batch(shard(x[16:]), shard(y[16:]))]
    assert len(sharded_batches[0].x.sharding.device_set) == 4
    sharded = posterior(sharded_batches, replicate(params))
    # The curvature (through the structure's precision MVP: the eigenbases of nearly
    # degenerate factors may rotate between runs) and its log-determinant agree.
    v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape), params)
    mvp = lambda post: curv.precision_mvp(post.state, v, 1.0, 1.0)
    for a, b in zip(jax.tree.leaves(mvp(single)), jax.tree.leaves(mvp(sharded)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(laplace.log_det(single), laplace.log_det(sharded), rtol=1e-5)
    np.testing.assert_allclose(single.train_nll, sharded.train_nll, rtol=1e-5)
    assert int(sharded.state.num_data) == 32

    key = jax.random.key(4)
    expected = predictive.laplace_log_probs(single, x, key=key, num_samples=6, chunk_size=3)
    got = predictive.laplace_log_probs(single, shard(x), key=key, num_samples=6, chunk_size=3)
    assert len(got.sharding.device_set) == 4
    np.testing.assert_allclose(expected, got, rtol=1e-5, atol=1e-6)
    print("OK")
    """
)


def test_sharded_fit_and_mc_predictive_equal_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
