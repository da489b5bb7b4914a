"""The README's examples run as written: "Laplace in five lines", the three ways in (linen, nnx,
your own parameters) and the regression example."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bnn_jax import (
    calibration,
    curvature,
    data,
    laplace,
    losses,
    models,
    predictive,
    training,
    uncertainty,
)


def test_laplace_in_five_lines_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Laplace in five lines", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the third block saves a posterior
    ds = data.load("digits", seed=0, num_train=200)
    namespace = {
        "jax": jax,
        "jnp": jnp,
        "optax": optax,
        "calibration": calibration,
        "curvature": curvature,
        "data": data,
        "laplace": laplace,
        "losses": losses,
        "models": models,
        "predictive": predictive,
        "training": training,
        "ds": ds,
        "model": models.MLP((32,), ds.num_classes),
        "key": jax.random.key(0),
        "x_val": ds.x_val,
        "y_val": ds.y_val,
    }
    for block in blocks:
        exec(block, namespace)
    assert namespace["log_probs"].shape == (len(ds.x_test), ds.num_classes)
    assert jax.tree.leaves(namespace["thetas"])[0].shape[0] == 30
    assert float(namespace["post"].prior_prec) > 0
    assert (tmp_path / "kfac.msgpack").exists()
    assert jax.tree.leaves(namespace["prior"])[0].shape == ()


def test_writing_a_curvature_approximation_runs_and_conforms():
    """The README's new structure passes the conformance kit and fits with ``laplace.fit``."""
    import numpy as np

    from bnn_jax import testing

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Writing a curvature approximation", 1)[1].split("\n## ", 1)[0]
    assert len(section.strip().splitlines()) < 40
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace = {"curvature": curvature, "jnp": jnp, "testing": testing, "models": models}
    namespace |= {"np": np, "key": jax.random.key(0)}
    exec(block, namespace)
    assert namespace["report"].ok and "layer_precisions" in str(namespace["report"])
    model = models.MLP((5,), 3)
    x, y = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32), np.arange(12) % 3
    params = models.init(model, jax.random.key(1), (4,))["params"]
    apply_fn = models.make_apply_fn(model, {"params": params})
    curv = namespace["my_kfac"](apply_fn, losses.categorical(), fisher=curvature.mc_fisher())
    post = laplace.fit(curv, params, data.Batches(x, y, 4), key=jax.random.key(2), prior_prec=1.0)
    assert predictive.glm_probit_log_probs(post, x).shape == (12, 3)
    assert predictive.local_log_probs(post, x, key=jax.random.key(3), num_samples=2).shape[0] == 2


def _blocks(title: str) -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_three_ways_in_share_one_recipe_that_keeps_the_map_accuracy():
    """linen, nnx and plain-jax.numpy entries each run with the shared recipe; the linearised
    predictive (MC link) keeps the MAP's accuracy (the weight-sampling one does not, issue 14)."""
    blocks = _blocks("Three ways in: linen, nnx or your own parameters")
    assert len(blocks) == 4
    ds = data.load("digits", seed=0, num_train=200)
    for entry in blocks[:3]:
        namespace = {
            "jax": jax,
            "jnp": jnp,
            "nnx": nnx,
            "optax": optax,
            "curvature": curvature,
            "data": data,
            "laplace": laplace,
            "losses": losses,
            "models": models,
            "predictive": predictive,
            "training": training,
            "uncertainty": uncertainty,
            "ds": ds,
            "key": jax.random.key(0),
        }
        exec(entry, namespace)
        map_log_probs = jax.nn.log_softmax(namespace["apply_fn"](namespace["params"], ds.x_test))
        exec(blocks[3], namespace)
        log_probs = namespace["log_probs"]
        assert log_probs.shape == (len(ds.x_test), ds.num_classes)
        map_accuracy = float(calibration.accuracy(map_log_probs, ds.y_test))
        accuracy = float(calibration.accuracy(log_probs, ds.y_test))
        assert accuracy >= map_accuracy - 0.01, (entry.splitlines()[0], accuracy, map_accuracy)
        assert float(namespace["post"].prior_prec) != 1.0  # tuned by the evidence


def test_regression_example_learns_the_noise_and_widens_the_band_in_the_gap():
    (block,) = _blocks("Regression")
    namespace: dict = {}
    exec(block, namespace)
    x_test, variance = namespace["x_test"][:, 0], namespace["variance"][:, 0]
    sd = lambda at: float(jnp.sqrt(variance[jnp.argmin(jnp.abs(x_test - at))]))
    assert abs(float(namespace["noise"]) - 0.1) < 0.015
    assert sd(2.0) < 0.15 and sd(-2.0) < 0.15  # on the data: about the noise
    assert sd(0.0) > 5 * sd(2.0)  # in the gap (-1, 1)
