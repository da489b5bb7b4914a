"""One process of the multi-process test (``tests/test_distributed.py``); not a test itself.

``python tests/distributed_worker.py OUT PROCESS_ID PROCESS_COUNT [COORDINATOR]`` runs a
training step, ``laplace.fit`` of every curvature structure, the marginal likelihood and the
MC and GLM predictives of a tiny MLP, and writes what it computed to ``OUT`` (``.npz``).
With ``PROCESS_COUNT == 1`` it is the single-process reference on plain numpy batches;
otherwise it joins ``jax.distributed`` at ``COORDINATOR`` (CPU collectives over gloo), holds
only its share of every batch and of the test inputs, and computes on global arrays.
Float64 throughout, so that the comparisons are tight (eigenvectors of nearly degenerate
curvature amplify the float32 reordering of sums).
"""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_enable_x64", True)  # this process only: tight comparisons

OUT, PROCESS_ID, PROCESS_COUNT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if PROCESS_COUNT > 1:
    jax.distributed.initialize(
        sys.argv[4], num_processes=PROCESS_COUNT, process_id=PROCESS_ID, initialization_timeout=60
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bnn_jax import curvature, data, laplace, losses, models, predictive, training  # noqa: E402

NUM_TRAIN, BATCH, INPUT, CLASSES = 48, 12, (5,), 3


def structures(apply_fn, lik):
    """Every structure; the MC Fisher (labels sampled from the sharded logits) where sampling
    is pathwise stable, the exact GGN where samples go through the eigenvectors of a whole
    matrix or layer block: with tanh units (no continuous rescaling symmetry, unlike ReLU) its
    null space is then the softmax's logit shift, along which any rotation of the
    eigenvectors leaves the predictions unchanged."""
    mc, exact = curvature.mc_fisher(), curvature.exact_fisher()
    return {
        "diagonal": curvature.diagonal(apply_fn, lik, fisher=mc),
        "dense": curvature.dense(apply_fn, lik, fisher=exact),
        "kfac": curvature.kfac(apply_fn, lik, fisher=mc),
        "efb": curvature.efb(apply_fn, lik, fisher=mc),
        "block_diagonal": curvature.block_diagonal(apply_fn, lik, fisher=exact),
        "low_rank": curvature.low_rank(apply_fn, lik, fisher=exact, rank=4, key=jax.random.key(7)),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((NUM_TRAIN, *INPUT))
    y = rng.integers(0, CLASSES, NUM_TRAIN).astype(np.int32)
    x_test = rng.standard_normal((6, *INPUT))
    model = models.MLP((6,), CLASSES, activation=jnp.tanh)
    variables = jax.tree.map(
        lambda a: np.asarray(a, np.float64), models.init(model, jax.random.key(0), INPUT)
    )
    apply_fn, params = models.make_apply_fn(model, variables), variables["params"]
    lik = losses.categorical()
    key = jax.random.key(1)

    if PROCESS_COUNT == 1:
        batches = data.Batches(x, y, BATCH)
        inputs, place = x_test, lambda tree: tree
        first = next(iter(batches))
    else:
        mesh = data.batch_mesh()
        local = data.Batches(x, y, BATCH, process_index=PROCESS_ID, process_count=PROCESS_COUNT)
        batches = data.global_batches(local, mesh)
        share = len(x_test) // PROCESS_COUNT
        inputs = data.global_array(x_test[PROCESS_ID * share : (PROCESS_ID + 1) * share], mesh)
        place = lambda tree: data.replicate(tree, mesh)
        first = next(iter(batches))
        assert not first.x.is_fully_addressable and first.x.shape == (BATCH, *INPUT)

    out = {}
    optimizer = optax.sgd(0.1)
    step = jax.jit(training.make_train_step(model, optimizer, num_data=NUM_TRAIN, prior_prec=1.0))
    state = place(training.state_from_variables(variables, optimizer))
    state, metrics = step(state, first, jax.random.key(2))
    out["train/loss"] = data.gather(metrics["loss"])
    out["train/kernel"] = data.gather(state.params["Dense_0"]["kernel"])

    for name, curv in structures(apply_fn, lik).items():
        post = laplace.fit(
            curv,
            place(params),
            batches,
            key=key,
            prior_prec=1.0,
            progress=False,
        )
        out[f"{name}/to_dense"] = data.gather(curv.to_dense(post.state))
        out[f"{name}/log_det"] = data.gather(laplace.log_det(post))
        out[f"{name}/marglik"] = data.gather(laplace.log_marginal_likelihood(post))
        mc = predictive.laplace_log_probs(post, inputs, key=key, num_samples=4, chunk_size=2)
        out[f"{name}/mc"] = data.gather(mc)
        out[f"{name}/glm"] = data.gather(predictive.glm_probit_log_probs(post, inputs))
    np.savez(OUT, **out)
    print("done", PROCESS_ID, flush=True)


if __name__ == "__main__":
    main()
