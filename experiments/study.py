"""The main job: every study of both source documents with one config and one report.

``python -m experiments.study [--quick] [--dataset mnist1d] [--seed 0] [--out results/<dataset>/]
[--config FILE] [--overwrite] [--quiet]`` runs the toy2d notebook study, then fits the model
family on MNIST-1D over ``num_seeds`` seeds of the whole pipeline (:mod:`experiments.family`:
a real MAP, every Laplace recipe side by side with its diagnostics, MC and Concrete Dropout, a
deep ensemble, temperature scaling) and runs the landscape, calibration, OOD and adversarial
studies on it. The report opens with the claims of the two documents and the issue's targets
as verdicts computed from 95% intervals over the seeds (held / not held / inconclusive), then
the posterior diagnostics, then every study with its figures. The job claims the output folder
(:mod:`experiments.claim`), writes ``report.md``, ``figures/*.png``, ``metrics.json`` and
``config.json`` and caches every expensive stage under ``cache/``; it shows a line per stage,
progress bars and, at the end, the headline table with the verdicts and the report's path.
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
    posterior_shape,
    progress,
    stats,
    structures,
    toy2d,
    verdicts,
)

STUDIES = (
    "toy2d",
    "structures",
    "landscape",
    "posterior_shape",
    "calibration",
    "ood",
    "adversarial",
)
FAMILY_STUDIES = (
    ("landscape", landscape),
    ("posterior_shape", posterior_shape),
    ("calibration", calibration),
    ("ood", ood),
    ("adversarial", adversarial),
)
"""The studies that read the fitted family, in report order."""


def get_config(quick: bool = False) -> dict:
    """One config for all studies: the family settings, the keys of the landscape, structures and
    posterior-shape studies, and the toy2d study's config under ``"toy2d"`` (without a seed of
    its own: ``config["seed"]`` drives the whole run)."""
    config = family.default_config(quick) | landscape.get_config(quick)
    config |= structures.get_config(quick) | posterior_shape.get_config(quick)
    toy = {k: v for k, v in toy2d.get_config(quick).items() if k != "seed"}
    return config | {"studies": list(STUDIES), "toy2d": toy}


def _family_config(config: dict) -> dict:
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
    if set(config["studies"]) - {"toy2d", "structures"}:
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
    metrics: dict = {}
    if "toy2d" in studies:
        with stage("toy2d"):
            metrics["toy2d"] = toy2d.run(
                config["toy2d"] | {"seed": config["seed"]}, out_dir, report
            )
    settings = _family_config(config)
    select = lambda module: {k: v for k, v in settings.items() if k in module.get_config()}
    if "structures" in studies:
        with stage("structures"):
            metrics["structures"] = structures.run(select(structures), out_dir, report)
    if set(studies) & {name for name, _ in FAMILY_STUDIES}:
        with stage("fit family"):
            fitted = family.fit_family(settings, out_dir)
        found = verdicts.claims(fitted.results, config["ood_sets"])
        metrics["claims"] = found
        metrics["diagnostics"] = _diagnostics(report, fitted)
        for name, module in FAMILY_STUDIES:
            if name in studies:
                with stage(name):
                    metrics[name] = module.run(select(module), out_dir, report, fitted)
        report.opening(*_opening(config, fitted, found))
    common.write_results(out_dir, config, metrics)
    report.write()
    return metrics


def _is_flagged(claim: dict) -> bool:
    """A claim turned "not held" by a flagged posterior (its interval may be on the claimed
    side)."""
    return claim["detail"].startswith("flagged")


def _shown_verdict(claim: dict) -> str:
    return claim["outcome"] + " (flagged)" * _is_flagged(claim)


def _opening(config: dict, fitted, found: list[dict]) -> list[str]:
    """What is reproduced and what is not: the verdicts, grouped, then the table."""
    seeds = family.seeds(config)
    by = {o: [c for c in found if c["outcome"] == o] for o in (stats.HELD, stats.NOT_HELD)}
    flagged = [c for c in by[stats.NOT_HELD] if _is_flagged(c)]
    short = lambda c: f"{c['claim']} ({c['member']}{', ' + c['method'] if c['method'] else ''})"
    lines = [
        f"The two source documents' claims, tested on {config['dataset']} over {len(seeds)} "
        f"seeds of the whole pipeline (seeds {', '.join(map(str, seeds))}; "
        f"{next(iter(fitted.results.values()))[0]['num_test']} test inputs per seed). Every "
        "verdict below was computed from a 95% interval over the seeds after the run: **held** "
        "when the whole interval is on the claimed side, **not held** when it is entirely on "
        "the other side, **inconclusive** otherwise; a Laplace posterior flagged as "
        "prior-dominated or stuck on its search grid's edge never counts as a success. A "
        "member's best Laplace recipe is chosen on the validation split (the largest ECE "
        "reduction within the accuracy target), not on the test numbers its verdicts read.",
        f"**Reproduced ({len(by[stats.HELD])}):** "
        + ("; ".join(short(c) for c in by[stats.HELD]) or "none")
        + ".",
        f"**Not reproduced ({len(by[stats.NOT_HELD])}):** "
        + ("; ".join(short(c) for c in by[stats.NOT_HELD] if c not in flagged) or "none")
        + "."
        + (
            f" Of these, {len(flagged)} had intervals on the claimed side but a flagged "
            "posterior (prior-dominated or stuck on its grid's edge; see Details): "
            + "; ".join(short(c) for c in flagged)
            + "."
            if flagged
            else ""
        )
        + f" Inconclusive: {len(found) - len(by[stats.HELD]) - len(by[stats.NOT_HELD])}.",
    ]
    rows = []
    for c in found:
        value = stats.Interval(**c["interval"]).format(3) if c["interval"] else c["detail"]
        rows.append(f"| {c['member']} | {c['claim']} | {c['method'] or '-'} | {value} | "
                    f"{_shown_verdict(c)} |")  # fmt: skip
    table = "\n".join(
        ["| member | claim | method | interval (95%) | verdict |", "|---|---|---|---|---|", *rows]
    )
    details = [f"- {c['member']}, {c['claim']}: {c['detail']}" for c in found if c["detail"]]
    return [*lines, table, "Details:\n" + "\n".join(details)]


def _diagnostics(report: common.Report, fitted) -> dict:
    """The posterior diagnostics table per member (means and ranges over seeds)."""
    report.section("Posterior diagnostics (every member, structure, recipe and seed)")
    report.text(
        "gamma = P - tau tr(Sigma) is the effective number of parameters the data determine "
        "(laplace.diagnostics); gamma/P below 0.01 marks a prior-dominated posterior, a search "
        "whose optimum stayed on an edge of its grown grid is stuck; both are flagged and never "
        "counted as a Laplace success. 'at tau0' is the posterior at the training prior (s = 1)."
    )
    out, rows = {}, []
    for member, runs in fitted.results.items():
        names = [k for k in runs[0]["tuned"] if isinstance(runs[0]["tuned"][k], dict)]
        names = [k for k in names if "gamma" in runs[0]["tuned"][k]]
        for name in names:
            per_seed = [r["tuned"][name] for r in runs]
            out.setdefault(member, {})[name] = per_seed
            span = lambda k, ds=per_seed: f"{min(d[k] for d in ds):.3g}-{max(d[k] for d in ds):.3g}"
            edges = ", ".join(
                f"{d['rounds']}/{d['scale_edge'][:1] or '-'}{d['prior_prec_edge'][:1] or '-'}"
                for d in per_seed
            )
            flagged = sum(bool(d["flag"]) for d in per_seed)
            rows.append([
                member, name.replace("_prior", " at tau0"), span("scale"), span("prior_prec"),
                span("fraction"), span("prior_share"), edges,
                f"{flagged}/{len(per_seed)}"
                + next((f" (e.g. {d['flag']})" for d in per_seed if d["flag"]), ""),
            ])  # fmt: skip
    report.table(
        ["member", "posterior", "s", "tau", "gamma/P", "prior share", "rounds/edges (s,tau)",
         "flagged"], rows,
    )  # fmt: skip
    report.text(
        "rounds/edges per seed: growths of the grid, then the final edge of s and of tau "
        "(i interior, l low, h high, - not searched)."
    )
    return out


def headline(config: dict, metrics: dict) -> list[list[dict]]:
    """The closing tables: the toy2d methods (:func:`experiments.toy2d.headline`), then the
    verdicts of the family's claims with their intervals."""
    tables = [toy2d.headline(metrics["toy2d"])] if "toy2d" in metrics else []
    rows = []
    for c in metrics.get("claims", []):
        interval = stats.Interval(**c["interval"]) if c["interval"] else None
        rows.append(
            {
                "member": c["member"],
                "claim": c["claim"].replace("target: ", "")[:70],
                "method": c["method"] or "-",
                "mean": interval.mean if interval else None,
                "95% interval": f"[{interval.low:.3f}, {interval.high:.3f}]" if interval else "-",
                "verdict": _shown_verdict(c),
            }
        )
    return [*tables, rows] if rows else tables


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d", headline=headline)
