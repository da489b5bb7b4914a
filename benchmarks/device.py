"""Device mode: time a CIFAR-shaped ResNet (BatchNorm) on the default accelerator and report the
fraction of the device's measured matmul peak each stage reaches.

``python -m benchmarks.device [--small] [--dtype bfloat16] --out benchmarks/device.json``
runs, on whatever ``jax.devices()`` holds (one GPU, several GPUs, or the CPU):

- ``matmul_peak``: the rate of an ``n x n`` by ``n x n`` float32 product (``n = 8192`` on
  accelerators, 2048 on CPU), and in bfloat16 when ``--dtype bfloat16``;
- ``train_epoch``: one epoch of jitted SGD steps over ``num_train`` CIFAR-shaped inputs;
- ``kfac_fit``: ``laplace.fit`` of KFAC (MC Fisher, one sample) over the same inputs;
- ``mc_predictive``: ``predictive.laplace_log_probs`` with ``T`` weight samples on the test
  inputs (its forward passes in ``--dtype``; sampling stays float32, ``bnn_jax.precision``).

Batches are global arrays sharded over every device of every process (``data.batch_mesh``,
``data.global_batches``); parameters and curvature are replicated, so several GPUs split each
batch and all-reduce the sums. Device time is the wall time of calls synchronised with
``block_until_ready`` (medians of repeats after a warm-up that compiles): with asynchronous
dispatch it is the time the device is busy plus the host's share that does not overlap it.
GFLOP/s count only the matrix products and convolutions (``benchmarks.flops``); the fraction
of peak divides by the float32 product's rate (the bfloat16 peak is reported beside it).
"""

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import flops
from benchmarks.timing import gflops, host, measure
from bnn_jax import curvature, data, laplace, losses, models, precision, predictive, training

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
LIKELIHOOD = losses.categorical()  # one object: laplace.fit compiles once per likelihood


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes (defaults: an accelerator run of a few minutes; ``small_config`` for a CPU).

    Attributes:
      depth, width: ResNet depth (``6n + 2``) and base width.
      num_train, num_test: synthetic CIFAR-shaped inputs (uniform, teacher labels).
      batch_size: global batch of training and of the KFAC fit (split over the devices).
      num_samples, chunk_size: MC predictive samples and samples per chunk.
      matmul_size: side of the peak-rate product (``None``: 8192 on accelerators, 2048 on CPU).
      dtype: ``"float32"`` or ``"bfloat16"`` for the MC predictive's forward passes.
      repeats, budget_s: timing (``benchmarks.timing.measure``).
      seed: data, initialisation and keys.
    """

    depth: int = 20
    width: int = 16
    num_train: int = 10_000
    num_test: int = 1_000
    batch_size: int = 500
    num_samples: int = 30
    chunk_size: int = 10
    matmul_size: int | None = None
    dtype: str = "float32"
    repeats: int = 3
    budget_s: float = 20.0
    seed: int = 0


def small_config(**changes) -> Config:
    """A size a 2-core CPU runs in about a minute (the stages and counts are the same)."""
    base = Config(depth=8, width=8, num_train=256, num_test=64, batch_size=64, num_samples=4,
                  chunk_size=2, matmul_size=1024, repeats=1, budget_s=1.0)  # fmt: skip
    return dataclasses.replace(base, **changes)


def _make_data(config: Config, num: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random((num, *IMAGE_SHAPE), dtype=np.float32)
    teacher = np.random.default_rng(config.seed).standard_normal((int(np.prod(IMAGE_SHAPE)), 10))
    y = np.argmax((x.reshape(num, -1) - 0.5) @ teacher.astype(np.float32), axis=1)
    return x, y.astype(np.int32)


def matmul_peak(size: int, dtype, config: Config) -> float:
    """GFLOP/s of a ``size^3`` product in ``dtype`` on the default device."""
    a = jnp.ones((size, size), dtype)
    dot = jax.jit(jnp.dot)
    timing = measure(
        lambda: dot(a, a), repeats=config.repeats, budget_s=config.budget_s,
        sync=jax.block_until_ready,
    )  # fmt: skip
    return gflops(2.0 * size**3, timing.median_s)


def _kfac(apply_fn):
    """The curvature of the fit (the one place it is built)."""
    return curvature.kfac(apply_fn, LIKELIHOOD, fisher=curvature.mc_fisher(num_samples=1))


def _fit(curv, params, batches, apply_fn, key):
    """``laplace.fit`` (the one place it is called)."""
    return laplace.fit(
        curv, params, batches, key=key,
        prior_prec=1.0, progress=False,
    )  # fmt: skip


def run(config: Config) -> dict:
    """Every stage; ``{"machine", "peak", "stages", "config", "wall_s"}``."""
    start, load_start = time.perf_counter(), list(os.getloadavg())
    device = jax.devices()[0]
    size = config.matmul_size or (2048 if device.platform == "cpu" else 8192)
    peak32 = matmul_peak(size, jnp.float32, config)
    peak16 = matmul_peak(size, jnp.bfloat16, config) if config.dtype == "bfloat16" else None
    mesh = data.batch_mesh()
    index, count = jax.process_index(), jax.process_count()
    x, y = _make_data(config, config.num_train, config.seed)
    x_test, _ = _make_data(config, config.num_test, config.seed + 1)

    def batches(key=None):
        local = data.Batches(x, y, config.batch_size, key=key, drop_remainder=True,
                             process_index=index, process_count=count)  # fmt: skip
        return data.global_batches(local, mesh)

    model = models.ResNet(depth=config.depth, width=config.width, num_outputs=NUM_CLASSES)
    key = jax.random.key(config.seed)
    optimizer = optax.sgd(0.05, momentum=0.9)
    state = data.replicate(training.init_state(model, optimizer, key, IMAGE_SHAPE), mesh)
    step = jax.jit(training.make_train_step(model, optimizer, num_data=len(x), prior_prec=1.0))
    num_seen = (len(x) // config.batch_size) * config.batch_size

    def epoch(state):
        for i, batch in enumerate(batches(jax.random.fold_in(key, 1))):
            state, _ = step(state, batch, jax.random.fold_in(key, i))
        return state

    timed = lambda fn: measure(
        fn, repeats=config.repeats, budget_s=config.budget_s, sync=jax.block_until_ready
    )
    stages = {}
    variables = {"params": state.params, **state.model_state}
    apply_fn = models.make_apply_fn(model, variables)
    layers = flops.layer_shapes(apply_fn, variables["params"], IMAGE_SHAPE)
    epoch_flops = flops.train_epoch(layers, num_seen)
    stages["train_epoch"] = (timed(lambda: epoch(state).params), epoch_flops)
    trained = epoch(state)
    variables = {"params": trained.params, **trained.model_state}
    apply_fn = models.make_apply_fn(model, variables)
    curv = _kfac(apply_fn)
    fit = lambda: _fit(curv, variables["params"], batches(), apply_fn, key)
    fit_flops = flops.kfac_accumulate(layers, num_seen) + flops.kfac_finalize(layers)
    stages["kfac_fit"] = (timed(lambda: fit().state), fit_flops)
    post = fit()
    if config.dtype == "bfloat16":
        post = post.replace(
            curvature=post.curvature._replace(apply_fn=precision.in_dtype(post.apply_fn))
        )
    share = len(x_test) // count
    inputs = data.global_array(x_test[index * share : (index + 1) * share], mesh)
    mc = jax.jit(
        lambda p, xs: predictive.laplace_log_probs(
            p, xs, key=key, num_samples=config.num_samples, chunk_size=config.chunk_size
        )
    )
    stages["mc_predictive"] = (
        timed(lambda: mc(post, inputs)),
        flops.mc_predictive(layers, config.num_samples, share * count),
    )
    out = {}
    for name, (timing, count_flops) in stages.items():
        rate = gflops(count_flops, timing.median_s)
        out[name] = {
            "s": timing.median_s,
            "times_s": list(timing.times_s),
            "warmup_s": timing.warmup_s,
            "gflop": count_flops / 1e9,
            "gflops": rate,
            "fraction_of_matmul_peak": rate / peak32,
        }
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "machine": {
            **host(load_start),
            "device": device.device_kind,
            "platform": device.platform,
            "devices": len(jax.devices()),
            "processes": count,
            "jax": jax.__version__,
            "peak_bytes_in_use": (stats or {}).get("peak_bytes_in_use"),
        },
        "peak": {"matmul_size": size, "float32_gflops": peak32, "bfloat16_gflops": peak16},
        "stages": out,
        "config": dataclasses.asdict(config),
        "wall_s": time.perf_counter() - start,
    }


def markdown(results: dict) -> str:
    m, p = results["machine"], results["peak"]
    lines = [
        f"{m['device']} x{m['devices']} ({m['processes']} process(es)); {p['matmul_size']}^3 "
        f"float32 product: {p['float32_gflops']:.0f} GFLOP/s"
        + (f", bfloat16: {p['bfloat16_gflops']:.0f}" if p["bfloat16_gflops"] else ""),
        "",
        "| stage | device time (s) | GFLOP | GFLOP/s | of float32 matmul peak |",
        "|---|---|---|---|---|",
    ]
    for name, s in results["stages"].items():
        lines.append(
            f"| {name} | {s['s']:.3g} | {s['gflop']:.1f} | {s['gflops']:.1f} | "
            f"{s['fraction_of_matmul_peak']:.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized run")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--out", default=None, help="JSON output path")
    parser.add_argument("--coordinator", default=None, help="process 0's HOST:PORT")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--distributed", action="store_true", help="cluster from the environment")
    args = parser.parse_args(argv)
    if args.distributed or args.coordinator is not None:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    config = small_config() if args.small else Config()
    results = run(dataclasses.replace(config, dtype=args.dtype))
    if args.out and jax.process_index() == 0:
        from benchmarks.run import _write_json

        _write_json(args.out, results)
    if jax.process_index() == 0:
        print(markdown(results))
    return results


if __name__ == "__main__":
    main()
