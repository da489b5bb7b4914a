"""Calibration across a model family: the blog post's reliability diagrams, ECE and calibration
curves on a logit-scaled confidence axis with a min/max band over the family, for MAP ("SGD"),
DIAG and KFAC Laplace, MC and Concrete Dropout, a deep ensemble and temperature scaling.

Run ``python -m experiments.calibration [--quick] [--out results/digits-calibration]``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration, plotting, uncertainty
from experiments import cli, common, family


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick) | {"num_bins": 10}


def scores(sample_log_probs: np.ndarray, labels: np.ndarray, num_bins: int) -> dict:
    """Accuracy, NLL, Brier, ECE (equal width and equal mass), MCE of a predictive."""
    lp, y = uncertainty.mean_log_probs(jnp.asarray(sample_log_probs)), jnp.asarray(labels)
    return {
        "accuracy": float(calibration.accuracy(lp, y)),
        "nll": float(calibration.nll(lp, y)),
        "brier": float(calibration.brier(lp, y)),
        "ece": float(calibration.ece(lp, y, num_bins=num_bins)),
        "ece_equal_mass": float(calibration.ece(lp, y, num_bins=num_bins, equal_mass=True)),
        "mce": float(calibration.mce(lp, y, num_bins=num_bins)),
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def run(config: dict, out_dir, report: common.Report, fitted=None, predictions=None) -> dict:
    """Score every method of every family member on the test split; figures into ``report``."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, bins = fitted.dataset, config["num_bins"]
    predictions = predictions or family.predict(fitted, {"test": ds.x_test})
    table = {
        member: {m: scores(p["test"], ds.y_test, bins) for m, p in methods.items()}
        for member, methods in predictions.items()
    }
    methods = config["methods"]
    report.section(f"Calibration on {ds.name} (blog section 2.1)")
    report.text(
        f"Family: {', '.join(s['name'] for s in config['family'])}; test split of "
        f"{len(ds.x_test)} inputs; ECE with {bins} equal-width (and equal-mass) bins. Laplace "
        f"(N, tau) were chosen on the validation split by {config['tuning_objective']}."
    )
    ref = config["reference"]
    mean_lp = lambda p: uncertainty.mean_log_probs(jnp.asarray(p["test"]))
    reliabilities = {
        m: calibration.reliability(
            mean_lp(predictions[ref][m]), jnp.asarray(ds.y_test), num_bins=bins
        )
        for m in methods
    }
    report.figure(
        "calibration_reliability",
        plotting.reliability_diagram(reliabilities, title=f"Reliability diagrams ({ref})"),
        f"Reliability diagrams of {ref}: accuracy per confidence bin (bars), the gap to the "
        "diagonal in red (above: overconfident), ECE in each panel.",
    )
    curves = {
        m: [
            calibration.calibration_curve(mean_lp(predictions[member][m]), jnp.asarray(ds.y_test))
            for member in predictions
        ]
        for m in methods
    }
    report.figure(
        "calibration_curves",
        plotting.calibration_curves(curves, title="Calibration curves across the family"),
        "Confidence minus accuracy per (equal-mass) confidence bin on a logit-scaled confidence "
        "axis: above zero is overconfident. Lines are family means, bands the min/max across "
        "the family (the post's error range).",
    )
    subset = [m for m in ("map", "diag_laplace", "kfac_laplace") if m in methods]
    if len(subset) > 1:
        report.figure(
            "calibration_curves_laplace",
            plotting.calibration_curves(
                {m: curves[m] for m in subset}, title="SGD (MAP) vs DIAG vs KFAC"
            ),
            "The post's comparison of curvature estimators: MAP, diagonal and KFAC Laplace.",
        )
    keys = ["accuracy", "nll", "brier", "ece", "ece_equal_mass", "mce"]
    report.table(
        ["model", "method", *keys],
        [[member, m] + [table[member][m][k] for k in keys] for member in table for m in methods],
    )
    report.table(
        ["model", "method", "scale", "N", "tau", "val objective"],
        [
            [mem.name, m, t["scale"], t["N"], t["prior_prec"], t["objective"]]
            for mem in fitted.members
            for m, t in mem.tuned.items()
            if "scale" in t
        ],
    )
    intervals = {}
    if "kfac_laplace" in methods and "map" in methods:
        intervals = {
            member: ece_difference_interval(
                mean_lp(by_method["map"]),
                mean_lp(by_method["kfac_laplace"]),
                ds.y_test,
                num_bins=bins,
                seed=config["seed"],
            )
            for member, by_method in predictions.items()
        }
        report.text(_kfac_verdict(table, intervals))
    return {
        "family": table,
        "tuned": {mem.name: mem.tuned for mem in fitted.members},
        "kfac_minus_map_ece_interval": intervals,
    }


def ece_difference_interval(
    lp_a, lp_b, labels, *, num_bins: int, seed: int, num_resamples: int = 500
) -> list[float]:
    """Central 90% interval of ``ECE(b) - ECE(a)`` under a paired bootstrap of the test set
    (the same resampled inputs for both predictives): how much of a difference is noise."""
    n = lp_a.shape[0]
    idx = jax.random.randint(jax.random.key(seed), (num_resamples, n), 0, n)
    y = jnp.asarray(labels)
    ece = lambda lp, i: calibration.ece(lp[i], y[i], num_bins=num_bins)
    diff = jax.vmap(lambda i: ece(lp_b, i) - ece(lp_a, i))(idx)
    return [float(v) for v in jnp.quantile(diff, jnp.array([0.05, 0.95]))]


def _kfac_verdict(table, intervals) -> str:
    lines = []
    for member, rows in table.items():
        d_ece = rows["kfac_laplace"]["ece"] - rows["map"]["ece"]
        d_acc = 100 * (rows["kfac_laplace"]["accuracy"] - rows["map"]["accuracy"])
        low, high = intervals[member]
        lines.append(
            f"{member}: ECE {rows['map']['ece']:.4f} -> {rows['kfac_laplace']['ece']:.4f} "
            f"({d_ece:+.4f}; paired-bootstrap 90% interval [{low:+.4f}, {high:+.4f}]), "
            f"accuracy {d_acc:+.2f} points"
        )
    ok = all(
        rows["kfac_laplace"]["ece"] < rows["map"]["ece"]
        and rows["kfac_laplace"]["accuracy"] >= rows["map"]["accuracy"] - 0.005
        for rows in table.values()
    )
    verdict = "holds" if ok else "does not hold"
    return (
        f"KFAC-LA vs MAP on every family member ({verdict}: lower ECE at a cost of at most "
        "0.5 points of accuracy): " + "; ".join(lines) + "."
    )


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: calibration study",
        "calibration",
        run,
        config,
        out_dir,
        overwrite=overwrite,
        check=check,
    )


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="digits")
