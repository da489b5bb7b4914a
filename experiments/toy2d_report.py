"""Figures and prose of the toy2d study (see :mod:`experiments.toy2d`): every sentence that
states a result is computed from the run's numbers."""

import numpy as np

from bnn_jax import plotting
from bnn_jax.data import bundled
from bnn_jax.plotting import toy2d as toy_plots
from experiments.common import Report
from experiments.stats import Interval

ARROWS = 20
"""Attack arrows per figure (the notebook drew 20)."""


def _iv(d: dict, digits: int = 3) -> str:
    return Interval(d["mean"], d["low"], d["high"], d["n"]).format(digits)


def _range(values, digits: int = 3) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def write(report: Report, config, draws, scanned, shown, display, metrics) -> None:
    """The whole toy2d section: data, per-method maps and attacks, the tables, the eps sweep,
    the far-field view, the dropout rates and the notebook's numbers next to this run's."""
    ds, grids = shown
    introduction(report, config, draws, scanned, metrics)
    for name, found in display.items():
        method_figures(report, name, config, ds, grids, found["fields"], metrics)
    attack_summary(report, config, metrics)
    far_field(report, config, ds, grids, display, metrics)
    other_facts(report, config, metrics)
    notebook_numbers(report, metrics)
    bald_pattern(report, metrics)


def introduction(report: Report, config, draws, scanned, metrics) -> None:
    report.section("The 2D toy problem (the notebook)")
    low, high = config["bim_eps"], 2 * config["fgm_eps"]
    listed = ", ".join(f"{d.seed} (gap {d.gap:.3f}, {d.flipped} flipped)" for d in draws)
    report.text(
        f"{config['num_train']} training points per draw from the notebook's recipe. Data "
        f"seeds are chosen by a rule, not by hand: scanning upward from {1000 * config['seed']}, "
        f"the first {len(draws)} draws whose class gap (the smallest distance between the "
        "classes after removing label-flipped points) lies in [BIM eps, 2 x FGM eps) = "
        f"[{low:g}, {high:g}) with at most {config['max_flipped']:.0%} of the points flipped "
        f"({scanned} seeds scanned): {listed}. With a gap of 2 eps or more no attack of radius "
        "eps reaches a boundary midway between the classes. Intervals are 95% t-intervals over "
        f"these {len(draws)} draws (the draw, not the training seed, decides which points lie "
        "near the boundary). Attacks (L2) target the training points with the predicted class "
        "as label, as the notebook's cleverhans calls did, against each method's predictive. "
        f"MAP and MC dropout use the notebook's weight decay {config['weight_regularizer']:g} as "
        f"a Gaussian prior of precision {metrics['prior_prec']:g} (2 N x weight decay); the "
        "Laplace posteriors start from that prior. Entropy and BALD in nats (maximum log 2 = "
        "0.693)."
    )
    report.figure(
        "toy2d_data",
        toy_plots.data_draws(
            [
                (ds_x, ds_y, f"seed {d.seed}: gap {d.gap:.2f}, {d.flipped} flipped")
                for d, (ds_x, ds_y) in zip(draws, _training_points(draws, config), strict=True)
            ]
        ),
        "The training points of each draw (the notebook's first scatter), standardised; "
        f"class gaps {_range([d.gap for d in draws])}.",
    )


def _training_points(draws, config):
    return [bundled.toy2d(d.seed, num_train=config["num_train"])[0] for d in draws]


