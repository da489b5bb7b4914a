"""The README's "Laplace in five lines" code runs as written."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp

from bnn_jax import curvature, data, laplace, losses, models, predictive, training


def test_laplace_in_five_lines_runs():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Laplace in five lines", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    ds = data.load("digits", seed=0, num_train=200)
    namespace = {
        "jax": jax,
        "jnp": jnp,
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
    assert namespace["log_probs"].shape == (30, len(ds.x_test), ds.num_classes)
    assert jax.tree.leaves(namespace["thetas"])[0].shape[0] == 30
    assert float(namespace["post"].prior_prec) > 0
