"""The figure studies (curvature structures, N/tau, landscape) on tiny configs: every figure is
written and every caption is computed (no placeholders, no undefined numbers)."""

import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import jax
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from bnn_jax import curvature, data, laplace, losses, models, testing, training
from experiments import common, family, landscape, posterior_shape, structures


def _check_report(report: common.Report, out_dir, names: list[str]) -> str:
    text = report.markdown()
    for name in names:
        assert (out_dir / "figures" / f"{name}.png").stat().st_size > 0
        assert f"![{name}](figures/{name}.png)" in text
    captions = re.findall(r"^\*(.+)\*$", text, flags=re.MULTILINE)
    assert len(captions) >= len(names)
    for caption in captions:
        assert not re.search(r"\{|\}|\bnan\b|\bNone\b|TODO|XXX", caption, flags=re.IGNORECASE)
    return text


def test_structures_run_writes_both_figures(tmp_path):
    config = structures.get_config() | {"structures_epochs": 5, "structures_points": 6}
    report = common.Report(tmp_path, "test")
    metrics = structures.run(config, tmp_path, report)
    _check_report(report, tmp_path, ["curvature_structures", "kronecker_product"])
    assert metrics["num_params"] == 43 and metrics["network"] == "4-5-3"
    errors = metrics["relative_error"]
    # block-diagonal keeps a superset of the diagonal's entries of the same exact GGN
    assert 0.0 <= errors["block-diagonal"] <= errors["diagonal (DIAG)"] <= 1.0
    assert metrics["stored_numbers"]["KFAC"] == 5**2 + 5**2 + 6**2 + 3**2


def test_structures_config_is_checked():
    with pytest.raises(ValueError, match="structures_widths"):
        structures.check(structures.get_config() | {"structures_widths": [0]})
    with pytest.raises(ValueError, match="unknown keys"):
        structures.check(structures.get_config() | {"structure_points": 3})


def test_effective_parameters_is_the_trace_formula():
    rng = np.random.default_rng(0)
    root = rng.normal(size=(5, 3))
    c = root @ root.T  # rank 3: two zero eigenvalues
    s, tau = 2.5, 0.7
    dense = np.trace(s * c @ np.linalg.inv(s * c + tau * np.eye(5)))
    gamma = posterior_shape.effective_parameters(np.linalg.eigvalsh(c), s, tau)
    assert gamma == pytest.approx(dense) and gamma < 3.0


def test_choose_plane_picks_the_data_determined_pair_of_the_target_correlation():
    c = np.diag([10.0, 9.0, 8.0, 0.1])
    c[0, 1] = c[1, 0] = 0.95 * np.sqrt(90.0)
    c[0, 2] = c[2, 0] = 0.7 * np.sqrt(80.0)
    c[2, 3] = c[3, 2] = 0.8 * np.sqrt(0.8)  # exactly 0.8, but weight 3 is prior-dominated
    assert posterior_shape.choose_plane(c, 1.0, 0.8) == (0, 2)
    assert posterior_shape.choose_plane(c, 1.0, 0.9) == (0, 1)
    with pytest.raises(ValueError, match="dominated by its prior"):
        posterior_shape.choose_plane(c, 9.5, 0.8)


