"""Each study's ``main`` on a tiny config: outputs, report, metrics layout, resume, bad configs."""

import json
import re

import pytest

from experiments import adversarial, calibration, family, landscape, ood, study, toy2d

TINY_FAMILY = {
    "family": [{"name": "mlp-1x16", "architecture": "mlp", "widths": [16]}],
    "reference": "mlp-1x16",
    "num_train": 120,
    "epochs": 3,
    "num_members": 2,
    "num_samples": 3,
    "chunk_size": 3,
    "prior_prec_grid": [1.0, 100.0, 2],
    "scale_grid": [1.0, 10.0, 2],
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


def test_toy2d_main(tmp_path):
    config = _tiny(
        toy2d,
        epochs=3,
        widths=[16, 16],
        num_samples=3,
        grid_size=12,
        draw_grid_size=8,
        num_members=2,
        prior_prec_grid=[1.0, 10.0, 2],
        scale_grid=[1.0, 10.0, 2],
    )
    metrics = toy2d.main(config, tmp_path)["toy2d"]
    assert set(metrics) == set(toy2d.DEFAULT_METHODS)
    figures = _figures_in_report(tmp_path)
    for name in toy2d.DEFAULT_METHODS:
        assert {f"toy2d_{name}_{kind}" for kind in ("maps", "draws", "fgm", "bim")} <= figures
        assert metrics[name]["bald_le_entropy"]
        assert 0 <= metrics[name]["bim_accuracy"] <= 1
    assert {"toy2d_sheet", "toy2d_sigmoid_entropy"} <= figures
    assert metrics["map"]["max_bald"] == 0.0  # one deterministic draw has no disagreement
    assert metrics["gp"]["objective_after"] < metrics["gp"]["objective_before"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["toy2d"]["gp"]["hyperparameters"] == metrics["gp"]["hyperparameters"]


def test_study_writes_every_figure_and_the_metrics_layout(tmp_path):
    config = study.get_config(quick=True) | TINY_FAMILY
    config |= {
        "studies": ["landscape", "calibration", "ood", "adversarial"],
        "fgsm_eps": [0.0, 0.1],
        "attack_num": 20,
        "landscape_points": 5,
    }
    metrics = study.main(config, tmp_path)
    figures = _figures_in_report(tmp_path)
    assert {
        "landscape_1d",
        "landscape_2d",
        "landscape_gaussians",
        "calibration_reliability",
        "calibration_curves",
        "calibration_curves_laplace",
        "ood_histograms_patches",
        "ood_inverse_ecdf_noise",
        "adversarial_fgsm_sweep",
        "adversarial_detection",
    } <= figures
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["methods"]) == set(family.DEFAULT_METHODS)
    for entry in saved["methods"].values():
        assert {"accuracy", "nll", "brier", "ece", "mce", "ood", "fgsm"} <= set(entry)
        assert set(entry["ood"]) == {"patches", "noise"}
        assert {"auroc_entropy", "auroc_bald", "fpr95_entropy"} <= set(entry["ood"]["noise"])
        assert entry["fgsm"]["eps"] == [0.0, 0.1] and len(entry["fgsm"]["accuracy"]) == 2
    assert set(saved["laplace"]["mlp-1x16"]) == {"diag_laplace", "kfac_laplace"}
    assert {"scale", "prior_prec", "N"} <= set(saved["laplace"]["mlp-1x16"]["kfac_laplace"])
    assert saved["methods"]["map"]["ood"]["noise"]["auroc_bald"] == 0.5
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(json.dumps(config))
    assert metrics["methods"]["map"]["accuracy"] == saved["methods"]["map"]["accuracy"]


@pytest.mark.parametrize("module", [landscape, calibration, ood, adversarial])
def test_each_study_runs_alone(tmp_path, module):
    config = _tiny(module, methods=["map", "diag_laplace"])
    config |= {
        k: v
        for k, v in {"fgsm_eps": [0.0, 0.2], "attack_num": 10, "landscape_points": 5}.items()
        if k in config
    }
    metrics = module.main(config, tmp_path)
    assert (tmp_path / "report.md").exists() and _figures_in_report(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()).keys() == metrics.keys()


def test_the_method_table_serves_every_study_with_its_own_keys(tmp_path):
    """A curvature structure is one entry of ``LAPLACE_STRUCTURES``; the partition (dense last
    layer + diagonal rest) runs in a study from it; methods never share keys."""
    from experiments import methods

    assert set(methods.LAPLACE_STRUCTURES) <= set(family.METHODS) & set(toy2d.METHODS)
    assert "partition_laplace" not in family.DEFAULT_METHODS + toy2d.DEFAULT_METHODS
    config = _tiny(calibration, methods=["map", "partition_laplace", "mc_dropout"])
    metrics = calibration.main(config, tmp_path)["calibration"]
    scores = metrics["family"]["mlp-1x16"]["partition_laplace"]
    assert 0 <= scores["accuracy"] <= 1 and scores["nll"] > 0
    assert {"scale", "prior_prec", "N"} <= set(metrics["tuned"]["mlp-1x16"]["partition_laplace"])
    import jax

    key = jax.random.key(0)
    data = {name: jax.random.key_data(methods.method_key(key, name)) for name in methods.METHODS}
    assert len({tuple(d.ravel().tolist()) for d in data.values()}) == len(methods.METHODS)


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path):
    """A run that stopped after fitting part of the family (its cache holds only the MAP
    network) and is started again ends with the metrics of an uninterrupted run, byte for
    byte; the results of a different config are never replaced silently."""
    config = _tiny(calibration, methods=["map", "diag_laplace"])
    calibration.main(config, tmp_path / "whole")
    partial = tmp_path / "partial"
    calibration.main(config | {"methods": ["map"]}, partial)
    assert len(list((partial / "cache").glob("*.msgpack"))) == 1
    with pytest.raises(FileExistsError, match="different config"):
        calibration.main(config, partial)
    calibration.main(config, partial, overwrite=True)
    whole = (tmp_path / "whole" / "metrics.json").read_text()
    assert (partial / "metrics.json").read_text() == whole
    calibration.main(config, partial)  # the same config again: allowed (resume)


def test_bad_configs_fail_at_start_with_the_choices(tmp_path):
    config = study.get_config(quick=True)
    with pytest.raises(
        ValueError, match=r"config\['methods'\]: unknown value 'swag'.*kfac_laplace"
    ):
        study.main(config | {"methods": ["map", "swag"]}, tmp_path)
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
    config = _tiny(calibration, dataset="mnist", methods=["map", "diag_laplace"])
    with tfds.testing.mock_data(num_examples=150):
        metrics = calibration.main(config, tmp_path)
    scores = metrics["calibration"]["family"]["mlp-1x16"]["diag_laplace"]
    assert 0 <= scores["accuracy"] <= 1 and scores["nll"] > 0
    assert _figures_in_report(tmp_path)
