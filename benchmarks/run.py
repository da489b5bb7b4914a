"""Benchmark bnn_jax against laplace-torch 0.3 and the machine's matmul limit (issue 8).

``python -m benchmarks.run [--quick] [--out results.json]`` times, on CPU in float32, every
stage of the issue for the MLP and LeNet-5 on synthetic MNIST-shaped data (medians of repeats
after a warm-up), runs the laplace-torch baseline on the same trained weights in a subprocess
with the same thread count, and writes

    {"machine": {...}, "cases": [{"name", "ours_s", "baseline", "baseline_s", "ratio",
     "gflops", "fraction_of_matmul_peak", ...}], "memory": {...}, "targets": [...]}

``ratio = baseline_s / ours_s`` (how many times faster bnn_jax is); ``gflops`` counts the
matrix products of the stage (``benchmarks.flops``) and ``fraction_of_matmul_peak`` divides it
by the rate of a 2048^3 float32 ``jnp.dot``. A baseline that cannot run (laplace-torch not
installed, out of memory) leaves ``baseline_s`` null and says why in ``baseline_error``.
A markdown table of the results is printed at the end (``benchmarks.report``).
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cases, problems, report
from benchmarks.timing import gflops, measure

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "torch",
    "laplace-torch",
    "backpack-for-pytorch",
    "curvlinops-for-pytorch",
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def threads() -> int:
    """Cores this process may run on (XLA sizes its thread pool by them; torch is told)."""
    return len(os.sched_getaffinity(0))


def machine_info(config: problems.Config) -> dict:
    a = jnp.ones((2048, 2048), jnp.float32)
    dot = jax.jit(jnp.dot)
    timing = measure(
        lambda: dot(a, a),
        repeats=config.repeats,
        budget_s=config.budget_s,
        sync=jax.block_until_ready,
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _read("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": threads(),
        "memory": _read("/proc/meminfo", "MemTotal"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads": {"xla": threads(), "torch": threads()},
        "dtype": "float32",
        "matmul_2048_gflops_jax": gflops(2 * 2048**3, timing.median_s),
        "load_average_start": list(os.getloadavg()),
        "config": dataclasses.asdict(config),
    }


def run_baseline(config: problems.Config, arrays: dict, workdir: str) -> dict:
    """Run ``benchmarks.torch_baseline`` in a subprocess; ``{"error": ...}`` if it fails."""
    spec = {
        "repeats": config.repeats,
        "budget_s": config.budget_s,
        "memory_gb": config.baseline_memory_gb,
        "threads": threads(),
        "arrays": os.path.join(workdir, "arrays.npz"),
        "models": list(config.models),
        "mlp_widths": list(config.mlp_widths),
        "batch_size": config.batch_size,
        "prior_prec": 1.0,
        "num_samples": config.num_samples,
        "small_inputs": config.small_inputs,
        "glm_inputs": config.glm_inputs,
        "marglik_steps": config.marglik_steps,
        "diag_backends": list(config.baseline_diag_backends),
    }
    np.savez(spec["arrays"], **arrays)
    spec_path, out_path = os.path.join(workdir, "spec.json"), os.path.join(workdir, "out.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads()), "MKL_NUM_THREADS": str(threads())}
    command = [sys.executable, "-m", "benchmarks.torch_baseline", spec_path, out_path]
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=config.baseline_timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {config.baseline_timeout_s} s"}
    if proc.returncode != 0 or not os.path.exists(out_path):
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"exit code {proc.returncode}: {' | '.join(tail)}"}
    with open(out_path) as f:
        return json.load(f)


def _export(name: str, variables, arrays, model_config) -> dict[str, np.ndarray]:
    model = problems.make_model(name, model_config)
    out = {f"{name}:{k}": v for k, v in problems.to_numpy(variables["params"]).items()}
    out[f"{name}:logits"] = np.asarray(model.apply(variables, arrays["x_test"][:100]))
    return out


def main(config: problems.Config, out_path: str | None = None, *, verbose: bool = True) -> dict:
    """Run every case and baseline; write the JSON to ``out_path`` (atomically) and return it."""
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    machine = machine_info(config)
    say(f"matmul 2048^3: {machine['matmul_2048_gflops_jax']:.1f} GFLOP/s (jax)", flush=True)
    arrays = problems.make_data(config)
    ours, memory, exported = {}, {}, dict(arrays)
    for name in config.models:
        t0 = time.perf_counter()
        ours[name], variables, memory[name] = cases.run_model(name, config, arrays)
        exported.update(_export(name, variables, arrays, config))
        say(f"{name}: bnn_jax cases in {time.perf_counter() - t0:.0f} s", flush=True)
    if config.baseline:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            baseline = run_baseline(config, exported, workdir)
        say(f"laplace-torch baseline in {time.perf_counter() - t0:.0f} s", flush=True)
    else:
        baseline = {"error": "not run (baseline=False)"}
    machine["matmul_2048_gflops_torch"] = baseline.get("matmul_gflops")
    machine["baseline_versions"] = baseline.get("versions")
    machine["load_average_end"] = list(os.getloadavg())
    results = report.assemble(machine, ours, baseline, memory, config)
    results["wall_s"] = time.perf_counter() - start
    if out_path is not None:
        _write_json(out_path, results)
    say(report.markdown(results))
    return results


def _write_json(path: str, results: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer repeats")
    parser.add_argument("--out", default="results.json", help="JSON output path")
    parser.add_argument("--models", nargs="+", choices=problems.MODELS, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="skip laplace-torch")
    return parser.parse_args(argv)


def config_from_args(args) -> problems.Config:
    config = problems.quick_config() if args.quick else problems.Config()
    changes = {}
    if args.models:
        changes["models"] = tuple(args.models)
    if args.no_baseline:
        changes["baseline"] = False
    return dataclasses.replace(config, **changes)


if __name__ == "__main__":
    arguments = parse_args()
    main(config_from_args(arguments), arguments.out)
