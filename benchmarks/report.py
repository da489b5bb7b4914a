"""Assemble the benchmark JSON (cases side by side with their baselines, targets) and render it
as markdown tables."""

from benchmarks import problems
from benchmarks.timing import gflops

BACKENDS = {
    "default": "default backend (CurvlinopsGGN, exact GGN)",
    "curvlinops_mc": "CurvlinopsGGN stochastic (MC Fisher, 1 sample)",
    "backpack": "BackPACK exact (BackPackGGN)",
    "backpack_mc": "BackPACK stochastic (BackPackGGN, MC Fisher, 1 sample)",
}
TORCH = "laplace-torch"
MC_BACKENDS = ("curvlinops_mc", "backpack_mc")
EXACT_BACKENDS = ("default", "backpack")


def _baseline_case(baseline: dict, key: str) -> dict:
    cases = baseline.get("cases")
    if cases is None:
        return {"s": None, "error": baseline.get("error", "baseline did not run")}
    if key in cases:
        return cases[key]
    model_error = cases.get(key.split("/", 1)[0] + "/error", {}).get("error")
    return {"s": None, "error": model_error or "baseline case missing"}


def _fastest(baseline, model, stage, backends=tuple(BACKENDS)):
    """The fastest backend of a stage: ``(backend, seconds, {backend: seconds or error})``."""
    found = {b: _baseline_case(baseline, f"{model}/{stage}/{b}") for b in backends}
    every = {b: (c["s"] if c.get("s") is not None else c.get("error")) for b, c in found.items()}
    timed = {b: c["s"] for b, c in found.items() if c.get("s") is not None}
    if not timed:
        return None, None, every
    best = min(timed, key=timed.get)
    return best, timed[best], every


def _case(name, ours, label, baseline_s, peak, *, error=None, **extra):
    ours_s = ours["s"]
    rate = gflops(ours.get("flops"), ours_s)
    return {
        "name": name,
        "ours_s": ours_s,
        "baseline": label,
        "baseline_s": baseline_s,
        "ratio": baseline_s / ours_s if baseline_s is not None and ours_s else None,
        "gflops": rate,
        "fraction_of_matmul_peak": rate / peak if rate is not None and peak else None,
        "baseline_error": error,
        "ours_times_s": ours["times_s"],
        **extra,
    }


def _model_cases(model: str, ours: dict, baseline: dict, peak: float) -> list[dict]:
    out = []

    def single(name, key, base_key, label):
        b = _baseline_case(baseline, f"{model}/{base_key}")
        out.append(
            _case(
                f"{model}/{name}",
                ours[key],
                f"{TORCH} {label}",
                b.get("s"),
                peak,
                error=b.get("error"),
            )
        )

    def fastest(name, key, stage, label, backends=tuple(BACKENDS)):
        best, seconds, every = _fastest(baseline, model, stage, backends)
        text = f"{TORCH} {label}, fastest: {BACKENDS[best]}" if best else f"{TORCH} {label}"
        error = None if best else "; ".join(f"{b}: {e}" for b, e in every.items())
        out.append(
            _case(f"{model}/{name}", ours[key], text, seconds, peak, error=error, baselines=every)
        )
        return best

    single("train_epoch", "train_epoch", "train_epoch", "(torch Adam epoch, same model)")
    best = fastest("kfac_fit", "kfac_fit", "kron_fit", "kron fit (accumulate + eigendecompose)")
    fit = out[-1]
    epoch = ours["train_epoch"]["s"]
    fit["fit_over_epoch"] = fit["ours_s"] / epoch
    if best is not None:
        decompose = _baseline_case(baseline, f"{model}/kron_decompose/{best}").get("s")
        accumulate = fit["baseline_s"] - decompose if decompose is not None else None
    else:
        decompose = accumulate = None
    label = BACKENDS.get(best, "")
    out.append(
        _case(
            f"{model}/kfac_fit/accumulate",
            ours["kfac_fit/accumulate"],
            f"{TORCH} kron fit minus its decomposition ({label})",
            accumulate,
            peak,
            error=None if accumulate is not None else fit["baseline_error"],
        )
    )
    out.append(
        _case(
            f"{model}/kfac_fit/finalize",
            ours["kfac_fit/finalize"],
            f"{TORCH} Kron.decompose() ({label})",
            decompose,
            peak,
            error=None if decompose is not None else fit["baseline_error"],
        )
    )
    out.append(
        _case(f"{model}/kfac_fit_vs_epoch", ours["kfac_fit"], "bnn_jax training epoch", epoch, peak)
    )
    fastest("diag_fit", "diag_fit", "diag_fit", "diag fit")
    # same estimator on both sides: MC Fisher against the stochastic backends, the exact GGN
    # (ours: exact_fisher) against the exact ones
    for structure, stage in (("kfac", "kron_fit"), ("diag", "diag_fit")):
        label = stage.replace("_", " ")
        fastest(f"{structure}_fit_vs_mc", f"{structure}_fit", stage, label, MC_BACKENDS)
        fastest(f"{structure}_fit_exact", f"{structure}_fit_exact", stage, label, EXACT_BACKENDS)
    single("mc_predictive_T30_test", "mc_predictive/test", "mc_predictive/test", "nn/mc predictive")
    single(
        "mc_predictive_T30_small_local",
        "mc_predictive/small",
        "mc_predictive/small",
        "nn/mc predictive",
    )
    single(
        "mc_predictive_T30_small_weights",
        "mc_predictive/small_weights",
        "mc_predictive/small",
        "nn/mc predictive",
    )
    fastest("glm_probit", "glm_probit", "glm_probit", "glm/probit", ("default", "backpack"))
    single("marglik", "marglik", "marglik", "optimize_prior_precision(marglik)")
    out.append(
        _case(
            f"{model}/mc_dropout_vmap",
            ours["mc_dropout/vmap"],
            "bnn_jax: Python loop of jitted single passes",
            ours["mc_dropout/loop"]["s"],
            peak,
        )
    )
    out.append(_case(f"{model}/mc_dropout_loop", ours["mc_dropout/loop"], None, None, peak))
    return out


