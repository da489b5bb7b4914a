"""Out-of-distribution detection, the blog post's section 2.2: known (test digits) versus
unknown inputs (photo patches, noise): entropy histograms per method, inverse-ECDF curves of the
normalised entropy (solid OOD, dashed in-domain), and AUROC / AUPR / FPR@95%TPR of predictive
entropy, BALD and maximum probability.

Run ``python -m experiments.ood [--quick] [--out results/digits-ood]``.
"""

import jax.numpy as jnp
import numpy as np

from bnn_jax import data, ood, plotting, uncertainty
from experiments import cli, common, family

OOD_SETS = ("patches", "noise", "held_out")


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick) | {"ood_sets": ["patches", "noise"]}


def ood_inputs(config: dict, ds: data.Dataset) -> dict[str, np.ndarray]:
    """The OOD sets of ``config["ood_sets"]``, as many inputs as the test split."""
    return {name: data.load_ood(ds, name, seed=config["seed"]) for name in config["ood_sets"]}


def _scores(samples: np.ndarray) -> dict[str, np.ndarray]:
    """OOD scores (higher = more likely OOD) from predictive samples ``[T, n, C]``."""
    lp = jnp.asarray(samples)
    return {
        "entropy": np.asarray(uncertainty.predictive_entropy(lp)),
        "bald": np.asarray(uncertainty.bald(lp)),
        "max_prob": -np.asarray(uncertainty.max_probability(uncertainty.mean_log_probs(lp))),
    }


def detection(samples_in: np.ndarray, samples_out: np.ndarray) -> dict[str, float]:
    """AUROC of entropy, BALD and max probability; AUPR (in and out) and FPR@95 of entropy."""
    s_in, s_out = _scores(samples_in), _scores(samples_out)
    out = {f"auroc_{k}": float(ood.auroc(s_in[k], s_out[k])) for k in s_in}
    out["aupr_out_entropy"] = float(ood.aupr(s_in["entropy"], s_out["entropy"], positive="out"))
    out["aupr_in_entropy"] = float(ood.aupr(s_in["entropy"], s_out["entropy"], positive="in"))
    out["fpr95_entropy"] = float(ood.fpr_at_tpr(s_in["entropy"], s_out["entropy"], 0.95))
    out["fpr95_bald"] = float(ood.fpr_at_tpr(s_in["bald"], s_out["bald"], 0.95))
    out["mean_entropy_in"] = float(np.mean(s_in["entropy"]))
    out["mean_entropy_out"] = float(np.mean(s_out["entropy"]))
    return out


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config(), {"ood_sets": OOD_SETS})


def run(config: dict, out_dir, report: common.Report, fitted=None, predictions=None) -> dict:
    """Detection scores for every method, member and OOD set; figures for the reference."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds = fitted.dataset
    if predictions is None:
        inputs = {"test": ds.x_test, **ood_inputs(config, ds)}
        predictions = family.predict(fitted, inputs)
    sets, methods, ref = config["ood_sets"], config["methods"], config["reference"]
    table = {
        member: {m: {s: detection(p["test"], p[s]) for s in sets} for m, p in by_method.items()}
        for member, by_method in predictions.items()
    }
    report.section(f"Out-of-distribution detection on {ds.name} (blog section 2.2)")
    report.text(
        f"In-domain: the {len(ds.x_test)} test inputs; OOD: {', '.join(sets)} (as many inputs). "
        "Scores are higher for more uncertain predictions; AUROC 0.5 is chance, BALD of a "
        "deterministic network is 0 everywhere (AUROC 0.5)."
    )
    log_c = np.log(ds.num_classes)
    thresholds = jnp.linspace(0.0, 1.0, 101)
    pred = predictions[ref]
    entropy = lambda s: np.asarray(uncertainty.predictive_entropy(jnp.asarray(s)))
    for s in sets:
        report.figure(
            f"ood_histograms_{s}",
            plotting.entropy_histograms(
                {m: entropy(pred[m]["test"]) for m in methods},
                {m: entropy(pred[m][s]) for m in methods},
                num_classes=ds.num_classes,
                out_label=s,
            ),
            f"Predictive entropy of {ref} on test digits and on {s}, per method: the less the "
            "histograms overlap, the better a threshold separates known from unknown inputs.",
        )
        curve = lambda x: ood.inverse_ecdf(jnp.asarray(entropy(x) / log_c), thresholds=thresholds)
        report.figure(
            f"ood_inverse_ecdf_{s}",
            plotting.inverse_ecdf_curves(
                {m: curve(pred[m]["test"]) for m in methods},
                {m: curve(pred[m][s]) for m in methods},
                title=f"Inverse ECDF of normalised entropy ({ref}; solid {s}, dashed test)",
            ),
            "Fraction of inputs whose normalised entropy H / log C exceeds the threshold: solid "
            f"lines for {s} (high is good), dashed for the test digits (low is good).",
        )
        keys = [
            "auroc_entropy",
            "auroc_bald",
            "auroc_max_prob",
            "aupr_in_entropy",
            "aupr_out_entropy",
            "fpr95_entropy",
        ]
        report.text(f"Detection of {s} by {ref}:")
        report.table(
            ["method", *keys], [[m] + [table[ref][m][s][k] for k in keys] for m in methods]
        )
    if "kfac_laplace" in methods and "map" in methods:
        report.text(_verdict(table, sets))
    return {"family": table}


def _verdict(table, sets) -> str:
    parts, ok = [], True
    for member, rows in table.items():
        for s in sets:
            before, after = (
                rows["map"][s]["auroc_entropy"],
                rows["kfac_laplace"][s]["auroc_entropy"],
            )
            ok &= after > before
            parts.append(f"{member}/{s}: {before:.3f} -> {after:.3f}")
    verdict = "raises" if ok else "does not always raise"
    return f"KFAC-LA {verdict} the entropy AUROC over MAP: " + "; ".join(parts) + "."


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: out-of-distribution study",
        "ood",
        run,
        config,
        out_dir,
        overwrite=overwrite,
        check=check,
    )


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="digits")
