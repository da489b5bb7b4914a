"""A training step with the batch sharded over 4 simulated CPU devices equals one device."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from bnn_jax import models, training
    from bnn_jax.types import Batch

    assert len(jax.devices()) == 4, jax.devices()
    model = models.ResNet(depth=8, width=4, num_outputs=3)
    optimizer = optax.sgd(0.1, momentum=0.9)
    state = training.init_state(model, optimizer, jax.random.key(0), (8, 8, 1))
    step = jax.jit(training.make_train_step(model, optimizer, num_data=64, prior_prec=1.0))
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    y = jax.random.randint(jax.random.key(2), (16,), 0, 3)
    single, metrics_single = step(state, Batch(x, y), jax.random.key(3))

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    shard = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
    replicate = lambda t: jax.device_put(t, NamedSharding(mesh, P()))
    batch = Batch(shard(x), shard(y))
    assert len(batch.x.sharding.device_set) == 4
    sharded, metrics_sharded = step(replicate(state), batch, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(metrics_single["loss"], metrics_sharded["loss"], rtol=1e-5)
    print("OK")
    """
)


def test_sharded_train_step_equals_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
