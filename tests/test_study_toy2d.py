"""The toy2d study: the data-draw rule, the verdicts, and ``main`` on a tiny config."""

import json
import re

import numpy as np
import pytest

from bnn_jax.data import bundled
from experiments import toy2d

TINY = {
    "methods": ["map", "concrete_dropout", "last_layer_laplace"],
    "num_data_seeds": 2,
    "epochs": 2,
    "widths": [8, 8],
    "num_samples": 3,
    "marglik_steps": 3,
    "grid_size": 8,
    "draw_grid_size": 5,
    "bim_steps": 2,
    "sweep_eps": [0.0, 0.3, 0.5],
}


def _naive_gap(x, y):
    n, x = len(x), np.asarray(x, np.float64)
    table = [[float(np.sqrt(np.sum((x[i] - x[j]) ** 2))) for j in range(n)] for i in range(n)]
    dist = lambda i, j: table[i][j]
    clean = []
    for i in range(n):
        nearest = min((j for j in range(n) if j != i), key=lambda j: dist(i, j))
        clean.append(y[nearest] == y[i])
    gaps = [
        dist(i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if y[i] != y[j] and clean[i] and clean[j]
    ]
    return min(gaps), n - sum(clean)


@pytest.mark.parametrize("seed", [3, 20])
def test_class_gap_matches_a_naive_loop(seed):
    (x, y), _, _ = bundled.toy2d(seed, num_train=40)
    gap, flipped = bundled.class_gap(x, y)
    want_gap, want_flipped = _naive_gap(x, y)
    assert gap == pytest.approx(want_gap, rel=1e-12)
    assert flipped == want_flipped


@pytest.mark.parametrize("seed", [0, 1])
def test_draws_follow_the_rule_and_the_seed(seed):
    config = toy2d.get_config() | {"seed": seed}
    draws, scanned = toy2d.select_draws(config)
    start = 1000 * seed
    assert len(draws) == config["num_data_seeds"]
    assert draws[-1].seed == start + scanned - 1
    chosen = {d.seed for d in draws}
    for data_seed in range(start, start + scanned):  # every seed scanned, chosen or not
        (x, y), _, _ = bundled.toy2d(data_seed, num_train=config["num_train"])
        gap, flipped = _naive_gap(x, y)
        ok = config["bim_eps"] <= gap < 2 * config["fgm_eps"] and flipped <= 5
        assert ok == (data_seed in chosen), (data_seed, gap, flipped)
    for d in draws:
        assert d.gap == pytest.approx(_naive_gap(*bundled.toy2d(d.seed)[0])[0])


def _scores(clean, fgm, bim, far, nll=(0.10, 0.11, 0.12)):
    return {
        "train_accuracy": clean,
        "fgm_accuracy": fgm,
        "bim_accuracy": bim,
        "far_max_prob": far,
        "nll": list(nll),
    }


def test_verdicts_hold_only_where_the_effect_is():
    clean = [0.99, 0.98, 0.99]
    per_draw = {
        # FGM lowers the accuracy on every draw, BIM changes nothing
        "map": _scores(clean, [0.90, 0.88, 0.91], clean, [0.99, 0.98, 0.99]),
        # far-field confidence clearly below MAP's
        "last_layer_laplace": _scores(clean, clean, clean, [0.70, 0.72, 0.74]),
        # below MAP far away, but by being less confident on the data too
        "diag_laplace": _scores(clean, clean, clean, [0.6, 0.6, 0.6], [0.3, 0.32, 0.35]),
        # as confident as MAP far away (the effect absent)
        "kfac_laplace": _scores(clean, clean, clean, [0.99, 0.98, 0.99]),
        # below MAP on one draw, above on another: no verdict
        "gp": _scores(clean, clean, [0.99, 0.9, 0.99], [0.70, 0.99, 0.995]),
    }
    got = {(v["method"], v["kind"]): v["outcome"] for v in toy2d.verdicts(per_draw)}
    assert got[("map", "fgm")] == "held"
    assert got[("map", "bim")] == "not held"
    assert got[("last_layer_laplace", "far_field")] == "held"
    assert got[("last_layer_laplace", "in_domain_nll")] != "held"  # the same NLL as MAP's
    assert got[("diag_laplace", "in_domain_nll")] == "held"
    assert got[("kfac_laplace", "far_field")] == "not held"
    assert got[("gp", "far_field")] == "inconclusive"
    assert got[("gp", "bim")] == "inconclusive"
    assert ("map", "far_field") not in got
    one_draw = {k: {s: v[:1] for s, v in scores.items()} for k, scores in per_draw.items()}
    assert {v["outcome"] for v in toy2d.verdicts(one_draw)} == {"inconclusive"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"bim_eps": 1.2}, r"config\['bim_step'\], \['bim_eps'\], \['fgm_eps'\]"),
        ({"max_flipped": 1.0}, r"config\['max_flipped'\]"),
        ({"sweep_eps": [-0.1, 0.3]}, r"config\['sweep_eps'\]"),
        ({"methods": ["map", "svgd"]}, r"config\['methods'\]: unknown value 'svgd'"),
        ({"prior_prec_grid": [1, 2, 2]}, "unknown keys"),
    ],
)
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        toy2d.check(toy2d.get_config(quick=True) | overrides)


