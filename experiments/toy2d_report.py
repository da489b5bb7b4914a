"""Figures and prose of the toy2d study (see :mod:`experiments.toy2d`)."""

from bnn_jax import plotting
from experiments.common import Report


def introduction(report: Report, config: dict, ds) -> None:
    report.section("The 2D toy problem (the notebook)")
    report.text(
        f"{len(ds.x_train)} training points from the notebook's recipe; every method is "
        f"evaluated on a {config['grid_size']}x{config['grid_size']} grid with a margin of "
        f"{config['margin']}. Entropy and BALD in nats (maximum log 2 = 0.693). Attacks target "
        "the training points with the predicted class as label; the accuracy after an attack is "
        "that of the MC predictive on the attacked points."
    )


def method_figures(report: Report, name, config, ds, grid, draw_grid, f, metrics) -> None:
    """The notebook's per-method figures: maps with quiver, four draws, FGM and BIM arrows."""
    xx, yy = grid
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
        f"{name}: decision regions, predictive entropy, mean of entropy, BALD, p(class 1) and "
        "the input gradient of the predicted-class cross-entropy (quiver).",
    )
    report.figure(
        f"toy2d_{name}_draws",
        plotting.posterior_draws(
            *draw_grid, ds.x_train, ds.y_train, f["draws"], title=f"{name}: 4 posterior draws"
        ),
        f"{name}: decision regions of four single draws from the posterior.",
    )
    labels = {
        "fgm": f"FGM (L2, eps {config['fgm_eps']}) on one posterior draw",
        "bim": f"BIM (L2, eps {config['bim_eps']}, step {config['bim_step']}, "
        f"{config['bim_steps']} iterations) on the MC predictive",
    }
    for attack, label in labels.items():
        accuracy = metrics[f"{attack}_accuracy"]
        report.figure(
            f"toy2d_{name}_{attack}",
            plotting.adversarial_arrows(
                xx,
                yy,
                ds.x_train,
                ds.y_train,
                f["log_probs"],
                f[attack],
                accuracy=accuracy,
                title=f"{name}: {attack.upper()}",
            ),
            f"{name}: {label}; arrows from clean to adversarial points; accuracy after the "
            f"attack {accuracy:.2f}.",
        )


def summary(report: Report, ds, grid, fields, metrics) -> None:
    """The side-by-side sheet, the sigmoid/entropy panel, the table and the notebook check."""
    xx, yy = grid
    names = list(fields)
    report.section("All methods side by side", level=3)
    columns = {
        "Predictive entropy": {n: fields[n]["entropy"] for n in names},
        "BALD": {n: fields[n]["bald"] for n in names},
    }
    report.figure(
        "toy2d_sheet",
        plotting.method_sheet(xx, yy, ds.x_train, ds.y_train, columns),
        "Predictive entropy and BALD of every method on one colour scale per column.",
    )
    report.figure(
        "toy2d_sigmoid_entropy",
        plotting.sigmoid_entropy(),
        "Probability and entropy of a two-class prediction against the logit: the entropy is "
        "high only where the softmax does not saturate.",
    )
    keys = [
        "accuracy",
        "nll",
        "fgm_accuracy",
        "bim_accuracy",
        "max_entropy",
        "max_bald",
        "bald_near_data",
        "bald_far_boundary",
        "bald_far_confident",
    ]
    report.table(
        [
            "method",
            "test acc",
            "test NLL",
            "acc after FGM",
            "acc after BIM",
            "max H",
            "max BALD",
            "BALD near data",
            "BALD far, boundary",
            "BALD far, confident",
        ],
        [[n] + [metrics[n][k] for k in keys] for n in names],
    )
    agree = [n for n in names if metrics[n]["bald_high_only_far_on_boundaries"]]
    bounded = all(metrics[n]["bald_le_entropy"] for n in names)
    worst = max(metrics[n]["max_bald_minus_entropy"] for n in names)
    report.text(
        "The notebook found BALD <= entropy everywhere, and BALD low near the data and high "
        "only near decision boundaries far from the data (not everywhere far from it). "
        f"BALD <= entropy (to 1e-5 nats) holds for {'every' if bounded else 'not every'} "
        f"method here (largest BALD - entropy: {worst:.2e}). The second pattern (mean BALD on "
        "uncertain regions more than 2 from the data above both the mean BALD within 0.5 of "
        "the data and on confident regions far from it) holds for: "
        f"{', '.join(agree) or 'none'}; not for: "
        f"{', '.join(n for n in names if n not in agree) or 'none'}."
    )
    for name in ("diag_laplace", "kfac_laplace"):
        if name in metrics:
            m = metrics[name]
            report.text(
                f"{name}: (N, tau) chosen on the validation split: scale {m['scale']:.3g} "
                f"(N = {m['scale'] * len(ds.x_train):.3g}), tau {m['prior_prec']:.3g}."
            )
    if "concrete_dropout" in metrics:
        rates = metrics["concrete_dropout"]["p_by_epoch"]
        report.text(
            "Learned Concrete Dropout rates, first -> last epoch: "
            + ", ".join(f"{k}: {v[0]:.3f} -> {v[-1]:.3f}" for k, v in rates.items())
            + ". With the notebook's dropout_regularizer = 1 the entropy term "
            "K (p log p + (1-p) log(1-p)) with K = 500 dominates and drives p towards 0.5."
        )
    if "gp" in metrics:
        g = metrics["gp"]
        report.text(
            f"GP: negative log evidence {g['objective_before']:.2f} -> "
            f"{g['objective_after']:.2f} by L-BFGS (the notebook's GPy run: 18.9 -> 8.06 on its "
            "own draw of the data); "
            + ", ".join(f"{k} {v:.3g}" for k, v in g["hyperparameters"].items())
            + "."
        )