def _tiny_member(key=0):
    """A tiny trained MLP with the interface of ``family.reference``'s member."""
    rng = np.random.default_rng(key)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)
    ds = data.Dataset("tiny", x[:60], y[:60], x[60:75], y[60:75], x[75:], y[75:], 3, (0, 1, 2), 0)
    model = models.MLP((8,), 3)
    trained = training.train(
        model,
        ds.x_train,
        ds.y_train,
        key=jax.random.key(key),
        epochs=20,
        batch_size=20,
        optimizer=optax.adam(1e-2),
        prior_prec=1.0,
        progress=False,
    )
    params = trained.variables["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    posteriors = {}
    for name, factory in (("diag_laplace", curvature.diagonal), ("kfac_laplace", curvature.kfac)):
        curv = factory(apply_fn, losses.categorical(), fisher=curvature.exact_fisher())
        posteriors[name] = laplace.fit(
            curv,
            params,
            data.Batches(ds.x_train, ds.y_train, 30),
            key=jax.random.key(1),
            prior_prec=1.0,
            progress=False,
        )
    member = SimpleNamespace(
        name="mlp-8", model=model, variables=trained.variables, posteriors=posteriors
    )
    return SimpleNamespace(dataset=ds), member


@pytest.fixture(scope="module")
def tiny():
    return _tiny_member()


def test_posterior_shape_run_writes_the_n_tau_figure(tmp_path, monkeypatch, tiny):
    fitted, member = tiny
    monkeypatch.setattr(family, "reference", lambda f, config: member)
    report = common.Report(tmp_path, "test")
    metrics = posterior_shape.run(posterior_shape.get_config(), tmp_path, report, fitted)
    text = _check_report(report, tmp_path, ["posterior_n_tau"])
    assert "gamma" in text and "mlp-8" in text
    assert metrics["num_params"] == 8 * 3 + 3 and 0 < metrics["gamma"] < metrics["num_params"]
    areas = [v["area"] for v in metrics["by_scale"].values()]
    assert areas == sorted(areas, reverse=True)  # larger N, smaller ellipse
    ratios = [v["axis_ratio"] for v in metrics["by_prior_prec"].values()]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] < 1.1  # tau makes it round


def test_landscape_run_writes_its_figures_with_computed_captions(tmp_path, monkeypatch, tiny):
    fitted, member = tiny
    monkeypatch.setattr(family, "reference", lambda f, config: member)
    config = landscape.get_config(quick=True) | {
        "landscape_points": 7,
        "landscape_directions": 2,
        "landscape_examples": 60,
        "landscape_iterations": 5,
    }
    report = common.Report(tmp_path, "test")
    metrics = landscape.run(config, tmp_path, report, fitted)
    text = _check_report(report, tmp_path, ["landscape_1d", "landscape_2d", "landscape_gaussians"])
    assert "mlp-8" in text
    # "hills" only where the slices have local maxima
    assert ("no hills" in text) == (metrics["hills_2d"] == 0)
    assert ("have local maxima (hills)" in text) == any(h > 0 for h in metrics["hills_1d"])
    covariances = metrics["covariances"]
    assert list(covariances)[:2] == ["least-squares fit", "exact-GGN Laplace"]
    names = [name for name in covariances if name.startswith(("DIAG", "KFAC"))]
    assert [name.split()[0] for name in names] == ["DIAG", "KFAC"]
    # the exact-GGN Laplace is diagonal on the eigenvector plane with precision lam / m + tau0 / n
    lam = np.asarray(metrics["ggn_eigenvalues"])
    np.testing.assert_allclose(
        np.linalg.inv(covariances["exact-GGN Laplace"]), np.diag(lam / 60 + 1.0 / 60), rtol=1e-5
    )
    assert metrics["distance_to_fit"]["least-squares fit"] == 0.0
    assert set(metrics["precision_relative_to_exact"]) == set(names)
    assert "DIAG and KFAC differ by" in text


def test_local_maxima_counts_strict_interior_peaks():
    assert landscape.local_maxima(np.array([0.0, 1.0, 0.0, 2.0, 2.0, 0.0])) == 1  # plateau: none
    grid = np.zeros((5, 5))
    grid[1, 1], grid[3, 3], grid[0, 4] = 1.0, 2.0, 5.0  # the corner is not interior
    assert landscape.local_maxima(grid) == 2
    assert landscape.local_maxima(np.add.outer(np.arange(5.0), np.arange(5.0))) == 0


def test_top_ggn_directions_match_the_dense_ggn(x64, tiny):
    fitted, member = tiny
    params = member.variables["params"]
    apply_fn = lambda p, x: member.model.apply({"params": p}, x)
    x = np.asarray(fitted.dataset.x_train[:20], np.float64)
    params = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    batch = SimpleNamespace(x=x)
    dense = np.asarray(testing.exact_ggn(apply_fn, losses.categorical(), params, batch))
    expected = np.linalg.eigvalsh(dense)[::-1][:2]
    values, directions = landscape.top_ggn_directions(
        apply_fn, params, x, num=2, iterations=60, key=jax.random.key(0)
    )
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    for value, direction in zip(values, directions, strict=True):
        flat = ravel_pytree(direction)[0]
        np.testing.assert_allclose(dense @ flat, value * flat, atol=1e-6 * value)
