"""Calibration across the model family, the blog post's section 2.1: ECE, NLL and accuracy of
every method with 95% intervals over seeds; calibration curves on a logit-scaled confidence axis
with a min/max band across the family (MAP / DIAG / KFAC as in the post, the other methods in a
second figure); reliability diagrams of the reference member.

Run ``python -m experiments.calibration [--quick] [--out results/mnist1d-calibration]``.
"""

import jax.numpy as jnp

from bnn_jax import calibration, plotting
from experiments import cli, common, family, verdicts

LAPLACE_FIGURE = ("map", "diag_post", "kfac_post")
"""The post's figure: SGD (MAP) vs DIAG vs KFAC, with its recipe."""


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick)


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def _fmt(interval) -> str:
    return interval.format(3)


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """Scores with intervals for every method of every member; figures into ``report``."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, ref, bins = fitted.dataset, config["reference"], config["num_bins"]
    first = next(iter(fitted.results.values()))
    has = {member: list(runs[0]["methods"]) for member, runs in fitted.results.items()}
    methods = list(dict.fromkeys(m for names in has.values() for m in names))
    table = {
        member: verdicts.summary(runs, has[member], config["ood_sets"])
        for member, runs in fitted.results.items()
    }
    report.section(f"Calibration on {ds.name} (blog section 2.1)")
    n_seeds, n_test = len(first), first[0]["num_test"]
    report.text(
        f"Family: {', '.join(s['name'] for s in config['family'])}; {n_seeds} seeds of the whole "
        f"pipeline; {n_test} test inputs per seed; ECE with {bins} equal-width bins. Numbers are "
        "means with 95% Student-t intervals over the seeds."
        + "".join(
            f" {spec['name']} runs only the Laplace recipes {', '.join(spec['recipes'])} (the "
            "post's MC search and MC attacks cost too much there for the time budget)."
            for spec in config["family"]
            if "recipes" in spec
        )
    )
    labels = jnp.asarray(ds.y_test[:n_test])
    curve = lambda member, m: calibration.calibration_curve(
        jnp.asarray(fitted.arrays[member]["test_log_probs"][m]), labels
    )
    members = list(fitted.arrays)
    shown = [m for m in LAPLACE_FIGURE if m in methods]
    map_ece = {k: table[k]["map"]["ece"] for k in members}
    ece_of = lambda m: ", ".join(
        f"{k} {table[k][m]['ece'].mean:.3f}" for k in members if m in has[k]
    )
    curves = lambda m: [curve(k, m) for k in members if m in has[k]]  # the members that ran m
    absent = lambda ms: "".join(
        f" {m} is not run on {', '.join(k for k in members if m not in has[k])}."
        for m in ms
        if any(m not in has[k] for k in members)
    )
    report.figure(
        "calibration_curves_laplace",
        plotting.calibration_curves(
            {m: curves(m) for m in shown},
            title="SGD (MAP) vs DIAG vs KFAC Laplace (the post's recipe)",
        ),
        "Confidence minus accuracy per equal-mass bin (first seed) on a logit confidence axis, "
        "line = mean, band = min/max over the members that ran the method; above 0 is "
        f"overconfident. ECE (mean over seeds): MAP {ece_of('map')}; "
        + "; ".join(f"{m} {ece_of(m)}" for m in shown[1:])
        + "."
        + absent(shown),
    )
    others = [m for m in methods if m not in shown and not m.endswith(("_probit", "_mclink"))]
    others = [m for m in others if not m.endswith("_post")]
    report.figure(
        "calibration_curves_other",
        plotting.calibration_curves(
            {m: curves(m) for m in ["map", *others]},
            title="MAP and the other methods",
        ),
        "The same curves for temperature scaling, MC and Concrete Dropout, the deep ensemble "
        "and the Redux and GLM-search Laplace recipes. ECE (mean over seeds): "
        + "; ".join(f"{m} {ece_of(m)}" for m in others)
        + "."
        + absent(others),
    )
    best = verdicts.best_recipe(fitted.results[ref])
    panel = [m for m in ("map", "temperature", "kfac_post", best) if m in has[ref]]
    panel = list(dict.fromkeys(panel))
    lp = fitted.arrays[ref]["test_log_probs"]
    reliabilities = {
        m: calibration.reliability(jnp.asarray(lp[m]), labels, num_bins=bins) for m in panel
    }
    report.figure(
        "calibration_reliability",
        plotting.reliability_diagram(reliabilities, title=f"Reliability diagrams ({ref})"),
        f"Reliability diagrams of {ref} (first seed, {n_test} test inputs): accuracy per "
        "confidence bin; the gap to the diagonal (above: overconfident). ECE over seeds: "
        + "; ".join(f"{m} {_fmt(table[ref][m]['ece'])}" for m in panel)
        + ".",
    )
    keys = ["accuracy", "nll", "ece", "brier"]
    for member in members:
        report.text(f"**{member}** (MAP ECE {_fmt(map_ece[member])}):")
        report.table(
            ["method", *keys],
            [[m] + [_fmt(table[member][m][k]) for k in keys] for m in has[member]],
        )
    return {
        "family": {
            member: {m: {k: v.as_dict() for k, v in row.items()} for m, row in rows.items()}
            for member, rows in table.items()
        }
    }


main = common.alone_main("bnn_jax: calibration study", "calibration", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d")
