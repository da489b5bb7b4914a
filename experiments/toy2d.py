"""The notebook's 2D toy study with attacks that test something and the view it asks for last.

Data: the notebook's ``make_classification`` recipe (``bnn_jax.data.bundled.toy2d``) on
several data seeds chosen by a computed rule (:func:`select_draws`): scanning upward from
``1000 * seed``, the first ``num_data_seeds`` draws whose classes come as close as the
notebook's attacks reach, ``bim_eps <= class gap < 2 fgm_eps`` (``bundled.class_gap``; with a
larger gap no L2 attack of these radii can cross a boundary midway between the classes and
"accuracy after attack" is the clean accuracy), with at most ``max_flipped`` of the training
points label-flipped. The draws are the seeds of the intervals: training seeds change little
on this data (the research hand-over measured +-0.000-0.014), the draw changes which points
sit near the boundary.

Per method (:mod:`experiments.toy2d_methods`) and draw: clean accuracy (test and training
points), accuracy on the training points after FGM (L2, eps ``fgm_eps``) and BIM (L2,
``bim_eps``, step ``bim_step``, ``bim_steps`` iterations), both over ``sweep_eps``, and the
mean maximum probability on a circle of radius ``far_radius`` (10x the standardised data's
scale): Kristiadi et al. (2020) show that a Laplace posterior, even over the last layer only,
removes the asymptotic overconfidence of ReLU networks. Verdicts (:func:`verdicts`) come from
intervals over the draws (``experiments.stats``).

Run ``python -m experiments.toy2d [--quick] [--seed 0] [--out results/toy2d]``.
"""

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from bnn_jax import calibration, data
from bnn_jax.data import bundled
from experiments import cli, common, progress, stats, toy2d_report
from experiments import toy2d_methods as toy_methods
from experiments.cache import Cache

METHODS = toy_methods.METHODS
DEFAULT_METHODS = (
    "map",
    "mc_dropout",
    "concrete_dropout",
    "concrete_dropout_low",
    "kfac_laplace",
    "last_layer_laplace",
    "gp",
)
"""Default: every method of the notebook's closing view; ``ensemble``, ``diag_laplace`` and
``partition_laplace`` on request."""
QUICK_METHODS = ("map", "concrete_dropout", "last_layer_laplace")
SCAN_LIMIT = 1000
"""Data seeds scanned for draws satisfying the rule before giving up."""
NOTEBOOK = {
    "max_entropy": 0.693145,
    "max_bald": 0.0270712,
    "bim_accuracy": 0.94,
    "gp_objective_before": 18.913977,
    "gp_objective_after": 8.057917,
    "cells": {"bald": 20, "built": 22, "trained": 23},
}
"""The notebook's printed numbers (its Concrete Dropout network and its GPy classifier) and
the execution counts of the cells that computed its entropy and BALD arrays, built the
network and trained it."""