def test_main_writes_every_figure_with_computed_captions(tmp_path):
    config = toy2d.get_config(quick=True) | TINY
    metrics = toy2d.main(config, tmp_path)["toy2d"]
    report = (tmp_path / "report.md").read_text()
    linked = re.findall(r"!\[[\w\-]+\]\(figures/([\w\-]+)\.png\)\n\n\*([^\n]+)\*", report)
    on_disk = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert {name for name, _ in linked} == on_disk
    kinds = ["data", "eps_sweep", "far_field", "sheet", "dropout_rates", "sigmoid_entropy"]
    for name in config["methods"]:
        kinds += [f"{name}_{kind}" for kind in ("maps", "fgm", "bim")]
    kinds += ["concrete_dropout_draws", "last_layer_laplace_draws"]
    assert on_disk == {f"toy2d_{kind}" for kind in kinds}  # no draws figure for MAP
    for bad in ("nan", "None", "{", "}", "TODO", "XXX"):
        assert bad not in report, bad
    captions = dict(linked)
    methods = metrics["methods"]
    for name in config["methods"]:
        far = methods[name]["per_draw"]["far_max_prob"][0]
        assert f"{name} {far:.3f}" in captions["toy2d_far_field"]
        assert 0.5 <= far <= 1.0
    gaps = [d["gap"] for d in metrics["draws"]]
    assert all(config["bim_eps"] <= g < 2 * config["fgm_eps"] for g in gaps)
    for d in metrics["draws"]:
        assert f"{d['seed']} (gap {d['gap']:.3f}, {d['flipped']} flipped)" in report
    assert methods["map"]["per_draw"]["max_bald"] == [0.0, 0.0]  # one draw: no disagreement
    for m in methods.values():
        assert np.all(np.asarray(m["per_draw"]["max_bald"]) <= np.log(2) + 1e-5)
        sweep = m["sweep_bim_accuracy"]
        assert len(sweep) == len(config["sweep_eps"])
        assert sweep[0]["mean"] == m["train_accuracy"]["mean"]  # eps 0 leaves points in place
    rates = methods["concrete_dropout"]["facts"]["rates"]
    assert all(len(v) == config["epochs"] for v in rates.values())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["toy2d"]["verdicts"] == metrics["verdicts"]
    kinds = {(v["method"], v["kind"]) for v in metrics["verdicts"]}
    assert ("last_layer_laplace", "far_field") in kinds
    rows = toy2d.headline(metrics)
    assert [r["method"] for r in rows] == config["methods"]
    assert rows[2]["far p < MAP"] in ("held", "not held", "inconclusive")
