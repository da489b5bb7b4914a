"""Out-of-distribution detection, the blog post's section 2.2: known (test) versus unknown
inputs (photo patches, noise): entropy AUROC of every method with 95% intervals over seeds, the
post's inverse ECDFs (predictive entropy against the fraction of inputs with at least that
entropy; solid OOD, dashed in-domain) across the family for MAP and the Bayesian methods, and
entropy histograms of the reference member.

Run ``python -m experiments.ood [--quick] [--out results/mnist1d-ood]``.
"""

import numpy as np

from bnn_jax import plotting
from bnn_jax.plotting import family as family_plots
from experiments import cli, common, family, verdicts


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick)


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """Detection scores with intervals for every method, member and OOD set; figures."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, sets, ref = fitted.dataset, config["ood_sets"], config["reference"]
    first = next(iter(fitted.results.values()))
    has = {member: list(runs[0]["methods"]) for member, runs in fitted.results.items()}
    report.section(f"Out-of-distribution detection on {ds.name} (blog section 2.2)")
    report.text(
        f"In-domain: {first[0]['num_test']} test inputs per seed; OOD: "
        f"{', '.join(sets)} ({config['num_ood']} inputs each, drawn per seed). The score is the "
        "predictive entropy (higher = more likely OOD); AUROC 0.5 is chance."
    )
    members = list(fitted.arrays)
    best = verdicts.best_recipe(fitted.results[ref])
    shown = [m for m in ("map", "kfac_post", best, "ensemble") if m in has[ref]]
    shown = [m for m in dict.fromkeys(shown) if all(m in names for names in has.values())]
    entropy = lambda member, m, s: fitted.arrays[member]["entropy"][m][s]
    auroc = {
        member: {
            m: {s: verdicts.stats.interval(verdicts.values(runs, m, "auroc", s)) for s in sets}
            for m in has[member]
        }
        for member, runs in fitted.results.items()
    }
    auroc_text = lambda s: "; ".join(
        f"{m} " + ", ".join(f"{auroc[k][m][s].mean:.3f}" for k in members) for m in shown
    )
    report.figure(
        "ood_inverse_ecdf_family",
        family_plots.inverse_ecdf_family(
            {m: [entropy(k, m, "test") for k in members] for m in shown},
            {s: {m: [entropy(k, m, s) for k in members] for m in shown} for s in sets},
            members=members,
            num_classes=ds.num_classes,
        ),
        "The post's inverse ECDFs across the family (first seed; one line per member): "
        "entropy against the fraction of inputs with at least that entropy. Entropy AUROC per "
        f"member ({', '.join(members)}), mean over seeds: "
        + " | ".join(f"{s}: {auroc_text(s)}" for s in sets)
        + ".",
    )
    for s in sets:
        h_in = {m: entropy(ref, m, "test") for m in shown}
        h_out = {m: entropy(ref, m, s) for m in shown}
        overlap = {m: float(np.mean(h_out[m] > np.median(h_in[m]))) for m in shown}
        report.figure(
            f"ood_histograms_{s}",
            plotting.entropy_histograms(
                h_in, h_out, num_classes=ds.num_classes, in_label="test", out_label=s
            ),
            f"Predictive entropy of {ref} (first seed) on test inputs and on {s}. Share of {s} "
            "inputs above the median test entropy: "
            + ", ".join(f"{m} {v:.2f}" for m, v in overlap.items())
            + " (0.5: no separation).",
        )
    for member in members:
        report.text(f"Entropy AUROC of **{member}** (95% intervals over seeds):")
        report.table(
            ["method", *sets],
            [[m] + [auroc[member][m][s].format(3) for s in sets] for m in has[member]],
        )
    return {
        "family": {
            member: {m: {s: v.as_dict() for s, v in row.items()} for m, row in rows.items()}
            for member, rows in auroc.items()
        }
    }


main = common.alone_main("bnn_jax: out-of-distribution study", "ood", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d")
