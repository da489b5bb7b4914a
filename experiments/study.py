"""The main job: every study of both source documents with one config, one seed, one report.

``python -m experiments.study [--quick] [--dataset digits] [--seed 0] [--out results/<dataset>/]
[--config FILE] [--overwrite] [--quiet]`` runs the toy2d notebook study, then, on the chosen
data set (default: the bundled digits with photo patches and noise as OOD), fits the model
family once and runs the landscape, calibration, OOD and adversarial studies on it. It claims
the output folder (:mod:`experiments.claim`) and writes ``report.md`` (every figure inline with
what it shows, and the tables), ``figures/*.png``, ``metrics.json`` (strict JSON) and
``config.json`` into it; every expensive stage is cached under ``cache/`` there
(:mod:`experiments.cache`), so an interrupted run resumes with only the missing work. It shows
a line per stage, progress bars and a closing table (:mod:`experiments.progress`).
"""

from experiments import (
    adversarial,
    calibration,
    claim,
    cli,
    common,
    family,
    landscape,
    ood,
    progress,
    toy2d,
)

STUDIES = ("toy2d", "landscape", "calibration", "ood", "adversarial")


def get_config(quick: bool = False) -> dict:
    """One config for all studies: the family settings, each study's own keys, and the toy2d
    study's config under ``"toy2d"`` (without a seed of its own: ``config["seed"]`` drives the
    whole run)."""
    config = family.default_config(quick)
    for module in (landscape, calibration, ood, adversarial):
        config |= module.get_config(quick)
    toy = {k: v for k, v in toy2d.get_config(quick).items() if k != "seed"}
    return config | {"studies": list(STUDIES), "toy2d": toy}


def _digits_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("studies", "toy2d")}


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices, family) before anything runs."""
    defaults = get_config()
    common.check_config(config, defaults, choices=family.CHOICES | {"studies": STUDIES})
    if "seed" in config["toy2d"]:
        raise ValueError(
            "config['toy2d']: has its own 'seed'; remove it, config['seed'] seeds every study"
        )
    common.check_config(config["toy2d"], defaults["toy2d"], choices={"methods": toy2d.METHODS})
    if set(config["studies"]) - {"toy2d"}:
        keys = family.default_config()
        family.check({k: v for k, v in config.items() if k in keys})


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run the studies of ``config["studies"]``; returns the metrics written to metrics.json.
    Refuses an ``out_dir`` in use by another run, or holding the results (or an interrupted
    run) of a different config unless ``overwrite`` (:mod:`experiments.claim`)."""
    check(config)
    with claim.claim(out_dir, config, overwrite=overwrite):
        metrics = _run(config, out_dir)
    return metrics


def _run(config: dict, out_dir) -> dict:
    studies, stage = config["studies"], progress.current().stage
    report = common.Report(out_dir, f"bnn_jax study: {config['dataset']}")
    report.text(
        "Every figure of the two source documents, reproduced with this library: the MC "
        "dropout / BALD notebook on its 2D toy problem, and the Laplace-approximation blog post "
        "(loss landscape, calibration, out-of-distribution detection, FGSM) on "
        f"{config['dataset']}. Numbers are measured by this run (seed {config['seed']})."
    )
    metrics: dict = {}
    if "toy2d" in studies:
        with stage("toy2d"):
            metrics["toy2d"] = toy2d.run(
                config["toy2d"] | {"seed": config["seed"]}, out_dir, report
            )
    digits_studies = [s for s in studies if s != "toy2d"]
    if digits_studies:
        digits = _digits_config(config)
        for module in (landscape, calibration, ood, adversarial):
            common.check_config(
                {k: v for k, v in digits.items() if k in module.get_config()}, module.get_config()
            )
        with stage("fit family"):
            fitted = family.fit_family(digits, out_dir)
        ds = fitted.dataset
        predictions = None
        if {"calibration", "ood"} & set(studies):
            with stage("predictions"):
                inputs = {"test": ds.x_test} | ood.ood_inputs(digits, ds)
                predictions = family.predict(fitted, inputs)
        select = lambda module: {k: v for k, v in digits.items() if k in module.get_config()}
        if "landscape" in studies:
            with stage("landscape"):
                metrics["landscape"] = landscape.run(select(landscape), out_dir, report, fitted)
        if "calibration" in studies:
            with stage("calibration"):
                metrics["calibration"] = calibration.run(
                    select(calibration), out_dir, report, fitted, predictions
                )
        if "ood" in studies:
            with stage("ood"):
                metrics["ood"] = ood.run(select(ood), out_dir, report, fitted, predictions)
        if "adversarial" in studies:
            with stage("adversarial"):
                metrics["adversarial"] = adversarial.run(
                    select(adversarial), out_dir, report, fitted
                )
        metrics["methods"] = _method_summary(config, metrics)
        metrics["laplace"] = {
            m.name: {k: v for k, v in m.tuned.items() if "scale" in v} for m in fitted.members
        }
    common.write_results(out_dir, config, metrics)
    report.write()
    return metrics


def headline(config: dict, metrics: dict) -> list[dict]:
    """Rows of the closing table (``{column: value}`` each): the toy2d methods
    (:func:`experiments.toy2d.headline`), then each method of the reference member on
    ``config["dataset"]``: accuracy, NLL, ECE, the entropy AUROC per OOD set and the accuracy
    under the strongest FGSM step."""
    rows = toy2d.headline(metrics["toy2d"]) if "toy2d" in metrics else []
    for name, m in metrics.get("methods", {}).items():
        row = {"study": config["dataset"], "method": name, "accuracy": m.get("accuracy")}
        row |= {"NLL": m.get("nll"), "ECE": m.get("ece")}
        row |= {f"AUROC {s}": d["auroc_entropy"] for s, d in m.get("ood", {}).items()}
        if "fgsm" in m:
            row[f"FGSM {m['fgsm']['eps'][-1]:g} accuracy"] = m["fgsm"]["accuracy"][-1]
        rows.append(row)
    return rows


def _method_summary(config: dict, metrics: dict) -> dict:
    """``metrics["methods"][name]`` for the reference member: accuracy, NLL, Brier, ECE, MCE,
    OOD detection per set and the FGSM sweep."""
    ref, out = config["reference"], {}
    for name in config["methods"]:
        entry: dict = {}
        if "calibration" in metrics:
            scores = metrics["calibration"]["family"][ref][name]
            entry |= {k: scores[k] for k in ("accuracy", "nll", "brier", "ece", "mce")}
        if "ood" in metrics:
            entry["ood"] = {
                s: {k: v[k] for k in ("auroc_entropy", "auroc_bald", "fpr95_entropy")}
                for s, v in metrics["ood"]["family"][ref][name].items()
            }
        if "adversarial" in metrics:
            sweep = metrics["adversarial"][name]
            entry["fgsm"] = {
                k: sweep[k] for k in ("eps", "accuracy", "entropy", "nll", "ece", "bald")
            }
        out[name] = entry
    return out


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="digits", headline=headline)
