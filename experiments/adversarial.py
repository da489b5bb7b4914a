"""Adversarial robustness, the blog post's "Under attack": FGSM sweeps of accuracy, NLL, ECE and
predictive entropy against the step size for every method, and how well entropy and BALD detect
the attacked inputs (AUROC, all attacks and successful ones only).

The attacker is white-box: it differentiates each method's MC predictive over the same
posterior draws it is evaluated with (expectation over transformation) and uses the true
labels, as the post; inputs are clipped to the data range [0, 1].

Run ``python -m experiments.adversarial [--quick] [--out results/digits-adversarial]``.
"""

import functools

import jax.numpy as jnp
import numpy as np

from bnn_jax import attacks, plotting
from experiments import cli, common, family, progress
from experiments.cache import Cache, fingerprint


def get_config(quick: bool = False) -> dict:
    """The post's step sizes: 0 to 0.2 in 11 steps and 0.3 to 1 in 8."""
    eps = np.concatenate([np.linspace(0, 0.2, 11), np.linspace(0.3, 1.0, 8)])
    return family.default_config(quick) | {
        "fgsm_eps": [0.0, 0.05, 0.1, 0.2, 0.5] if quick else [round(float(e), 4) for e in eps],
        "attack_num": 100 if quick else None,
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """Sweep FGSM over ``fgsm_eps`` against every method of the reference member."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, member = fitted.dataset, family.reference(fitted, config)
    num = config["attack_num"] or len(ds.x_test)
    x, y = jnp.asarray(ds.x_test[:num]), jnp.asarray(ds.y_test[:num])
    clip = (0.0, 1.0) if ds.is_image else (None, None)
    fgsm = functools.partial(attacks.fgm, norm="linf", clip_min=clip[0], clip_max=clip[1])
    eps = np.asarray(config["fgsm_eps"])
    settings = member.settings | {"eps": config["fgsm_eps"], "clip": clip}
    settings |= {"inputs": fingerprint(x), "labels": fingerprint(y)}
    cache, results, bars = Cache(fitted.cache_dir), {}, progress.current().bars
    for name, predictor in member.predictors.items():
        method = {name: predictor.attack_method()}
        sweep = lambda method=method, name=name: _sweep_dict(
            attacks.sweep(method, fgsm, x, y, eps, progress=bars)[name]
        )
        stored = cache.stage(f"{member.name}-{name}-fgsm", settings | {"method": name}, sweep)
        results[name] = _sweep_result(stored)
    report.section(f"Adversarial attacks on {ds.name} (blog: under attack)")
    report.text(
        f"FGSM (L-infinity) on {num} test inputs against each method of {member.name}, with the "
        "true labels, inputs clipped to [0, 1]."
    )
    panels = {
        "accuracy": {m: r.accuracy for m, r in results.items()},
        "predictive entropy (nats)": {m: r.entropy for m, r in results.items()},
        "NLL": {m: r.nll for m, r in results.items()},
        "ECE": {m: r.ece for m, r in results.items()},
    }
    report.figure(
        "adversarial_fgsm_sweep",
        plotting.attack_sweeps(eps, panels, title=f"FGSM against {member.name}"),
        "Accuracy, mean predictive entropy, NLL and ECE of the attacked inputs against the FGSM "
        "step size: a method whose entropy rises faster signals the attack earlier.",
    )
    detection = {
        "AUROC entropy (all attacks)": {m: r.detection.auroc_entropy for m, r in results.items()},
        "AUROC BALD (all attacks)": {m: r.detection.auroc_bald for m, r in results.items()},
    }
    report.figure(
        "adversarial_detection",
        plotting.attack_sweeps(eps, detection, title="Detecting attacked inputs"),
        "AUROC of predictive entropy and of BALD for telling attacked from clean inputs, "
        "against the step size (BALD is 0 for deterministic networks: AUROC 0.5).",
    )
    pick = [i for i, e in enumerate(eps) if e > 0][:3]
    rows = []
    for m, r in results.items():
        for i in pick:
            rows.append(
                [
                    m,
                    float(eps[i]),
                    float(r.accuracy[i]),
                    float(r.entropy[i]),
                    float(r.detection.auroc_entropy[i]),
                    float(r.detection.auroc_bald[i]),
                    float(r.detection_successful.auroc_entropy[i]),
                    float(r.detection_successful.auroc_bald[i]),
                ]
            )
    report.table(
        [
            "method",
            "eps",
            "accuracy",
            "entropy",
            "AUROC H",
            "AUROC BALD",
            "AUROC H (successful)",
            "AUROC BALD (successful)",
        ],
        rows,
    )
    return {m: _as_lists(r) for m, r in results.items()}


def _sweep_dict(result: attacks.SweepResult) -> dict:
    """A sweep as nested dicts of arrays (how the cache stores it)."""
    detections = ("detection", "detection_successful")
    return result._asdict() | {k: getattr(result, k)._asdict() for k in detections}


def _sweep_result(stored: dict) -> attacks.SweepResult:
    detections = ("detection", "detection_successful")
    return attacks.SweepResult(**stored | {k: attacks.Detection(**stored[k]) for k in detections})


def _as_lists(result: attacks.SweepResult) -> dict:
    lists = lambda a: [float(v) for v in np.asarray(a)]
    out = {
        k: lists(getattr(result, k))
        for k in ("eps", "accuracy", "nll", "ece", "entropy", "bald", "success_rate")
    }
    out["detection"] = {k: lists(v) for k, v in result.detection._asdict().items()}
    out["detection_successful"] = {
        k: lists(v) for k, v in result.detection_successful._asdict().items()
    }
    return out


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: adversarial study",
        "adversarial",
        run,
        config,
        out_dir,
        overwrite=overwrite,
        check=check,
    )


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="digits")
