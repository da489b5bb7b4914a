"""Cost curves: time and memory of the KFAC and diagonal fits and the MC, local and GLM
predictives against width, depth, training-set size N and samples T, with fitted exponents.

``python -m benchmarks.curves [--quick] --out benchmarks/curves.json --figure
benchmarks/curves.png`` sweeps one size at a time around a base MLP (``Config``) on synthetic
data, and for every stage and sweep fits ``time ~ size^b`` (least squares in log-log) next to
the exponent of the stage's analytic FLOP count over the same points (``benchmarks.flops``;
a FLOP count is a polynomial, so its exponent over a range is also a fitted slope). Memory is
XLA's compiled temporary buffers of the stage's jitted computation (for the fits, the update
of one batch). Time is the process's CPU time (all of XLA's threads; median of repeats after a
warm-up) with XLA and LAPACK on one thread each (``main``): the machine is shared, and wall
time would include waiting for a core while other jobs run (and LAPACK's threads spin while
they wait: KFAC's eigendecompositions took 0.9 s instead of 4 ms at load 14 on 2 cores with
OpenBLAS's two threads); the fastest wall time is recorded beside it, and each timing records
``os.getloadavg()``.

The stages: ``kfac_fit`` and ``diag_fit`` (``laplace.fit``, MC Fisher with one sample),
``mc_predictive`` (weight samples, ``chunk_size`` at a time), ``local_predictive`` (local
reparameterisation) and ``glm_predictive`` (linearised, probit link) of the KFAC posterior.
"""

import argparse
import dataclasses
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from benchmarks import flops
from benchmarks.timing import host, measure
from bnn_jax import curvature, data, laplace, losses, models, predictive
from bnn_jax.types import Batch

STAGES = ("kfac_fit", "diag_fit", "mc_predictive", "local_predictive", "glm_predictive")
SWEEP_STAGES = {
    "width": STAGES,
    "depth": STAGES,
    "num_train": ("kfac_fit", "diag_fit"),
    "num_samples": ("mc_predictive", "local_predictive"),
}
LIKELIHOOD = losses.categorical()  # one object: laplace.fit compiles once per likelihood
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclasses.dataclass(frozen=True)
class Config:
    """The base point and the swept values (each sweep varies one of them).

    Attributes:
      input_dim, num_classes: synthetic data ``x ~ U[0, 1]`` with teacher labels.
      width, depth: hidden width and number of hidden layers of the MLP.
      num_train, batch_size: fit data and batch.
      num_samples, chunk_size: MC samples ``T`` and samples per chunk of the MC predictive.
      mc_inputs, local_inputs, glm_inputs: inputs of each predictive.
      sweeps: the values of each swept size.
      repeats, budget_s: timing (``benchmarks.timing.measure``).
      seed: data, initialisation and keys.
    """

    input_dim: int = 256
    num_classes: int = 10
    width: int = 256
    depth: int = 2
    num_train: int = 2000
    batch_size: int = 500
    num_samples: int = 32
    chunk_size: int = 8
    mc_inputs: int = 500
    local_inputs: int = 20
    glm_inputs: int = 50
    sweeps: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("width", (64, 128, 256, 512)),
        ("depth", (1, 2, 4, 8)),
        ("num_train", (500, 1000, 2000, 4000, 8000)),
        ("num_samples", (8, 16, 32, 64, 128)),
    )
    repeats: int = 3
    budget_s: float = 2.0
    seed: int = 0


def quick_config() -> Config:
    return Config(
        input_dim=16, width=16, num_train=64, batch_size=32, num_samples=4, chunk_size=2,
        mc_inputs=8, local_inputs=2, glm_inputs=2,
        sweeps=(("width", (8, 16)), ("depth", (1, 2)), ("num_train", (32, 64)),
                ("num_samples", (2, 4))),
        repeats=1, budget_s=0.0,
    )  # fmt: skip


def _data(config: Config, n: int):
    rng = np.random.default_rng(config.seed)
    teacher = rng.standard_normal((config.input_dim, config.num_classes)).astype(np.float32)
    x = rng.random((n, config.input_dim), dtype=np.float32)
    return x, np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32)


