"""Each study's ``main`` on a tiny config: outputs, report, metrics layout, resume, bad configs."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from bnn_jax import attacks, ensembles, gp, laplace, predictive, training
from bnn_jax import calibration as calibration_lib
from bnn_jax import landscape as landscape_lib
from experiments import adversarial, calibration, cli, family, landscape, ood, study, toy2d
from experiments.cache import CacheWarning

TINY_FAMILY = {
    "family": [{"name": "mlp-1x16", "architecture": "mlp", "widths": [16]}],
    "reference": "mlp-1x16",
    "num_seeds": 2,
    "num_val": 60,
    "num_test": 120,
    "num_ood": 60,
    "epochs": 2,
    "num_members": 2,
    "num_samples": 3,
    "glm_mc_samples": 4,
    "chunk_size": 3,
    "prior_prec_grid": [0.1, 100.0, 3],
    "scale_grid": [0.1, 1.0, 10.0],
    "search_grow": 1,
    "fgsm_eps": [0.0, 0.1],
    "attack_num": 20,
}


def _tiny(module, **overrides):
    keys = module.get_config(quick=True)
    return keys | {k: v for k, v in TINY_FAMILY.items() if k in keys} | overrides


def _figures_in_report(out_dir) -> set[str]:
    report = (out_dir / "report.md").read_text()
    linked = set(re.findall(r"\(figures/([\w\-]+)\.png\)", report))
    on_disk = {p.stem for p in (out_dir / "figures").glob("*.png")}
    assert linked == on_disk, linked ^ on_disk
    return linked


def _captions(out_dir) -> list[str]:
    """The caption under every figure of the report."""
    lines = (out_dir / "report.md").read_text().splitlines()
    return [lines[i + 2] for i, line in enumerate(lines) if line.startswith("![")]


FULL = study.get_config(quick=True) | TINY_FAMILY | {"landscape_points": 5}
FULL |= {"studies": ["landscape", "calibration", "ood", "adversarial"]}
"""Every family study with every Laplace structure and recipe and every other method, 2 seeds."""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """``(out_dir, metrics)`` of one run of :data:`FULL`; other tests start from its cache."""
    out = tmp_path_factory.mktemp("full")
    return out, study.main(FULL, out)


def _from_cache(full_run, out_dir: Path) -> Path:
    """``out_dir`` holding a copy of the full run's cache (an earlier run's stages)."""
    shutil.copytree(full_run[0] / "cache", out_dir / "cache")
    return out_dir


def _only(module) -> dict:
    """The keys of :data:`FULL` that ``module`` takes (the same family settings)."""
    return {k: v for k, v in FULL.items() if k in module.get_config(quick=True)}


def test_study_writes_every_figure_captions_verdicts_and_diagnostics(full_run):
    out, metrics = full_run
    figures = _figures_in_report(out)
    assert {
        "landscape_1d",
        "landscape_2d",
        "landscape_gaussians",
        "calibration_reliability",
        "calibration_curves_laplace",
        "calibration_curves_other",
        "ood_histograms_patches",
        "ood_inverse_ecdf_family",
        "adversarial_fgsm_sweep",
    } <= figures
    captions = _captions(out)
    assert len(captions) == len(figures)
    for caption in captions:  # computed from the numbers: no placeholders, no undefined values
        assert caption.startswith("*") and not re.search(r"\{|\}|\bnan\b|None", caption), caption
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("The two source documents' claims, tested on mnist1d")
    saved = json.loads((out / "metrics.json").read_text())
    outcomes = {c["outcome"] for c in saved["claims"]}
    assert outcomes <= {"held", "not held", "inconclusive"}
    assert any(c["claim"].startswith("target: best Laplace") for c in saved["claims"])
    runs = saved["diagnostics"]["mlp-1x16"]
    for structure in ("diag", "kfac", "llkfac"):
        for name in (f"{structure}_prior", f"{structure}_post", f"{structure}_glm"):
            assert len(runs[name]) == 2  # one entry per seed
            assert {"gamma", "fraction", "prior_share", "rounds", "flag"} <= set(runs[name][0])
            assert 0 <= runs[name][0]["fraction"] <= 1
    family_scores = saved["calibration"]["family"]["mlp-1x16"]
    assert {"map", "temperature", "mc_dropout", "concrete_dropout", "ensemble"} <= set(
        family_scores
    )
    for name in ("kfac_post", "kfac_redux", "kfac_redux_probit", "kfac_glm", "kfac_glm_mclink"):
        assert family_scores[name]["ece"]["n"] == 2
    assert set(saved["ood"]["family"]["mlp-1x16"]["map"]) == {"patches", "noise"}
    assert saved["adversarial"]["mlp-1x16"]["map"]["eps"] == [0.0, 0.1]
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(FULL))
    assert metrics["claims"][0]["outcome"] == saved["claims"][0]["outcome"]


SMALL = {"structures": ["kfac"], "recipes": ["glm"], "methods": ["map", "temperature"]}


@pytest.mark.parametrize("module", [landscape, calibration, ood, adversarial])
def test_each_study_runs_alone(tmp_path, module, full_run):
    out = _from_cache(full_run, tmp_path / "out")
    metrics = module.main(_only(module), out)
    assert (out / "report.md").exists() and _figures_in_report(out)
    assert json.loads((out / "metrics.json").read_text()).keys() == metrics.keys()


def test_the_convolutional_member_runs_on_the_1d_signals(tmp_path):
    """The LeNet-5 for 1D signals (in the default family, not in ``quick``'s): last-layer KFAC
    on its features, Concrete Dropout around its Dense layers (two learned rates)."""
    default, quick = family.default_config(), family.default_config(quick=True)
    assert {"name": "lenet1d", "architecture": "lenet1d", "recipes": ["redux", "glm"]} in (
        default["family"]
    )
    assert [m["name"] for m in quick["family"]] == ["mlp-1x128"]
    member = {"name": "lenet1d", "architecture": "lenet1d"}
    config = _tiny(calibration, **SMALL | {"family": [member], "reference": "lenet1d"})
    config |= {"num_seeds": 1, "epochs": 1, "methods": ["map", "temperature", "concrete_dropout"]}
    config |= {"structures": ["llkfac"]}
    metrics = calibration.main(config, tmp_path)["calibration"]["family"]["lenet1d"]
    assert {"map", "temperature", "llkfac_glm", "concrete_dropout"} <= set(metrics)
    assert 0 <= metrics["llkfac_glm"]["accuracy"]["mean"] <= 1
    (results,) = (tmp_path / "cache").glob("lenet1d-s0-results-" + "[0-9a-f]" * 16 + ".json")
    assert len(json.loads(results.read_text())["tuned"]["concrete_dropout"]["rates"]) == 2


def test_the_method_table_gives_every_method_its_own_keys():
    """A curvature structure is one entry of ``LAPLACE_STRUCTURES`` (toy2d); methods never share
    keys."""
    import jax

    from experiments import methods

    assert set(methods.LAPLACE_STRUCTURES) <= set(toy2d.METHODS)
    assert "partition_laplace" not in toy2d.DEFAULT_METHODS
    assert set(family.OTHER_METHODS) <= set(methods.METHODS)
    key = jax.random.key(0)
    data = {name: jax.random.key_data(methods.method_key(key, name)) for name in methods.METHODS}
    assert len({tuple(d.ravel().tolist()) for d in data.values()}) == len(methods.METHODS)


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, full_run):
    """A run that stopped after training and fitting (its cache lost a seed's results) and is
    started again ends with the metrics of an uninterrupted run, byte for byte; the results of a
    different config are never replaced silently; a damaged cache entry is named in a warning
    and recomputed to the same results."""
    config = _only(calibration)
    calibration.main(config, _from_cache(full_run, tmp_path / "whole"))
    whole = (tmp_path / "whole" / "metrics.json").read_text()
    partial = _from_cache(full_run, tmp_path / "partial")
    for path in (partial / "cache").glob("mlp-1x16-s1-results-*"):
        path.unlink()  # as if stopped after the networks and posteriors were cached
    calibration.main(config, partial)
    with pytest.raises(FileExistsError, match="different config"):
        calibration.main(config | {"epochs": 3}, partial)
    calibration.main(config, partial)  # the same config again: allowed (resume)
    assert (partial / "metrics.json").read_text() == whole
    (entry,) = (partial / "cache").glob("mlp-1x16-s0-map-" + "[0-9a-f]" * 16 + ".msgpack")
    damaged = bytearray(entry.read_bytes())
    damaged[-20] ^= 0x01  # same size, one byte of the weights: found, named, recomputed
    entry.write_bytes(bytes(damaged))
    with pytest.warns(CacheWarning, match=re.escape(f"cache entry {entry} is damaged")):
        calibration.main(config, partial)
    assert (partial / "metrics.json").read_text() == whole


def test_bad_configs_fail_at_start_with_the_choices(tmp_path):
    config = study.get_config(quick=True)
    with pytest.raises(ValueError, match=r"config\['methods'\]: unknown value 'swag'.*ensemble"):
        study.main(config | {"methods": ["map", "swag"]}, tmp_path)
    with pytest.raises(ValueError, match=r"config\['recipes'\]: unknown value 'swa'.*glm"):
        study.main(config | {"recipes": ["swa"]}, tmp_path)
    with pytest.raises(ValueError, match=r"config\['num_seeds'\]: expected a positive integer"):
        study.main(config | {"num_seeds": 0}, tmp_path)
    with pytest.raises(ValueError, match=r"config: unknown keys \['epoch'\]; valid keys"):
        study.main(config | {"epoch": 3}, tmp_path)
    with pytest.raises(ValueError, match=r"config\['studies'\]: unknown value 'toy3d'"):
        study.main(config | {"studies": ["toy3d"]}, tmp_path)
    with pytest.raises(ValueError, match=r"config\['dataset'\]: unknown value 'cifar100'.*mnist1d"):
        study.main(config | {"dataset": "cifar100", "studies": ["calibration"]}, tmp_path)
    with pytest.raises(ValueError, match="reference"):
        study.main(config | {"reference": "resnet-152", "studies": ["calibration"]}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_study_runs_on_a_tfds_data_set(tmp_path):
    """``--dataset mnist`` works like the bundled sets (tfds mocked: no download)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _tiny(calibration, dataset="mnist", **SMALL | {"num_seeds": 1, "num_ood": 30})
    with tfds.testing.mock_data(num_examples=150):
        metrics = calibration.main(config, tmp_path)
    scores = metrics["calibration"]["family"]["mlp-1x16"]["kfac_glm"]
    assert 0 <= scores["accuracy"]["mean"] <= 1 and scores["nll"]["mean"] > 0
    assert _figures_in_report(tmp_path)


TINY_TOY2D = {  # one method per kind of stage: a network, a Laplace posterior, the GP
    "methods": ["map", "kfac_laplace", "gp"],
    "epochs": 2,
    "widths": [8, 8],
    "num_samples": 2,
    "grid_size": 6,
    "draw_grid_size": 4,
    "num_members": 2,
    "bim_steps": 2,
    "attack_samples": 2,
    "marglik_steps": 3,
    "sweep_eps": [0.0, 0.3, 0.5],
}


def _tiny_study(**overrides) -> dict:
    """Every study: :data:`FULL`'s family settings (its cache serves them) and a tiny toy2d."""
    config = FULL | {"studies": list(study.STUDIES)}
    return config | {"toy2d": config["toy2d"] | TINY_TOY2D} | overrides


WORK = [
    (training, "train"),
    (ensembles, "train_ensemble"),
    (laplace, "fit"),
    (laplace, "search"),
    (laplace, "optimize_marglik"),
    (laplace, "diagnostics"),
    (calibration_lib, "fit_temperature"),
    (gp, "optimize_hyperparameters"),
    (gp, "fit"),
    (predictive, "sample_log_probs"),
    (attacks, "sweep"),
    (attacks, "fgm"),
    (attacks, "bim"),
    (landscape_lib, "slice_1d"),
    (landscape_lib, "slice_2d"),
    (landscape_lib, "fit_gaussian_2d"),
]
"""Library functions that train, fit, search, predict or attack: a cached rerun calls none."""


def _forbidden(name):
    def call(*args, **kwargs):
        raise AssertionError(f"{name} was called in a fully cached rerun")

    return call


def _numbers(tree) -> list[float]:
    """Every number of a metrics tree, in a fixed order."""
    if isinstance(tree, dict):
        return [v for k in sorted(tree) for v in _numbers(tree[k])]
    if isinstance(tree, list):
        return [v for item in tree for v in _numbers(item)]
    if tree is None:  # undefined (NaN in the run)
        return [float("nan")]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def _study_cli(config_path, out, *extra):
    argv = ["--config", str(config_path), "--out", str(out), *extra]
    cli.run(
        "study",
        study.get_config,
        study.main,
        default_dataset="digits",
        headline=study.headline,
        argv=argv,
    )


def test_a_cached_rerun_does_no_work_and_one_seed_drives_every_study(
    tmp_path, monkeypatch, capsys, full_run
):
    """Every study on a tiny config; the rerun from the cache trains, fits, searches, predicts
    and attacks nothing and writes the same metrics (strict JSON), showing its stages and the
    closing table; ``--seed`` changes (most of) every study's numbers."""
    config, path = _tiny_study(), tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    first = _from_cache(full_run, tmp_path / "seed0")  # seeds 0 and 1 of the family cached
    study.main(config, first)
    metrics = (first / "metrics.json").read_text()
    json.loads(metrics, parse_constant=pytest.fail)  # strict JSON: null, never NaN
    for module, name in WORK:
        monkeypatch.setattr(module, name, _forbidden(f"{module.__name__}.{name}"))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        _study_cli(path, first)
    assert (first / "metrics.json").read_text() == metrics
    lines = capsys.readouterr().out.splitlines()
    for stage in ("toy2d", "fit mlp-1x16 seed 0", "fit family", "calibration", "adversarial"):
        line = rf"{stage}: \d+\.\d s \(CPU \d+\.\d s\)"
        assert any(re.fullmatch(line, shown) for shown in lines), stage
    header = next(line.split() for line in lines if line.startswith("study"))
    assert header[:5] == ["study", "method", "accuracy", "NLL", "BIM"]
    verdict_header = next(line.split() for line in lines if line.startswith("member"))
    assert verdict_header == ["member", "claim", "method", "mean", "95%", "interval", "verdict"]
    claims = json.loads(metrics)["claims"]
    assert sum(line.startswith(("mlp-1x16 ", "family ")) for line in lines) == len(claims)
    assert lines[-1] == f"report: {first / 'report.md'}"
    monkeypatch.undo()

    second = _from_cache(full_run, tmp_path / "seed1")  # seeds 1 and 2: seed 2 is new
    _study_cli(path, second, "--seed", "1", "--quiet")
    assert json.loads((second / "config.json").read_text())["seed"] == 1
    before, after = json.loads(metrics), json.loads((second / "metrics.json").read_text())
    for name in study.STUDIES:
        a, b = np.array(_numbers(before[name])), np.array(_numbers(after[name]))
        assert a.shape == b.shape and np.mean(~np.isclose(a, b, equal_nan=True)) > 1 / 3, name


def test_two_runs_into_one_folder_one_fails_fast_and_quiet_prints_nothing(tmp_path, full_run):
    """A second process with another config into a folder that a quiet run holds fails at
    once with the reason; the first run's results are intact and it printed nothing."""
    root = Path(__file__).parent.parent
    config = _tiny_study(studies=["calibration"])
    paths = {name: tmp_path / f"{name}.json" for name in ("a", "b")}
    paths["a"].write_text(json.dumps(config))
    paths["b"].write_text(json.dumps(config | {"epochs": 3}))
    out = _from_cache(full_run, tmp_path / "out")
    command = [sys.executable, "-m", "experiments.study", "--out", str(out), "--config"]
    env = os.environ | {"PYTHONPATH": str(root)}
    run = dict(cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([*command, str(paths["a"]), "--quiet"], **run)
    while first.poll() is None and not (out / "claim.json").exists():
        time.sleep(0.1)
    second = subprocess.run([*command, str(paths["b"])], **run, timeout=600)
    stdout, stderr = first.communicate(timeout=600)
    assert second.returncode == 1, second.stderr
    assert re.search(
        r"error: out_dir: .* (is in use by a running study|different config)", second.stderr
    )
    assert (first.returncode, stdout, stderr) == (0, "", "")
    assert json.loads((out / "config.json").read_text()) == config
    saved = json.loads((out / "metrics.json").read_text())
    full = json.loads((full_run[0] / "metrics.json").read_text())
    assert saved["calibration"] == full["calibration"]
