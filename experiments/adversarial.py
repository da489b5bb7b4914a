"""Adversarial robustness, the blog post's "Under attack": FGSM (L-infinity, true labels) sweeps
of the mean predictive entropy and accuracy against the step size, for the MAP, temperature
scaling and every Laplace recipe, each attacked through its own predictive (white box), with the
least-squares slope of the entropy over the step size and its interval over seeds.

The post's claim is that a Bayesian predictive signals an attack by growing uncertain: its
entropy rises with the step size, where the MAP becomes confidently wrong. MNIST-1D signals are
unbounded (standardised), so attacked inputs are not clipped.

Run ``python -m experiments.adversarial [--quick] [--out results/mnist1d-adversarial]``.
"""

import numpy as np

from bnn_jax.plotting import family as family_plots
from experiments import cli, common, family, stats, verdicts


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick)


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """FGSM sweeps of every attacked method of every member; the reference member's figure."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ref, eps = config["reference"], np.asarray(config["fgsm_eps"], float)
    runs = fitted.results[ref]
    attacked = lambda rs: [m for m in rs[0]["methods"] if "fgsm" in rs[0]["methods"][m]]
    sweep = lambda rs, m, k: np.asarray([r["methods"][m]["fgsm"][k] for r in rs], float)
    best = verdicts.best_recipe(runs)
    shown = list(dict.fromkeys(m for m in ("map", "temperature", "kfac_post", best) if m))
    shown = [m for m in shown if m in attacked(runs)]
    slopes = {
        member: {m: stats.interval(verdicts.values(rs, m, "slope")) for m in attacked(rs)}
        for member, rs in fitted.results.items()
    }
    report.section(f"Adversarial attacks on {fitted.dataset.name} (blog: under attack)")
    report.text(
        f"FGSM (L-infinity, true labels) on {runs[0]['attack_num']} test inputs per seed, step "
        f"sizes {', '.join(f'{e:g}' for e in eps)} (0: clean inputs); each method attacked "
        f"through its own predictive (MC predictive: its {config['num_samples']} weight draws; "
        "Redux and GLM-search recipes: the centred probit of their posterior). Entropy slope: "
        "least-squares slope of the mean entropy over eps."
    )
    panels = {
        "mean predictive entropy (nats)": {m: sweep(runs, m, "entropy") for m in shown},
        "accuracy": {m: sweep(runs, m, "accuracy") for m in shown},
    }
    report.figure(
        "adversarial_fgsm_sweep",
        family_plots.interval_sweeps(eps, panels, title=f"FGSM against {ref}"),
        f"Mean entropy and accuracy on FGSM inputs against the step size ({ref}; line = mean, "
        "band = min/max over seeds). Entropy slope (nats per unit eps) with 95% interval: "
        + "; ".join(f"{m} {slopes[ref][m].format(2)}" for m in shown)
        + ". Accuracy at the largest step: "
        + ", ".join(f"{m} {sweep(runs, m, 'accuracy')[:, -1].mean():.3f}" for m in shown)
        + ".",
    )
    for member, rows in slopes.items():
        report.text(f"FGSM entropy slope of **{member}** (95% intervals over seeds):")
        report.table(["method", "entropy slope"], [[m, v.format(3)] for m, v in rows.items()])
    return {
        member: {
            m: {
                "slope": slopes[member][m].as_dict(),
                "eps": eps.tolist(),
                "entropy": sweep(rs, m, "entropy").mean(0).tolist(),
                "accuracy": sweep(rs, m, "accuracy").mean(0).tolist(),
            }
            for m in attacked(rs)
        }
        for member, rs in fitted.results.items()
    }


main = common.alone_main("bnn_jax: adversarial study", "adversarial", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d")