def _curvatures(apply_fn, config: Config) -> dict:
    """The two fitted structures (the one place they are built)."""
    fisher = curvature.mc_fisher(num_samples=1)
    return {
        "kfac_fit": curvature.kfac(apply_fn, LIKELIHOOD, fisher=fisher),
        "diag_fit": curvature.diagonal(apply_fn, LIKELIHOOD, fisher=fisher),
    }


def _fit(curv, params, batches, apply_fn, key):
    """``laplace.fit`` (the one place it is called)."""
    return laplace.fit(
        curv, params, batches, key=key,
        prior_prec=1.0, progress=False,
    )  # fmt: skip


def _temp_mib(compiled) -> float:
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def measure_point(config: Config, stages) -> dict:
    """Time, FLOPs and temporary memory of ``stages`` at one size (``config``)."""
    key = jax.random.key(config.seed)
    model = models.MLP((config.width,) * config.depth, config.num_classes)
    variables = models.init(model, key, (config.input_dim,))
    apply_fn, params = models.make_apply_fn(model, variables), variables["params"]
    layers = flops.layer_shapes(apply_fn, params, (config.input_dim,))
    x, y = _data(config, config.num_train)
    batches = data.Batches(x, y, config.batch_size)
    timed = lambda fn: measure(
        fn, repeats=config.repeats, budget_s=config.budget_s, sync=jax.block_until_ready
    )
    out = {}
    curvatures = _curvatures(apply_fn, config)
    needs_posterior = any(s not in curvatures for s in stages)
    for name, curv in curvatures.items():
        if name not in stages and not (name == "kfac_fit" and needs_posterior):
            continue
        batch = Batch(jnp.asarray(x[: config.batch_size]), jnp.asarray(y[: config.batch_size]))
        update = (
            jax.jit(curv.update).lower(curv.init(params, batch.x), params, batch, key).compile()
        )
        n = len(batches) * config.batch_size
        count = (
            flops.kfac_accumulate(layers, n) + flops.kfac_finalize(layers)
            if name == "kfac_fit"
            else flops.diagonal(layers, n)
        )
        if name in stages:
            timing = timed(lambda c=curv: _fit(c, params, batches, apply_fn, key).state)
            out[name] = _entry(timing, count, _temp_mib(update))
    post = _fit(curvatures["kfac_fit"], params, batches, apply_fn, key) if needs_posterior else None
    x_test, _ = _data(config, max(config.mc_inputs, config.local_inputs, config.glm_inputs))
    t = config.num_samples
    predictives = {
        "mc_predictive": (
            lambda p, xs: predictive.laplace_log_probs(
                p, xs, key=key, num_samples=t, chunk_size=min(config.chunk_size, t)
            ),
            config.mc_inputs,
            lambda b: flops.mc_predictive(layers, t, b),
        ),
        "local_predictive": (
            lambda p, xs: predictive.local_log_probs(p, xs, key=key, num_samples=t),
            config.local_inputs,
            lambda b: flops.local_predictive(layers, t, b),
        ),
        "glm_predictive": (
            lambda p, xs: predictive.glm_probit_log_probs(p, xs, centred=False),
            config.glm_inputs,
            lambda b: flops.glm_probit(layers, b, config.num_classes),
        ),
    }
    for name, (fn, num, count) in predictives.items():
        if name not in stages:
            continue
        xs = jnp.asarray(x_test[:num])
        # the posterior is an argument (as in the library's own jitted predictives), not a
        # constant folded into the program
        compiled = jax.jit(fn).lower(post, xs).compile()
        run = lambda c=compiled, xs=xs: c(post, xs)
        out[name] = _entry(timed(run), count(num), _temp_mib(compiled))
    return out


def _entry(timing, count: float, temp_mib: float) -> dict:
    """``s``: median CPU seconds of the process (all threads), the measure the exponents are
    fitted to: on a machine shared with other jobs, wall time includes waiting for a core."""
    return {
        "s": statistics.median(timing.cpu_times_s),
        "cpu_times_s": list(timing.cpu_times_s),
        "wall_s": min(timing.times_s),
        "times_s": list(timing.times_s),
        "flops": count,
        "temp_mib": temp_mib,
        "load_average": list(os.getloadavg()),
    }


