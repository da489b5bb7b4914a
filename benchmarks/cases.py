"""The bnn_jax side of the benchmark: every stage of the issue for one model.

``run_model`` trains the MAP (timing one epoch), fits KFAC and diagonal posteriors (MC Fisher,
one sample) and times each stage through the public API, jitted where the library leaves
jitting to the caller. It returns ``{case: {"s", "times_s", "flops", ...}}``, the trained
variables (the torch baseline loads them) and the measured peak memory.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import flops, problems
from benchmarks.timing import measure
from bnn_jax import curvature, data, dropout, laplace, losses, models, predictive, training, tree
from bnn_jax.types import Batch


def _memory(compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    return {
        "temp_bytes": int(stats.temp_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "argument_bytes": int(stats.argument_size_in_bytes),
    }


class _Recorder:
    def __init__(self, config: problems.Config):
        self.config = config
        self.results: dict[str, dict] = {}

    def time(self, name, fn, *, flops=None, warmup=None, **extra):
        timing = measure(
            fn,
            repeats=self.config.repeats,
            budget_s=self.config.budget_s,
            warmup=warmup,
            sync=jax.block_until_ready,
        )
        self.results[name] = {
            "s": timing.median_s,
            "times_s": list(timing.times_s),
            "warmup_s": timing.warmup_s,
            "flops": flops,
            **extra,
        }
        return self.results[name]


def _train(name, config, arrays, recorder, key):
    model = problems.make_model(name, config)
    variables = problems.init_variables(name, config)
    optimizer = optax.adam(1e-3)
    x, y = jnp.asarray(arrays["x_train"]), jnp.asarray(arrays["y_train"])
    step = training.make_train_step(model, optimizer, num_data=len(x), prior_prec=1.0)
    epoch = training.make_epoch_loop(step, x, y, config.batch_size)  # what train() runs
    state = training.state_from_variables(variables, optimizer)
    apply_fn = models.make_apply_fn(model, variables)
    layers = flops.layer_shapes(apply_fn, variables["params"], problems.IMAGE_SHAPE)
    num_trained = (len(x) // config.batch_size) * config.batch_size
    recorder.time(
        "train_epoch",
        lambda: epoch(state, key),
        flops=flops.train_epoch(layers, num_trained),
    )
    for i in range(config.train_epochs):
        state, _ = epoch(state, jax.random.fold_in(key, i))
    return model, state.variables, layers


def _fit_cases(curv, params, batches, key, recorder, prefix, fit_flops):
    """Time the accumulation (one jitted update per batch), ``finalize`` and ``laplace.fit``."""
    update = jax.jit(curv.update)
    finalize = jax.jit(curv.finalize)
    device_batches = [Batch(jnp.asarray(b.x), jnp.asarray(b.y)) for b in batches]

    def accumulate():
        state = curv.init(params, device_batches[0].x)
        for i, batch in enumerate(device_batches):
            state = update(state, params, batch, jax.random.fold_in(key, i))
        return state

    def fit():
        return laplace.fit(curv, params, batches, key=key, prior_prec=1.0, progress=False)

    accumulated = accumulate()
    recorder.time(f"{prefix}/accumulate", accumulate, flops=fit_flops[0])
    recorder.time(f"{prefix}/finalize", lambda: finalize(accumulated), flops=fit_flops[1])
    recorder.time(prefix, lambda: fit().state, flops=sum(fit_flops))
    return fit()


def run_model(name: str, config: problems.Config, arrays: dict[str, np.ndarray]):
    """All bnn_jax cases for model ``name``; returns ``(results, variables, memory)``."""
    recorder = _Recorder(config)
    key = jax.random.key(config.seed)
    model, variables, layers = _train(name, config, arrays, recorder, key)
    params = variables["params"]
    apply_fn = models.make_apply_fn(model, variables)
    lik = losses.categorical()
    fisher = curvature.mc_fisher(num_samples=1)
    batches = data.Batches(arrays["x_train"], arrays["y_train"], config.batch_size)
    n = len(arrays["x_train"])

    kfac = curvature.kfac(apply_fn, lik, fisher=fisher)
    kfac_flops = (flops.kfac_accumulate(layers, n), flops.kfac_finalize(layers))
    post = _fit_cases(kfac, params, batches, key, recorder, "kfac_fit", kfac_flops)
    diag = curvature.diagonal(apply_fn, lik, fisher=fisher)
    diag_flops = (flops.diagonal(layers, n), 0.0)
    _fit_cases(diag, params, batches, key, recorder, "diag_fit", diag_flops)
    exact = curvature.exact_fisher()  # the GGN of laplace-torch's exact backends
    for prefix, factory in [
        ("kfac_fit_exact", curvature.kfac),
        ("diag_fit_exact", curvature.diagonal),
    ]:
        curv = factory(apply_fn, lik, fisher=exact)
        recorder.time(
            prefix,
            lambda curv=curv: (
                laplace.fit(curv, params, batches, key=key, prior_prec=1.0, progress=False).state
            ),
        )

    def nll_grad(p, batch):
        return jax.grad(lambda q: jnp.sum(lik.nll(apply_fn(q, batch.x), batch.y)))(p)

    memory = {"diag_update": {}, "gradient": {}}
    for batch_size in sorted({100, config.batch_size}):
        batch = Batch(
            jnp.asarray(arrays["x_train"][:batch_size]), jnp.asarray(arrays["y_train"][:batch_size])
        )
        diag_state = diag.init(params, batch.x)
        compiled = jax.jit(diag.update).lower(diag_state, params, batch, key).compile()
        memory["diag_update"][str(batch_size)] = _memory(compiled)
        memory["gradient"][str(batch_size)] = _memory(
            jax.jit(nll_grad).lower(params, batch).compile()
        )

    x_test = jnp.asarray(arrays["x_test"])
    x_small = x_test[: config.small_inputs]
    x_glm = x_test[: config.glm_inputs]
    num_samples, chunk = config.num_samples, config.chunk_size[name]

    def mc(x, num, chunk_size=chunk):
        return predictive.laplace_log_probs(
            post, x, key=key, num_samples=num, chunk_size=chunk_size
        )

    recorder.time(
        "mc_predictive/test",
        lambda: mc(x_test, num_samples),
        flops=flops.mc_predictive(layers, num_samples, len(x_test)),
    )
    recorder.time(
        "mc_predictive/small",
        lambda: predictive.local_log_probs(post, x_small, key=key, num_samples=num_samples),
        flops=flops.local_predictive(layers, num_samples, len(x_small)),
    )
    recorder.time(
        "mc_predictive/small_weights",
        lambda: mc(x_small, num_samples),
        flops=flops.mc_predictive(layers, num_samples, len(x_small)),
    )
    memory["mc_predictive"] = {}
    for num in config.memory_samples:
        fn = jax.jit(functools.partial(mc, num=num))
        memory["mc_predictive"][str(num)] = _memory(fn.lower(x_test).compile())

    recorder.time(
        "glm_probit",
        lambda: predictive.glm_probit_log_probs(post, x_glm, centred=False),
        flops=flops.glm_probit(layers, len(x_glm), problems.NUM_CLASSES),
    )
    recorder.time(
        "marglik",
        lambda: (
            laplace.optimize_marglik(post, steps=config.marglik_steps, learning_rate=0.1)[
                0
            ].prior_prec
        ),
    )

    dropout_model = problems.make_model(name, config, dropout=True)
    vmapped = jax.jit(
        functools.partial(
            dropout.sample_log_probs, dropout_model, variables, num_samples=num_samples
        )
    )
    logits_fn = jax.jit(dropout.make_mask_logits_fn(dropout_model, variables))
    keys = jax.random.split(key, num_samples)

    def loop():
        return [jax.nn.log_softmax(logits_fn(k, x_test)) for k in keys]

    shared = problems.LAYERS_BEFORE_DROPOUT[name]
    recorder.time(
        "mc_dropout/vmap",
        lambda: vmapped(x_test, key=key),
        flops=flops.mc_dropout(layers, num_samples, len(x_test), shared=shared),
    )
    recorder.time("mc_dropout/loop", loop, flops=flops.mc_dropout(layers, num_samples, len(x_test)))
    recorder.results["num_params"] = tree.tree_size(params)
    return recorder.results, variables, memory