def method_figures(report: Report, name, config, ds, grids, f, metrics) -> None:
    """The notebook's figures of one method on the first draw: maps with quiver, four draws
    (stochastic methods only) and the FGM and BIM arrows on a zoom of the data."""
    xx, yy, _ = grids["grid"]
    m = metrics["methods"][name]
    first = {k: v[0] for k, v in m["per_draw"].items()}
    report.section(name.replace("_", " "), level=3)
    report.figure(
        f"toy2d_{name}_maps",
        plotting.uncertainty_maps(
            xx,
            yy,
            ds.x_train,
            ds.y_train,
            f["log_probs"],
            entropy=f["entropy"],
            bald=f["bald"],
            expected_entropy=f["expected_entropy"],
            input_grad=f["input_grad"],
            title=name,
        ),
        f"{name}, first draw: decision regions, predictive entropy (max {first['max_entropy']:.3f}"
        f"), mean of entropy, BALD (max {first['max_bald']:.4f}), p(class 1) and the input "
        "gradient of the predicted-class cross-entropy (quiver).",
    )
    if "draws" in f:
        dx, dy, _ = grids["draw_grid"]
        disagree = np.mean(np.argmax(f["draws"], -1) != np.argmax(f["draws"][:1], -1))
        report.figure(
            f"toy2d_{name}_draws",
            plotting.posterior_draws(
                dx, dy, ds.x_train, ds.y_train, f["draws"], title=f"{name}: 4 posterior draws"
            ),
            f"{name}: decision regions of four posterior draws; draws 2-4 predict another "
            f"class than draw 1 on {disagree:.1%} of the grid.",
        )
    zx, zy, _ = grids["zoom_grid"]
    for attack, eps in (
        ("fgm", f"eps {config['fgm_eps']:g}"),
        (
            "bim",
            f"eps {config['bim_eps']:g}, step {config['bim_step']:g}, {config['bim_steps']} steps",
        ),
    ):
        moved = np.sum(
            np.argmax(f[f"{attack}_log_probs"], -1) != np.argmax(f["train_log_probs"], -1)
        )
        report.figure(
            f"toy2d_{name}_{attack}",
            plotting.adversarial_arrows(
                zx,
                zy,
                ds.x_train,
                ds.y_train,
                f["zoom_log_probs"],
                f[attack],
                accuracy=first[f"{attack}_accuracy"],
                num_arrows=ARROWS,
                title=f"{name}: {attack.upper()}",
            ),
            f"{name}, first draw: {attack.upper()} (L2, {eps}); arrows for the first {ARROWS} "
            f"points; the attack changes {moved} of {len(ds.x_train)} predictions; accuracy "
            f"{first['train_accuracy']:.2f} -> {first[f'{attack}_accuracy']:.2f}.",
        )


def attack_summary(report: Report, config, metrics) -> None:
    report.section("Accuracy before and after the attacks", level=3)
    methods = metrics["methods"]
    report.table(
        [
            "method",
            "test acc",
            "train acc (clean)",
            f"after FGM {config['fgm_eps']:g}",
            f"after BIM {config['bim_eps']:g}",
            "test NLL",
        ],
        [
            [
                n,
                _iv(m["accuracy"]),
                _iv(m["train_accuracy"]),
                _iv(m["fgm_accuracy"]),
                _iv(m["bim_accuracy"]),
                _iv(m["nll"]),
            ]
            for n, m in methods.items()
        ],
    )
    judged = [v for v in metrics["verdicts"] if v["kind"] in ("fgm", "bim")]
    by = {
        o: [f"{v['method']} ({v['kind'].upper()})" for v in judged if v["outcome"] == o]
        for o in ("held", "not held", "inconclusive")
    }
    report.text(
        "Does each attack lower the accuracy (paired over draws, clean minus attacked > 0)? "
        + "; ".join(f"{o}: {', '.join(v) or 'none'}" for o, v in by.items())
        + "."
    )
    eps = np.asarray(config["sweep_eps"])
    panels = {}
    titles = {
        "fgm": "FGM",
        "bim": f"BIM (step = eps/{config['bim_eps'] / config['bim_step']:g})",
    }
    breaks = {}
    for attack, title in titles.items():
        panels[title] = {}
        for n, m in methods.items():
            values = np.asarray(m["per_draw"][f"sweep_{attack}_accuracy"])  # [draws, eps]
            mean = values.mean(axis=0)
            panels[title][n] = np.stack([mean, values.min(axis=0), values.max(axis=0)])
            below = np.flatnonzero(mean < mean[0] - 0.05)
            where = f"{eps[below[0]]:g}" if below.size else f"beyond {eps[-1]:g}"
            breaks.setdefault(attack, []).append(f"{n} {where}")
    marks = {titles["fgm"]: config["fgm_eps"], titles["bim"]: config["bim_eps"]}
    report.figure(
        "toy2d_eps_sweep",
        toy_plots.sweep_bands(eps, panels, marks=marks),
        "Accuracy on the training points against the attack radius (mean over the draws, "
        "band: lowest to highest draw); dashed: the notebook's eps. Smallest radius at which "
        "the mean accuracy falls more than 0.05 below the clean one, FGM: "
        + ", ".join(breaks["fgm"])
        + "; BIM: "
        + ", ".join(breaks["bim"])
        + ".",
    )