def _targets(results: dict, config: problems.Config) -> list[dict]:
    by_name = {c["name"]: c for c in results["cases"]}
    targets = []

    def ratio(model, case, at_least, what):
        c = by_name[f"{model}/{case}"]
        value = c["ratio"]
        targets.append(
            {
                "target": f"{model}: {what} >= {at_least}x faster than the baseline",
                "value": value,
                "met": None if value is None else value >= at_least,
            }
        )

    for model in config.models:
        ratio(model, "kfac_fit", 3, "KFAC fit")
        fit = by_name[f"{model}/kfac_fit"]
        targets.append(
            {
                "target": f"{model}: KFAC fit <= 2 training epochs",
                "value": fit["fit_over_epoch"],
                "met": fit["fit_over_epoch"] <= 2,
            }
        )
        ratio(model, "kfac_fit_exact", 3, "KFAC fit, exact GGN on both sides,")
        ratio(model, "diag_fit", 3, "diagonal fit")
        ratio(model, "diag_fit_exact", 3, "diagonal fit, exact GGN on both sides,")
        memory = results["memory"][model]
        size = max(memory["diag_update"], key=int)
        diag, grad = (
            memory["diag_update"][size]["temp_bytes"],
            memory["gradient"][size]["temp_bytes"],
        )
        per_example = int(size) * results["num_params"][model] * 4
        targets.append(
            {
                "target": (
                    f"{model}: diagonal update at batch {size} holds no per-example gradients "
                    f"(temp memory / a gradient step's <= 2.5; per-example gradients would "
                    f"need {per_example / 2**20:.0f} MiB)"
                ),
                "value": diag / grad,
                "met": diag <= 2.5 * grad,
            }
        )
        ratio(model, "mc_predictive_T30_test", 2, f"MC predictive T={config.num_samples}")
        ratio(
            model,
            "mc_predictive_T30_small_local",
            10,
            f"MC predictive T={config.num_samples} on {config.small_inputs} inputs (local)",
        )
        ratio(model, "glm_probit", 20, f"GLM probit on {config.glm_inputs} inputs")
        ratio(model, "marglik", 10, f"marglik tuning ({config.marglik_steps} steps)")
        mc = results["memory"][model]["mc_predictive"]
        low, high = (
            mc[str(t)]["temp_bytes"]
            for t in (min(config.memory_samples), max(config.memory_samples))
        )
        targets.append(
            {
                "target": (
                    f"{model}: MC predictive temp memory flat from T={min(config.memory_samples)} "
                    f"to T={max(config.memory_samples)} (within 10%)"
                ),
                "value": high / low,
                "met": high <= 1.1 * low,
            }
        )
    return targets


def assemble(machine, ours, baseline, memory, config) -> dict:
    peak = machine["matmul_2048_gflops_jax"]
    cases = []
    for model in config.models:
        cases += _model_cases(model, ours[model], baseline, peak)
    results = {
        "machine": machine,
        "cases": cases,
        "memory": memory,
        "num_params": {m: ours[m]["num_params"] for m in config.models},
        "baseline_checks": {
            m: _baseline_case(baseline, f"{m}/check").get("max_logit_diff") for m in config.models
        },
        "baseline_error": baseline.get("error"),
        "baseline_cases": baseline.get("cases"),  # every backend, with warm-up times
        "baseline_wall_s": baseline.get("wall_s"),
    }
    results["targets"] = _targets(results, config)
    return results


def _fmt(value, spec=".3g"):
    return "–" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    lines = [
        "| case | bnn_jax (s) | baseline | baseline (s) | ratio | GFLOP/s | of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["cases"]:
        base = c["baseline"] or ""
        if c["baseline_s"] is None and c.get("baseline_error"):
            base += f" ({c['baseline_error'][:80]})"
        lines.append(
            f"| {c['name']} | {_fmt(c['ours_s'])} | {base} | {_fmt(c['baseline_s'])} | "
            f"{_fmt(c['ratio'], '.2f')} | {_fmt(c['gflops'], '.1f')} | "
            f"{_fmt(c['fraction_of_matmul_peak'], '.0%')} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], '.2f')} | {met} |")
    lines += ["", "| memory (compiled, MiB) | temp | output |", "|---|---|---|"]
    for model, mem in results["memory"].items():
        for stage, by_size in mem.items():
            for size, stats in by_size.items():
                lines.append(
                    f"| {model} {stage} ({size}) | {stats['temp_bytes'] / 2**20:.1f} | "
                    f"{stats['output_bytes'] / 2**20:.1f} |"
                )
    return "\n".join(lines)
