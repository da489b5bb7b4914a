"""The notebooks: stored with their outputs, executed, and judged by what they compute.

Each notebook starts with a cell of settings tagged ``parameters``; the tests insert a cell after
it that overrides them with small values, execute the notebook and then run one more cell that
prints the facts the notebook's text relies on, computed from its variables, as JSON. The
assertions are on those facts (DIAG and KFAC Gaussians differ on the plotting plane, a larger
``s`` shrinks the Gaussian, the vmapped draws equal the library's predictive, ...), so a cell
that stops computing what its figure or sentence says fails here, not only one that raises.

The default settings take about 3 minutes of CPU time for the three notebooks together, too long
for the suite; ``BNN_JAX_NOTEBOOK_DEFAULTS=1`` runs them with their defaults and checks, in
addition, the statements their markdown makes about the stored default run.
"""

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

FOLDER = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = ("posterior_samples", "laplace_tour", "toy2d_uncertainty")
DEFAULTS = os.environ.get("BNN_JAX_NOTEBOOK_DEFAULTS") == "1"

SMALL = {
    "posterior_samples": "EPOCHS, NUM_SAMPLES, NUM_TAUS = 2, 8, 5",
    "laplace_tour": "EPOCHS, SAMPLES, POINTS, NUM_EPS = 5, 4, 7, 3",
    "toy2d_uncertainty": "EPOCHS, SAMPLES, GRID = 20, 8, 20",
}

FACTS = {
    "posterior_samples": """
lam = jnp.linalg.eigvalsh(post.curvature.to_dense(post.state))
facts = {
    "vmap_error": vmap_error,
    "nnx_error": nnx_error,
    "draw_axis": [int(leaf.shape[0]) for leaf in jax.tree.leaves(thetas)],
    "num_samples": NUM_SAMPLES,
    "log_probs_shape": list(log_probs.shape),
    "grid_step": float(log_taus[1] - log_taus[0]),
    "log_tau_grid_best": float(log_taus[best]),
    "log_tau_optimized": float(jnp.log(post.prior_prec)),
    "slope_ends": [float(slope[0]), float(slope[-1])],
    "gamma_tuned": effective_parameters(post),
    "gamma_double_tau": effective_parameters(post.replace(prior_prec=2 * post.prior_prec)),
    "num_last": num_last,
    "gamma_helper": effective_parameters(post),
    "gamma_eigenvalues": float(jnp.sum(post.scale * lam / (post.scale * lam + post.prior_prec))),
    "kit_ok": report.ok,
    "broken_failures": broken_report.failures,
    "accuracy": {k: float(calibration.accuracy(v, y_test)) for k, v in ways.items()},
    "ece": {k: float(calibration.ece(v, y_test)) for k, v in ways.items()},
    "gamma": {k: effective_parameters(p) for k, p in posteriors.items()},
    "evidence": {k: float(laplace.log_marginal_likelihood(p)) for k, p in posteriors.items()},
    "bald": [float(bald[i]) for i in picks.values()],
    "expected": [float(expected[i]) for i in picks.values()],
    "entropy": [float(entropy[i]) for i in picks.values()],
}
""",
    "laplace_tour": """
plane = {name: np.asarray(on_plane(post, 1.0, 0.0)) for name, post in posteriors.items()}
relative = lambda a, b: float(np.linalg.norm(plane[a] - plane[b]) / np.linalg.norm(plane[b]))
glm_ece = lambda m: calibration.ece(predictive.glm_probit_log_probs(tuned[m], x_test), y_test)
facts = {
    "plane": {name: p.tolist() for name, p in plane.items()},
    "diag_vs_kfac": relative("DIAG", "KFAC"),
    "kfac_vs_ggn": relative("KFAC", "GGN (last layer)"),
    "eigenvalues": [float(eigenvalues[-1]), float(eigenvalues[k])],
    "shapes": {f"{s:g},{t:g}": list(v) for (s, t), v in shapes.items()},
    "gamma": {name: effective_parameters(post) for name, post in posteriors.items()},
    "sizes": {name: tree.tree_size(p.subset.select(params)) for name, p in posteriors.items()},
    "map_accuracy": float(calibration.accuracy(map_test, y_test)),
    "search": {name: [float(p.scale), float(p.prior_prec)] for name, p in searched.items()},
    "sampled_tau0_accuracy": {
        name: float(calibration.accuracy(mean(sampled(posteriors[name])), y_test))
        for name in ("DIAG", "KFAC")
    },
    "accuracy": {m: float(calibration.accuracy(mean(test[m]), y_test)) for m in methods},
    "ece": {m: float(calibration.ece(mean(test[m]), y_test)) for m in methods},
    "probit_ece": {m: float(glm_ece(m)) for m in laplace_methods},
    "auroc": {m: float(ood.auroc(h_in[m], h_out[m])) for m in methods},
    "entropy_rise": {m: float(r.entropy.max() - r.entropy[0]) for m, r in sweep.items()},
    "attack_auroc": {m: float(r.detection.auroc_entropy[-1]) for m, r in sweep.items()},
}
""",
    "toy2d_uncertainty": """
history = {
    f"{reg:g}/{layer}": run.history[layer].tolist()
    for reg, run in concrete_runs.items()
    for layer in run.history
    if "concrete" in layer
}
per_method = lambda fn: {name: float(fn(m)) for name, m in maps.items()}
facts = {
    "epochs": EPOCHS,
    "rates": history,
    "bald_minus_entropy": per_method(lambda m: np.max(m["bald"] - m["entropy"])),
    "max_bald": per_method(lambda m: np.max(m["bald"])),
    "max_entropy": per_method(lambda m: np.max(m["entropy"])),
    "confidence_far": per_method(lambda m: np.exp(np.asarray(m["log_probs"]).max(-1))[far].mean()),
    "bald_near": per_method(lambda m: np.asarray(m["bald"])[near].mean()),
    "bald_far_boundary": per_method(lambda m: np.asarray(m["bald"])[far_boundary].mean()),
    "clean": clean,
    "after_bim": after,
    "after_fgm": fgm_accuracy,
    "num_points": len(x),
    "zoom": [float(zx.min()), float(zx.max()), float(x[:, 0].min()), float(x[:, 0].max())],
    "evidence_tau": {name: float(p.prior_prec) for name, p in evidence.items()},
}
""",
}