def far_field(report: Report, config, ds, grids, display, metrics) -> None:
    report.section("All methods side by side; confidence far from the data", level=3)
    methods = metrics["methods"]
    xx, yy, _ = grids["grid"]
    columns = {
        title: {n: d["fields"][key] for n, d in display.items()}
        for title, key in (("Predictive entropy", "entropy"), ("BALD", "bald"))
    }
    report.figure(
        "toy2d_sheet",
        plotting.method_sheet(xx, yy, ds.x_train, ds.y_train, columns),
        "Predictive entropy and BALD of every method on the first draw, one colour scale per "
        "column; largest BALD: "
        + ", ".join(f"{n} {methods[n]['per_draw']['max_bald'][0]:.3f}" for n in display)
        + ".",
    )
    wx, wy, _ = grids["wide_grid"]
    r = config["far_radius"]
    fields = {n: d["fields"]["wide_max_prob"] for n, d in display.items()}
    report.figure(
        "toy2d_far_field",
        toy_plots.confidence_maps(wx, wy, ds.x_train, ds.y_train, fields, radius=r),
        f"Maximum predicted probability on [-{1.2 * r:g}, {1.2 * r:g}]^2 (first draw); red: the "
        f"circle of radius {r:g} (10x the standardised data's scale). Mean on the circle: "
        + ", ".join(f"{n} {methods[n]['per_draw']['far_max_prob'][0]:.3f}" for n in fields)
        + ".",
    )
    report.table(
        ["method", f"mean max p on the circle r = {r:g}"],
        [[n, _iv(m["far_max_prob"])] for n, m in methods.items()],
    )
    judged = [v for v in metrics["verdicts"] if v["kind"] == "far_field"]
    if judged:
        report.text(
            "Kristiadi et al. (2020): a Laplace posterior, even over the last layer only, "
            "removes a ReLU network's asymptotic overconfidence. Far-field maximum probability "
            "minus MAP's (paired over draws): "
            + "; ".join(f"{v['method']} {_iv(v['interval'])}: {v['outcome']}" for v in judged)
            + "."
        )
    nll = [v for v in metrics["verdicts"] if v["kind"] == "in_domain_nll"]
    worse = [v["method"] for v in nll if v["outcome"] == "held"]
    unclear = [v["method"] for v in nll if v["outcome"] == "inconclusive"]
    if worse:
        reading = (
            f"Higher than MAP's for {', '.join(worse)}: there part of the lower far-field "
            "confidence is underconfidence everywhere, not knowledge of where the data are."
        )
    elif unclear:
        reading = (
            f"The intervals of {', '.join(unclear)} straddle 0: the draws do not tell whether "
            "their lower far-field confidence comes with lower confidence on the data."
        )
    else:
        reading = "No method's NLL lies above MAP's: the lower far-field confidence is not "
        reading += "underconfidence on the data."
    if nll:
        report.text(
            "In-domain test NLL minus MAP's (paired over draws): "
            + "; ".join(f"{v['method']} {_iv(v['interval'])}" for v in nll)
            + ". "
            + reading
        )


def other_facts(report: Report, config, metrics) -> None:
    methods = metrics["methods"]
    laplace = [n for n, m in methods.items() if "prior_prec" in m["facts"]]
    if laplace:
        report.text(
            "Laplace prior precision, training prior -> marginal likelihood (first draw): "
            + ", ".join(
                f"{n} {methods[n]['facts']['prior_prec_training']:.3g} -> "
                f"{methods[n]['facts']['prior_prec']:.3g}"
                for n in laplace
            )
            + "."
        )
    rates = {n: methods[n]["facts"]["rates"] for n in methods if "rates" in methods[n]["facts"]}
    if rates:
        regs = {
            "concrete_dropout": config["dropout_regularizer"],
            "concrete_dropout_low": config["dropout_regularizer_low"],
        }
        labels = {f"{n} (dropout_regularizer {regs[n]:g})": v for n, v in rates.items()}
        ends = "; ".join(
            f"{n}: " + ", ".join(f"{k} {v[0]:.3f} -> {v[-1]:.3f}" for k, v in r.items())
            for n, r in rates.items()
        )
        report.figure(
            "toy2d_dropout_rates",
            toy_plots.rate_curves(labels),
            f"Learned Concrete Dropout rates over the epochs (first draw): {ends}.",
        )
    if "gp" in methods:
        g = methods["gp"]["facts"]
        report.text(
            f"GP (first draw): negative log evidence {g['objective_before']:.2f} -> "
            f"{g['objective_after']:.2f}; "
            + ", ".join(f"{k} {v:.3g}" for k, v in g["hyperparameters"].items())
            + "."
        )
    report.figure(
        "toy2d_sigmoid_entropy",
        plotting.sigmoid_entropy(),
        "Probability and entropy of a two-class prediction against the logit difference.",
    )


