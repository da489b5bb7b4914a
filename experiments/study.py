"""The main job: every study of both source documents with one config, one report.

``python -m experiments.study [--quick] [--dataset digits] [--out results/<dataset>/]`` runs
the toy2d notebook study, then, on the chosen data set (default: the bundled digits with photo
patches and noise as OOD), fits the model family once and runs the landscape, calibration,
OOD and adversarial studies on it. It writes ``report.md`` (every figure inline with what it
shows, and the tables), ``figures/*.png``, ``metrics.json`` and ``config.json`` into the output
folder; trained models and fitted curvature are cached under ``cache/`` there, so an
interrupted run resumes.
"""

from experiments import adversarial, calibration, common, family, landscape, ood, toy2d

STUDIES = ("toy2d", "landscape", "calibration", "ood", "adversarial")


def get_config(quick: bool = False) -> dict:
    """One config for all studies: the family settings, each study's own keys, and the toy2d
    study's config under ``"toy2d"``."""
    config = family.default_config(quick)
    for module in (landscape, calibration, ood, adversarial):
        config |= module.get_config(quick)
    return config | {"studies": list(STUDIES), "toy2d": toy2d.get_config(quick)}


def _digits_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("studies", "toy2d")}


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run the studies of ``config["studies"]``; returns the metrics written to metrics.json.
    Refuses an ``out_dir`` holding the results of a different config unless ``overwrite``."""
    defaults = get_config()
    common.check_config(config, defaults, choices=family.CHOICES | {"studies": STUDIES})
    studies = config["studies"]
    if set(studies) - {"toy2d"}:
        keys = family.default_config()
        family.check({k: v for k, v in config.items() if k in keys})
    common.check_out_dir(out_dir, config, overwrite=overwrite)
    report = common.Report(out_dir, f"bnn_jax study: {config['dataset']}")
    report.text(
        "Every figure of the two source documents, reproduced with this library: the MC "
        "dropout / BALD notebook on its 2D toy problem, and the Laplace-approximation blog post "
        "(loss landscape, calibration, out-of-distribution detection, FGSM) on "
        f"{config['dataset']}. Numbers are measured by this run (seed {config['seed']})."
    )
    metrics: dict = {}
    if "toy2d" in studies:
        metrics["toy2d"] = toy2d.run(config["toy2d"], out_dir, report)
    digits_studies = [s for s in studies if s != "toy2d"]
    if digits_studies:
        digits = _digits_config(config)
        for module in (landscape, calibration, ood, adversarial):
            common.check_config(
                {k: v for k, v in digits.items() if k in module.get_config()}, module.get_config()
            )
        fitted = family.fit_family(digits, out_dir)
        ds = fitted.dataset
        predictions = None
        if {"calibration", "ood"} & set(studies):
            inputs = {"test": ds.x_test} | ood.ood_inputs(digits, ds)
            predictions = family.predict(fitted, inputs)
        select = lambda module: {k: v for k, v in digits.items() if k in module.get_config()}
        if "landscape" in studies:
            metrics["landscape"] = landscape.run(select(landscape), out_dir, report, fitted)
        if "calibration" in studies:
            metrics["calibration"] = calibration.run(
                select(calibration), out_dir, report, fitted, predictions
            )
        if "ood" in studies:
            metrics["ood"] = ood.run(select(ood), out_dir, report, fitted, predictions)
        if "adversarial" in studies:
            metrics["adversarial"] = adversarial.run(select(adversarial), out_dir, report, fitted)
        metrics["methods"] = _method_summary(config, metrics)
        metrics["laplace"] = {
            m.name: {k: v for k, v in m.tuned.items() if "scale" in v} for m in fitted.members
        }
    common.write_results(out_dir, config, metrics)
    report.write()
    return metrics


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
    common.cli(__doc__.splitlines()[0], get_config, main, default_dataset="digits")