def _execute(name: str, overrides: str | None, tmp_path: Path):
    """Run the notebook (settings overridden after its ``parameters`` cell), then its facts."""
    notebook = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one settings cell tagged 'parameters'"
    if overrides is not None:
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(overrides))
    code = FACTS[name] + "\nimport json\nprint('FACTS' + json.dumps(facts))"
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    # ipc, not tcp: ipykernel warns about unencrypted tcp on stderr; absolute socket paths, since
    # the kernel runs in tmp_path
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "ipc"))
    client = NotebookClient(
        notebook, km=kernel, timeout=900, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    facts_cell = notebook.cells.pop()
    text = "".join(o.get("text", "") for o in facts_cell.outputs if o.output_type == "stream")
    facts = json.loads(text.split("FACTS", 1)[1])
    return notebook, facts


def _outputs(notebook, kind: str):
    return [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == kind or (kind == "image" and "image/png" in o.get("data", {}))
    ]


def _check_clean(notebook, min_images: int):
    stderr = [o.text for o in _outputs(notebook, "stream") if o.name == "stderr"]
    assert not stderr, f"stray warnings in the outputs: {stderr}"
    assert not _outputs(notebook, "error")
    assert len(_outputs(notebook, "image")) >= min_images


IMAGES = {"posterior_samples": 3, "laplace_tour": 8, "toy2d_uncertainty": 8}


def test_notebooks_exist():
    assert {p.stem for p in FOLDER.glob("*.ipynb")} == set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_is_executed_with_its_defaults(name):
    """What is committed is a finished default run: every code cell has run, in order, with the
    settings cell as written; the outputs hold no errors or warnings; every result cell is
    followed by markdown (the text that interprets it)."""
    notebook = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    _check_clean(notebook, IMAGES[name])
    assert not any("PLACEHOLDER" in c.source for c in notebook.cells)
    for cell, following in zip(notebook.cells, notebook.cells[1:], strict=False):
        if cell.cell_type == "code" and cell.outputs:
            assert following.cell_type == "markdown", f"a result without words: {cell.source[:80]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache = {}

    def run(name):
        if name not in cache:
            overrides = None if DEFAULTS else SMALL[name]
            cache[name] = _execute(name, overrides, tmp_path_factory.mktemp(name))
        return cache[name]

    return run


def test_posterior_samples(runs):
    notebook, f = runs("posterior_samples")
    _check_clean(notebook, IMAGES["posterior_samples"])
    # jit(vmap(apply)) over laplace.sample's draws is the library's MC predictive, linen and nnx
    assert f["vmap_error"] < 1e-4 and f["nnx_error"] < 1e-4
    assert set(f["draw_axis"]) == {f["num_samples"]}
    assert f["log_probs_shape"] == [f["num_samples"], 359, 10]
    # the vmapped evidence grid and optimize_marglik agree; the gradient changes sign
    assert abs(f["log_tau_grid_best"] - f["log_tau_optimized"]) <= f["grid_step"]
    assert f["slope_ends"][0] > 0 > f["slope_ends"][1]
    # gamma: between 0 and the number of parameters, smaller for a stronger prior, and the
    # notebook's helper (through KFAC's layer precisions) equals the formula on the eigenvalues
    # of KFAC's dense matrix
    assert 0 < f["gamma_double_tau"] < f["gamma_tuned"] < f["num_last"]
    assert f["gamma_helper"] == pytest.approx(f["gamma_eigenvalues"], rel=1e-3)
    # the conformance kit passes the layer-scalar structure and catches exactly the broken sample
    assert f["kit_ok"]
    assert len(f["broken_failures"]) == 1 and f["broken_failures"][0].startswith("sample")
    assert all(b <= h + 1e-5 for b, h in zip(f["bald"], f["entropy"], strict=True))
    if DEFAULTS:  # the markdown's statements about the default run
        acc, ece = f["accuracy"], f["ece"]
        assert acc["kfac, sampled"] < acc["kfac, linearised, probit"] - 0.1
        assert acc["last-layer kfac, sampled"] >= acc["MAP"] - 0.005
        for name in ("kfac", "last-layer kfac"):
            assert ece[f"{name}, linearised, probit"] > ece[f"{name}, linearised, MC"]
        assert f["evidence"]["diagonal"] < f["evidence"]["kfac"]
        assert f["gamma"]["diagonal"] > f["gamma"]["kfac"] > f["gamma"]["last-layer kfac"]
        # the three digits: most disagreement, most aleatoric, typical
        assert f["bald"][0] == max(f["bald"]) and f["expected"][1] == max(f["expected"])


def test_laplace_tour(runs):
    notebook, f = runs("laplace_tour")
    _check_clean(notebook, IMAGES["laplace_tour"])
    # on the plane of the last layer's GGN eigenvectors DIAG and KFAC differ, KFAC is closer
    # to the exact GGN, and the plane's eigenvalues are the GGN's
    assert f["diag_vs_kfac"] > 0.5 and f["kfac_vs_ggn"] < f["diag_vs_kfac"]
    ggn = np.asarray(f["plane"]["GGN (last layer)"])
    np.testing.assert_allclose(np.diag(ggn), f["eigenvalues"], rtol=1e-3)
    # N and tau: a larger s shrinks the Gaussian and keeps its shape; a larger tau rounds it
    shapes = (f["shapes"][k] for k in ("1,1", "4,1", "1,100"))
    (sd, ratio), (sd_s, ratio_s), (sd_t, ratio_t) = shapes
    assert sd_s < 0.6 * sd and ratio_s == pytest.approx(ratio, rel=0.1)
    assert ratio_t < 0.8 * ratio and sd_t < sd
    for name, gamma in f["gamma"].items():
        assert 0 < gamma < f["sizes"][name]
    if DEFAULTS:
        assert f["gamma"]["DIAG"] > f["gamma"]["KFAC"] > f["gamma"]["GGN (last layer)"]
        # the validation search of the sampled predictive ends at the grid's largest tau
        assert all(tau == pytest.approx(1e4) for _, tau in f["search"].values())
        assert all(a < 0.5 for a in f["sampled_tau0_accuracy"].values())
        acc, ece = f["accuracy"], f["ece"]
        assert acc["last-layer KFAC"] >= acc["MAP"] - 0.01
        assert ece["MAP + temperature"] == min(ece.values())
        assert all(f["probit_ece"][m] > ece[m] for m in ("KFAC", "last-layer KFAC"))
        assert f["auroc"]["KFAC"] > f["auroc"]["DIAG"] > f["auroc"]["MAP"]
        rise = f["entropy_rise"]
        assert rise["MAP"] > rise["KFAC"] and rise["MAP"] > rise["DIAG"]
        assert f["attack_auroc"]["MAP"] > max(f["attack_auroc"][m] for m in ("DIAG", "KFAC"))


def test_toy2d_uncertainty(runs):
    notebook, f = runs("toy2d_uncertainty")
    _check_clean(notebook, IMAGES["toy2d_uncertainty"])
    assert all(v <= 1e-5 for v in f["bald_minus_entropy"].values())
    assert f["max_bald"]["MAP"] == pytest.approx(0.0, abs=1e-6)  # one draw: no disagreement
    rates = f["rates"]
    assert all(len(r) == f["epochs"] for r in rates.values())
    # the notebook's dropout_regularizer 1 drives both rates to ~0.5; the default lets one fall
    assert all(abs(r[-1] - 0.5) < 0.02 for k, r in rates.items() if k.startswith("1/"))
    assert rates["1e-05/concrete_dropout_1"][-1] < 0.1
    # the arrows' zoom: the data range plus 0.5
    zoom_min, zoom_max, x_min, x_max = f["zoom"]
    assert zoom_min == pytest.approx(x_min - 0.5) and zoom_max == pytest.approx(x_max + 0.5)
    if DEFAULTS:
        far = f["confidence_far"]
        assert min(far["MAP"], far["MC dropout"], far["Concrete Dropout"]) > 0.9
        assert max(far[m] for m in ("DIAG Laplace", "KFAC Laplace", "last-layer KFAC", "GP")) < 0.8
        assert f["max_bald"]["Concrete Dropout"] > 0.5 * np.log(2)  # not the notebook's 0.027
        assert f["bald_near"]["last-layer KFAC"] < 0.1 < f["bald_far_boundary"]["last-layer KFAC"]
        assert all(after < f["clean"][m] for m, after in f["after_bim"].items())
        assert all(0.9 <= after <= 0.97 for after in f["after_bim"].values())
        assert f["evidence_tau"]["KFAC Laplace"] < 0.1