def get_config(quick: bool = False) -> dict:
    """The notebook's settings (500 epochs of SGD 0.01 with batch 32, 50 MC samples, FGM 0.5 and
    BIM 0.3 / 0.1 x 10 in L2) on 3 data draws, on a 60 x 60 grid with a margin of 5 (the
    notebook's is 100 x 100: a coarser grid only coarsens the maps, and the grid fields of the
    sampled methods are most of the cost). ``quick``: one draw (its verdicts are
    "inconclusive"), three methods (MAP, Concrete Dropout, last-layer Laplace; compiling
    each method is most of a quick run), fewer epochs, samples, radii and grid points."""
    return {
        "seed": 0,
        "num_train": 100,
        "num_data_seeds": 1 if quick else 3,
        "max_flipped": 0.05,
        "widths": [500, 500],
        "learning_rate": 0.01,
        "epochs": 100 if quick else 500,
        "batch_size": 32,
        "weight_regularizer": 1e-3,
        "dropout_regularizer": 1.0,
        "dropout_regularizer_low": 1e-5,
        "dropout_rate": 0.1,
        "num_members": 5,
        "num_samples": 20 if quick else 50,
        "attack_samples": 10 if quick else 20,
        "marglik_steps": 100,
        "grid_size": 30 if quick else 60,
        "draw_grid_size": 25 if quick else 40,
        "margin": 5.0,
        "far_radius": 10.0,
        "fgm_eps": 0.5,
        "bim_eps": 0.3,
        "bim_step": 0.1,
        "bim_steps": 10,
        "sweep_eps": [0.0, 0.3, 0.5, 1.0]
        if quick
        else [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5],
        "methods": list(QUICK_METHODS if quick else DEFAULT_METHODS),
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices, attack radii) before anything runs."""
    common.check_config(config, get_config(), choices={"methods": METHODS})
    if not 0 < config["bim_step"] <= config["bim_eps"] < 2 * config["fgm_eps"]:
        raise ValueError(
            "config['bim_step'], ['bim_eps'], ['fgm_eps']: expected 0 < bim_step <= bim_eps < "
            f"2 fgm_eps, got {config['bim_step']}, {config['bim_eps']}, {config['fgm_eps']}"
        )
    for key in ("num_data_seeds", "num_samples", "attack_samples", "epochs"):
        if not (isinstance(config[key], int) and config[key] >= 1):
            raise ValueError(f"config[{key!r}]: expected an integer >= 1, got {config[key]!r}")
    if not 0 <= config["max_flipped"] < 1:
        raise ValueError(
            f"config['max_flipped']: expected a fraction in [0, 1), got {config['max_flipped']}"
        )
    if min(config["sweep_eps"]) < 0:
        raise ValueError(f"config['sweep_eps']: expected values >= 0, got {config['sweep_eps']}")


class Draw(NamedTuple):
    """A data draw: its seed, class gap and number of label-flipped training points."""

    seed: int
    gap: float
    flipped: int


def select_draws(config: dict) -> tuple[list[Draw], int]:
    """The first ``num_data_seeds`` draws from ``1000 * seed`` upward with ``bim_eps <= gap <
    2 fgm_eps`` and at most ``max_flipped * num_train`` flipped points; also how many seeds
    were scanned. ``ValueError`` if ``SCAN_LIMIT`` seeds hold too few."""
    low, high = config["bim_eps"], 2 * config["fgm_eps"]
    found, start = [], 1000 * config["seed"]
    for seed in range(start, start + SCAN_LIMIT):
        (x, y), _, _ = bundled.toy2d(seed, num_train=config["num_train"])
        gap, flipped = bundled.class_gap(x, y)
        if low <= gap < high and flipped <= config["max_flipped"] * len(x):
            found.append(Draw(seed, gap, flipped))
            if len(found) == config["num_data_seeds"]:
                return found, seed - start + 1
    raise ValueError(
        f"config['num_data_seeds']: only {len(found)} of seeds {start}..{start + SCAN_LIMIT - 1} "
        f"have a class gap in [{low}, {high}) with at most {config['max_flipped']:.0%} flipped"
    )


def _grid(x: np.ndarray, size: int, margin: float):
    axes = [np.linspace(x[:, i].min() - margin, x[:, i].max() + margin, size) for i in (0, 1)]
    xx, yy = np.meshgrid(*axes)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def _square(half: float, size: int):
    xx, yy = np.meshgrid(*(2 * [np.linspace(-half, half, size)]))
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def grids(config: dict, ds) -> dict:
    """``name -> (xx, yy, points)``: the notebook's grid (margin ``margin``), the draws' grid,
    a zoom on the data (margin 0.5: attack arrows of length <= 0.5 stay readable) and a wide
    square around the far circle (``draw_grid_size`` points a side)."""
    size = config["grid_size"]
    return {
        "grid": _grid(ds.x_train, size, config["margin"]),
        "draw_grid": _grid(ds.x_train, config["draw_grid_size"], config["margin"]),
        "zoom_grid": _grid(ds.x_train, size, 0.5),
        "wide_grid": _square(1.2 * config["far_radius"], config["draw_grid_size"]),
    }


def _arrays(config: dict, ds, grid_points: dict) -> dict:
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    circle = config["far_radius"] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    f32 = lambda v: np.asarray(v, np.float32)
    return {
        "x_train": ds.x_train,
        "y_train": ds.y_train,
        "x_test": ds.x_test,
        "circle": f32(circle),
        **{k: f32(config[k]) for k in ("fgm_eps", "bim_eps", "bim_step", "sweep_eps")},
        **{name: points for name, (_, _, points) in grid_points.items()},
    }


def notebook_agreement(grid, x_train, entropy, bald, *, near=0.5, far=2.0) -> dict:
    """The notebook's observations as numbers: BALD <= entropy everywhere; mean BALD near the
    data (within ``near`` of a training point), far from it on uncertain regions (entropy above
    half its maximum: decision boundaries) and far from it on confident regions."""
    distance = np.min(np.linalg.norm(grid[:, None] - x_train[None], axis=-1), axis=1)
    boundary = entropy > 0.5 * np.log(2)
    pick = lambda mask: float(np.mean(bald[mask])) if mask.any() else float("nan")
    out = {
        "max_bald_minus_entropy": float(np.max(bald - entropy)),
        "max_entropy": float(entropy.max()),
        "max_bald": float(bald.max()),
        "bald_near_data": pick(distance < near),
        "bald_far_boundary": pick((distance > far) & boundary),
        "bald_far_confident": pick((distance > far) & ~boundary),
    }
    out["bald_le_entropy"] = out["max_bald_minus_entropy"] <= 1e-5
    out["bald_high_only_far_on_boundaries"] = bool(
        out["bald_far_boundary"] > out["bald_near_data"]
        and out["bald_far_boundary"] > out["bald_far_confident"]
    )
    return out


def per_draw_scores(f: dict, ds, grid_points: np.ndarray) -> dict:
    """One method on one draw: the numbers that go into the intervals."""
    acc = lambda lp, y: float(calibration.accuracy(np.asarray(lp), np.asarray(y)))
    return {
        "accuracy": acc(f["test_log_probs"], ds.y_test),
        "nll": float(calibration.nll(np.asarray(f["test_log_probs"]), ds.y_test)),
        "train_accuracy": acc(f["train_log_probs"], ds.y_train),
        "fgm_accuracy": acc(f["fgm_log_probs"], ds.y_train),
        "bim_accuracy": acc(f["bim_log_probs"], ds.y_train),
        "far_max_prob": float(np.mean(f["circle_max_prob"])),
        **notebook_agreement(grid_points, ds.x_train, f["entropy"], f["bald"]),
    }


INTERVAL_KEYS = (
    "accuracy",
    "nll",
    "train_accuracy",
    "fgm_accuracy",
    "bim_accuracy",
    "far_max_prob",
    "max_entropy",
    "max_bald",
)


def verdicts(per_draw: dict) -> list[dict]:
    """Claims judged on intervals over the draws (``stats.verdict``): per method, that FGM and
    BIM at the notebook's eps lower the accuracy on the training points (paired: clean minus
    attacked > 0), and per Laplace method and the GP, that the far-field maximum probability
    lies below MAP's (paired: method minus MAP < 0; Kristiadi et al. 2020 for Laplace), next to
    whether its test NLL lies above MAP's (a method less confident everywhere lowers the
    far-field confidence without knowing where the data are)."""
    out = []
    for name, scores in per_draw.items():
        for attack in ("fgm", "bim"):
            drop = stats.paired(scores[f"{attack}_accuracy"], scores["train_accuracy"])
            claim = f"{attack.upper()} lowers {name}'s accuracy"
            out.append(
                {"method": name, "kind": attack} | stats.verdict(claim, drop, above=0.0).as_dict()
            )
    if "map" in per_draw:
        for name in per_draw:
            if name in toy_methods.LAPLACE or name == "gp":
                diff = stats.paired(per_draw["map"]["far_max_prob"], per_draw[name]["far_max_prob"])
                claim = f"{name}'s far-field confidence is below MAP's"
                out.append(
                    {"method": name, "kind": "far_field"}
                    | stats.verdict(claim, diff, below=0.0).as_dict()
                )
                worse = stats.paired(per_draw["map"]["nll"], per_draw[name]["nll"])
                claim = f"{name}'s test NLL is above MAP's (less confident on the data too)"
                out.append(
                    {"method": name, "kind": "in_domain_nll"}
                    | stats.verdict(claim, worse, above=0.0).as_dict()
                )
    return out


def _stage(ctx, name, ds, draw: Draw, key, arrays, display: bool) -> dict:
    fitted = ctx.fit(name, ds, draw.seed, key)
    fields = toy_methods.measure(
        fitted, arrays, bim_steps=ctx.config["bim_steps"], display=display, x64=name == "gp"
    )
    return {"fields": fields, "facts": fitted.facts}


def run(config: dict, out_dir, report: common.Report) -> dict:
    """Fit every method on every draw, write the figures and prose into ``report``, return the
    metrics (per draw, intervals, verdicts)."""
    check(config)
    out_dir = Path(out_dir)
    draws, scanned = select_draws(config)
    ctx = toy_methods.Context(config, out_dir / "cache")
    cache, key = Cache(out_dir / "cache"), jax.random.key(config["seed"])
    settings = {k: v for k, v in config.items() if k not in ("methods", "num_data_seeds")}
    names = list(config["methods"])
    per_draw = {n: {} for n in names}
    display = {}
    for index, draw in enumerate(draws):
        ds = data.load("toy2d", seed=draw.seed, num_train=config["num_train"])
        grid_points = grids(config, ds)
        arrays = _arrays(config, ds, grid_points)
        draw_key = jax.random.fold_in(key, draw.seed)
        bar = progress.current().bar(names, desc=f"toy2d draw {index + 1}/{len(draws)}")
        for name in bar:
            found = cache.stage(
                f"toy2d-s{draw.seed}-{name}",
                settings | {"data_seed": draw.seed, "method": name, "display": index == 0},
                functools.partial(_stage, ctx, name, ds, draw, draw_key, arrays, index == 0),
            )
            scores = per_draw_scores(found["fields"], ds, arrays["grid"])
            scores |= {
                k: found["fields"][k].tolist() for k in ("sweep_fgm_accuracy", "sweep_bim_accuracy")
            }
            for k, v in scores.items():
                per_draw[name].setdefault(k, []).append(v)
            if index == 0:
                display[name] = found
        if index == 0:
            shown = (ds, grid_points)
    metrics = {
        "draws": [d._asdict() for d in draws],
        "seeds_scanned": scanned,
        "prior_prec": toy_methods.prior_prec(config),
        "methods": {},
        "verdicts": verdicts(per_draw),
    }
    for name in names:
        scores = per_draw[name]
        entry = {k: stats.interval(scores[k]).as_dict() for k in INTERVAL_KEYS}
        for k in ("sweep_fgm_accuracy", "sweep_bim_accuracy"):
            values = np.asarray(scores[k])
            entry[k] = [stats.interval(values[:, i]).as_dict() for i in range(values.shape[1])]
        entry["per_draw"] = scores
        entry["facts"] = _facts(display[name].get("facts", {}))
        metrics["methods"][name] = entry
    toy2d_report.write(report, config, draws, scanned, shown, display, metrics)
    return metrics


def _facts(tree):
    """Cached facts as JSON values (arrays as lists)."""
    if isinstance(tree, dict):
        return {k: _facts(v) for k, v in tree.items()}
    return np.asarray(tree).tolist()


def headline(metrics: dict) -> list[dict]:
    """Rows of the closing table, one per method: mean test accuracy and NLL, accuracy on the
    training points after BIM and FGM (notebook's eps), far-field maximum probability, and for
    Laplace and the GP the far-field verdict against MAP."""
    far = {v["method"]: v["outcome"] for v in metrics["verdicts"] if v["kind"] == "far_field"}
    rows = []
    for name, m in metrics["methods"].items():
        row = {"study": "toy2d", "method": name, "accuracy": m["accuracy"]["mean"]}
        row |= {"NLL": m["nll"]["mean"], "BIM accuracy": m["bim_accuracy"]["mean"]}
        row |= {"FGM accuracy": m["fgm_accuracy"]["mean"], "far max p": m["far_max_prob"]["mean"]}
        row["far p < MAP"] = far.get(name, "")
        rows.append(row)
    return rows


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: the 2D toy study", "toy2d", run, config, out_dir, overwrite=overwrite, check=check
    )


if __name__ == "__main__":
    cli.run(
        __doc__.splitlines()[0],
        get_config,
        main,
        default_dataset="toy2d",
        headline=lambda config, metrics: headline(metrics["toy2d"]),
    )