def exponent(sizes, values) -> float:
    """Least-squares slope ``b`` of ``log value = a + b log size``."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def run(config: Config, *, verbose: bool = False) -> dict:
    """Every sweep; ``{"machine", "config", "sweeps": {size: {"values", "stages": {stage:
    {"points", "exponent_time", "exponent_flops", "exponent_memory"}}}}, "wall_s"}``."""
    start, load_start = time.perf_counter(), list(os.getloadavg())
    sweeps = {}
    for size, values in config.sweeps:
        stages = SWEEP_STAGES[size]
        points = []
        for value in values:
            points.append(measure_point(dataclasses.replace(config, **{size: value}), stages))
            if verbose:
                print(size, value, {s: f"{p['s']:.3g}" for s, p in points[-1].items()}, flush=True)
        result = {}
        for stage in stages:
            series = [p[stage] for p in points]
            memory = [s["temp_mib"] for s in series]
            result[stage] = {
                "points": series,
                "exponent_time": exponent(values, [s["s"] for s in series]),
                "exponent_flops": exponent(values, [s["flops"] for s in series]),
                "exponent_memory": exponent(values, memory) if min(memory) > 0 else None,
            }
        sweeps[size] = {"values": list(values), "stages": result}
    return {
        "machine": {
            **host(load_start),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
        },
        "config": dataclasses.asdict(config),
        "sweeps": sweeps,
        "wall_s": time.perf_counter() - start,
    }


def figure(results: dict):
    """Time (top) and temporary memory (bottom) against each swept size, log-log, with the
    FLOP count scaled to the first timing (dotted) for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = results["sweeps"]
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4 * len(sweeps), 7), squeeze=False)
    for col, (size, sweep) in enumerate(sweeps.items()):
        values = np.asarray(sweep["values"])
        for stage, res in sweep["stages"].items():
            colour = f"C{STAGES.index(stage)}"
            times = np.array([p["s"] for p in res["points"]])
            counts = np.array([p["flops"] for p in res["points"]])
            label = f"{stage} ({res['exponent_time']:.2f}; FLOPs {res['exponent_flops']:.2f})"
            axes[0, col].loglog(values, times, "o-", color=colour, label=label)
            axes[0, col].loglog(values, counts * times[0] / counts[0], ":", color=colour)
            memory = [p["temp_mib"] for p in res["points"]]
            axes[1, col].loglog(values, np.maximum(memory, 1e-3), "o-", color=colour, label=stage)
        for ax in axes[:, col]:
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
        axes[0, col].set_title(f"time vs {size}")
        axes[0, col].set_ylabel("CPU seconds")
        axes[0, col].legend(fontsize=7)
        axes[1, col].set_xlabel(size)
        axes[1, col].set_ylabel("temp MiB (compiled)")
    load = results["machine"]["load_average_start"][0]
    fig.suptitle(
        f"cost curves, {results['machine']['cores']} cores, load average {load:.1f} at start "
        "(legend: fitted exponent; FLOP-count exponent; dotted: FLOP count)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def markdown(results: dict) -> str:
    lines = [
        "| sweep | stage | time exponent | FLOP exponent | memory exponent | CPU time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for size, sweep in results["sweeps"].items():
        values = sweep["values"]
        for stage, res in sweep["stages"].items():
            times = [p["s"] for p in res["points"]]
            memory = res["exponent_memory"]
            lines.append(
                f"| {size} {values[0]}-{values[-1]} | {stage} | {res['exponent_time']:.2f} | "
                f"{res['exponent_flops']:.2f} | {'–' if memory is None else f'{memory:.2f}'} | "
                f"{times[0]:.3g}-{times[-1]:.3g} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs XLA and LAPACK on one thread each (unless ``XLA_FLAGS`` is set): the exponents
    should describe the work, not how threads fare on a machine other jobs are using."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="JSON output path")
    parser.add_argument("--figure", default=None, help="PNG output path")
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", SINGLE_THREAD)  # read when the backend starts
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        results = run(quick_config() if args.quick else Config(), verbose=True)
    results["machine"]["xla_flags"] = os.environ["XLA_FLAGS"]
    if args.out:
        from benchmarks.run import _write_json

        _write_json(args.out, results)
    if args.figure:
        figure(results).savefig(args.figure, dpi=90)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