def notebook_numbers(report: Report, metrics) -> None:
    """The notebook's printed numbers next to this run's, with the computed reasons."""
    from experiments.toy2d import NOTEBOOK

    report.section("The notebook's numbers and this run's", level=3)
    methods = metrics["methods"]
    rows, notes = [], []
    if "concrete_dropout" in methods:
        cd = methods["concrete_dropout"]
        per = cd["per_draw"]
        ratio = [b / e for b, e in zip(per["max_bald"], per["max_entropy"], strict=True)]
        nb_ratio = NOTEBOOK["max_bald"] / NOTEBOOK["max_entropy"]
        rows += [
            [
                "max entropy (Concrete Dropout, grid)",
                f"{NOTEBOOK['max_entropy']:.3f}",
                _range(per["max_entropy"]),
            ],
            ["max BALD", f"{NOTEBOOK['max_bald']:.4f}", _range(per["max_bald"], 4)],
            ["max BALD / max entropy", f"{nb_ratio:.3f}", _range(ratio)],
            [
                "accuracy after BIM",
                f"{NOTEBOOK['bim_accuracy']:.2f}",
                _range(per["bim_accuracy"], 2),
            ],
        ]
        cells = NOTEBOOK["cells"]
        side = "above" if min(ratio) > nb_ratio else "below" if max(ratio) < nb_ratio else "around"
        note = (
            f"The BALD/entropy ratio here is {side} the notebook's {nb_ratio:.3f} "
            f"({_range(ratio)} over the draws). The notebook printed its numbers from arrays "
            f"computed in cell In [{cells['bald']}], whose execution count is below those of "
            f"the cells that built (In [{cells['built']}]) and trained (In [{cells['trained']}]) "
            "the Concrete Dropout network it shows: they describe a network the notebook no "
            "longer shows, so they are not a reference for this one."
        )
        notes.append(note)
        bim = per["bim_accuracy"]
        inside = min(bim) <= NOTEBOOK["bim_accuracy"] <= max(bim)
        order = sorted(zip(metrics_gaps(metrics), bim, strict=True))
        notes.append(
            f"Accuracy after BIM: the notebook's {NOTEBOOK['bim_accuracy']:.2f} is "
            f"{'within' if inside else 'outside'} the range over this run's draws "
            f"({_range(bim, 2)}; per draw, gap -> accuracy: "
            + ", ".join(f"{g:.3f} -> {a:.2f}" for g, a in order)
            + "). The notebook's draw is unknown (make_classification without a seed), and the "
            "accuracy after an attack of fixed radius depends on how many points lie near the "
            "boundary, which changes from draw to draw."
        )
    if "gp" in methods:
        before = methods["gp"]["facts"]["objective_before"]
        after = methods["gp"]["facts"]["objective_after"]
        rows.append(
            [
                "GP objective before -> after",
                f"{NOTEBOOK['gp_objective_before']:.1f} -> {NOTEBOOK['gp_objective_after']:.2f}",
                f"{before:.1f} -> {after:.2f}",
            ]
        )
        notes.append(
            f"GP: both runs start from the arc-sine kernel's unit hyperparameters (GPy's MLP "
            f"kernel defaults); the negative log evidence is of each run's own 100 points, so "
            f"it differs with the draw: here {before:.1f} -> {after:.2f} (first draw), a drop "
            f"by {before / after:.2f}x against the notebook's "
            f"{NOTEBOOK['gp_objective_before'] / NOTEBOOK['gp_objective_after']:.2f}x."
        )
    if rows:
        report.table(["quantity", "notebook", "this run (over draws)"], rows)
        report.text(*notes)


def _mean(values) -> str:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.mean(finite):.3f}" if finite else "no grid point"


def bald_pattern(report: Report, metrics) -> None:
    """The notebook's observations on BALD (BALD <= entropy; BALD higher on uncertain regions
    far from the data than near it) per method, over the draws."""
    methods = metrics["methods"]
    rows = [
        [n, f"{max(m['per_draw']['max_bald_minus_entropy']):.1e}"]
        + [
            _mean(m["per_draw"][k])
            for k in ("bald_near_data", "bald_far_boundary", "bald_far_confident")
        ]
        for n, m in methods.items()
    ]
    report.table(
        [
            "method",
            "max BALD - entropy (grid, all draws)",
            "mean BALD within 0.5 of the data",
            "far (> 2) and uncertain (H > log 2 / 2)",
            "far (> 2) and confident",
        ],
        rows,
    )
    holds = lambda key: [n for n, m in methods.items() if all(m["per_draw"][key])]
    bounded, pattern = holds("bald_le_entropy"), holds("bald_high_only_far_on_boundaries")
    others = lambda chosen: ", ".join(n for n in methods if n not in chosen) or "none"
    report.text(
        "The notebook found BALD <= entropy everywhere and BALD high far from the data but low "
        "on the boundary near it. BALD <= entropy (to 1e-5 nats) on every grid point of every "
        f"draw: {', '.join(bounded) or 'none'}; not: {others(bounded)}. Mean BALD on uncertain "
        "regions far from the data above both the mean within 0.5 of the data and the mean on "
        f"confident regions far from it, on every draw: {', '.join(pattern) or 'none'}; not: "
        f"{others(pattern)}."
    )


def metrics_gaps(metrics) -> list[float]:
    return [d["gap"] for d in metrics["draws"]]
