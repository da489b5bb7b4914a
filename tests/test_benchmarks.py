"""``python -m benchmarks.run`` keeps working: a tiny run of every case writes the JSON the
issue asks for, and the analytic FLOP counts agree with hand counts (no timing assertions)."""

import dataclasses
import importlib.util
import json

import jax
import numpy as np
import pytest

from benchmarks import flops, problems, run

TINY = dataclasses.replace(
    problems.Config(),
    num_train=60,
    num_test=12,
    batch_size=30,
    num_samples=3,
    chunk_size={"mlp": 2, "lenet": 1},
    small_inputs=2,
    glm_inputs=3,
    marglik_steps=2,
    train_epochs=1,
    memory_samples=(2, 6),
    mlp_widths=(16, 8),
    repeats=1,
    budget_s=0.0,
    baseline=False,
)
FIELDS = {"name", "ours_s", "baseline", "baseline_s", "ratio", "gflops", "fraction_of_matmul_peak"}


def test_tiny_run_writes_every_case(tmp_path):
    out = tmp_path / "results.json"
    results = run.main(TINY, str(out), verbose=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["machine"]["matmul_2048_gflops_jax"] > 0
    names = {c["name"] for c in results["cases"]}
    for model in problems.MODELS:
        stages = ("train_epoch", "kfac_fit", "kfac_fit_exact", "diag_fit_exact", "glm_probit")
        for stage in (*stages, "marglik"):
            assert f"{model}/{stage}" in names
        assert f"{model}/mc_predictive_T30_small_local" in names
    for case in results["cases"]:
        assert FIELDS <= set(case) and case["ours_s"] > 0, case
    # without the baseline every laplace-torch ratio is missing, and says why
    torch_cases = [c for c in results["cases"] if (c["baseline"] or "").startswith("laplace")]
    assert torch_cases and all(c["ratio"] is None and c["baseline_error"] for c in torch_cases)
    dropout = {c["name"]: c for c in results["cases"]}["mlp/mc_dropout_vmap"]
    assert dropout["ratio"] > 0  # vmap against the loop of jitted passes, same run
    assert {t["met"] for t in results["targets"]} <= {True, False, None}
    assert "| mlp/kfac_fit |" in run.report.markdown(results)


def test_flop_counts_match_hand_counts():
    config = dataclasses.replace(problems.Config(), mlp_widths=(500, 300))
    shapes = {}
    for name in problems.MODELS:
        variables = problems.init_variables(name, config)
        model = problems.make_model(name, config)
        apply_fn = lambda p, x, model=model, v=variables: model.apply({**v, "params": p}, x)
        shapes[name] = flops.layer_shapes(apply_fn, variables["params"], problems.IMAGE_SHAPE)
    mlp_macs = 784 * 500 + 500 * 300 + 300 * 10
    assert flops.forward(shapes["mlp"], 7) == 2 * 7 * mlp_macs
    # LeNet-5: conv 5x5x1->6 at 28x28 positions, conv 5x5x6->16 at 10x10, 400-120-84-10
    lenet_macs = 28 * 28 * 25 * 6 + 10 * 10 * 150 * 16 + 400 * 120 + 120 * 84 + 84 * 10
    assert flops.forward(shapes["lenet"], 3) == 2 * 3 * lenet_macs
    assert [s.positions for s in shapes["lenet"]] == [784, 100, 1, 1, 1]
    # vmapped MC dropout runs the layers before the first dropout once
    shared = problems.LAYERS_BEFORE_DROPOUT["mlp"]
    once = flops.mc_dropout(shapes["mlp"], 30, 5, shared=shared)
    assert once == 2 * 5 * (784 * 500 + 30 * (500 * 300 + 300 * 10))


@pytest.mark.skipif(importlib.util.find_spec("laplace") is None, reason="needs .[bench]")
def test_tiny_baseline_loads_the_same_weights():
    config = dataclasses.replace(TINY, baseline=True, models=("lenet",))
    results = run.main(config, None, verbose=False)
    assert results["baseline_error"] is None
    assert results["baseline_checks"]["lenet"] < 1e-4  # torch logits == flax logits
    fit = {c["name"]: c for c in results["cases"]}["lenet/kfac_fit"]
    assert fit["baseline_s"] > 0 and np.isfinite(fit["ratio"])


def test_models_match_the_issue():
    config = problems.Config()
    for name, count in [("mlp", 784 * 500 + 500 + 500 * 300 + 300 + 300 * 10 + 10)]:
        params = problems.init_variables(name, config)["params"]
        assert sum(x.size for x in jax.tree.leaves(params)) == count


@pytest.mark.skipif(importlib.util.find_spec("laplax") is None, reason="needs .[bench]")
def test_tiny_laplax_side_by_side_agrees():
    from benchmarks import laplax_side

    config = laplax_side.Config(
        num_train=40, num_test=5, input_dim=6, widths=(4,), epochs=1, rank=3,
        grid=(-1.0, 2.0, 7), marglik_steps=2, repeats=1, budget_s=0.0,
    )  # fmt: skip
    results = laplax_side.run(config)
    cases = {c["name"]: c for c in results["cases"]}
    assert set(cases) == {
        "full_ggn", "diagonal_ggn", "low_rank_ggn", "glm_probit_full", "glm_probit_diagonal",
        "marglik_grid",
    }  # fmt: skip
    for name in ("full_ggn", "diagonal_ggn", "glm_probit_full", "glm_probit_diagonal"):
        assert cases[name]["max_rel_diff"] < 1e-4, cases[name]
    grid = cases["marglik_grid"]
    assert grid["max_rel_diff"] < 1e-4 and grid["argmax_ours"] == grid["argmax_laplax"]
    assert cases["low_rank_ggn"]["ours_vs_exact_rel"] < 1e-3
    assert all(c["ours_s"] > 0 and c["laplax_s"] > 0 for c in cases.values())
    assert "| full_ggn |" in laplax_side.markdown(results)


def test_tiny_device_mode_reports_every_stage():
    from benchmarks import device

    config = device.small_config(
        width=4, num_train=32, num_test=8, batch_size=16, num_samples=2, chunk_size=1,
        matmul_size=128, dtype="bfloat16",
    )  # fmt: skip
    results = device.run(config)
    assert set(results["stages"]) == {"train_epoch", "kfac_fit", "mc_predictive"}
    assert results["peak"]["float32_gflops"] > 0 and results["peak"]["bfloat16_gflops"] > 0
    for stage in results["stages"].values():
        assert stage["s"] > 0 and stage["gflop"] > 0 and 0 < stage["fraction_of_matmul_peak"]
    assert results["machine"]["device"] and len(results["machine"]["load_average_start"]) == 3
    assert "| kfac_fit |" in device.markdown(results)


def test_tiny_cost_curves_fit_exponents_and_draw():
    from benchmarks import curves

    assert curves.exponent([1, 2, 4], [3.0, 12.0, 48.0]) == pytest.approx(2.0)
    config = dataclasses.replace(
        curves.quick_config(), sweeps=(("width", (4, 8)), ("num_samples", (2, 4)))
    )
    results = curves.run(config)
    width = results["sweeps"]["width"]["stages"]
    assert set(width) == set(curves.STAGES)
    samples = results["sweeps"]["num_samples"]["stages"]
    assert set(samples) == {"mc_predictive", "local_predictive"}
    for stage in samples.values():  # both predictives cost T times one sample's products
        assert stage["exponent_flops"] == pytest.approx(1.0)
    for sweep in results["sweeps"].values():
        for stage in sweep["stages"].values():
            assert np.isfinite(stage["exponent_time"]) and np.isfinite(stage["exponent_flops"])
            assert all(p["s"] > 0 and len(p["load_average"]) == 3 for p in stage["points"])
    assert len(curves.figure(results).axes) == 4
    assert "| width 4-8 | kfac_fit |" in curves.markdown(results)
