"""The post's section 1.3 on a network small enough to look at: the exact GGN of a tiny MLP next to
its block-diagonal, diagonal and Kronecker-factored (KFAC) approximations, one colour scale, each
with its relative Frobenius error, and the Kronecker product drawn as the post explains it.

All four matrices use the exact GGN (``curvature.exact_fisher``), so they differ only by their
structure: block-diagonal keeps each layer's block of the exact GGN and drops the cross-layer
blocks; diagonal keeps only the diagonal; KFAC replaces each layer block
``sum_n (a_n a_n^T) ⊗ G_n`` by ``(sum_n a_n a_n^T) ⊗ (sum_n G_n) / n`` (``E[A ⊗ G]`` by
``E[A] ⊗ E[G]``: exact for one data point, an approximation for more).

Run ``python -m experiments.structures [--out results/structures]``.
"""

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import curvature, losses, models, plotting, training
from bnn_jax.testing import exact_ggn
from bnn_jax.types import Batch
from experiments import cli, common
from experiments.cache import Cache

STRUCTURES = {
    "block-diagonal": curvature.block_diagonal,
    "diagonal (DIAG)": curvature.diagonal,
    "KFAC": curvature.kfac,
}


def get_config(quick: bool = False) -> dict:
    del quick  # the figure is tiny either way
    return {
        "seed": 0,
        "structures_inputs": 4,
        "structures_widths": [5],
        "structures_classes": 3,
        "structures_points": 12,
        "structures_epochs": 200,
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for unknown keys or sizes that are not positive integers."""
    common.check_config(config, get_config())
    for key in ("structures_inputs", "structures_classes", "structures_points"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config[{key!r}]: expected an integer >= 1, got {value!r}")
    widths = config["structures_widths"]
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"config['structures_widths']: expected integers >= 1, got {widths!r}")


def _data(config: dict, key) -> Batch:
    """``structures_points`` inputs around one random centre per class (labels cycle)."""
    d, c, n = config["structures_inputs"], config["structures_classes"], config["structures_points"]
    k1, k2 = jax.random.split(key)
    y = jnp.arange(n) % c
    centres = 2.0 * jax.random.normal(k1, (c, d))
    return Batch(centres[y] + jax.random.normal(k2, (n, d)), y)


def matrices(config: dict) -> tuple[dict[str, np.ndarray], list[int]]:
    """``({name: [P, P]}, layer boundaries)``: the exact GGN of the trained tiny MLP (prior
    precision 1) at its MAP and each structure's ``to_dense``, in ``tree.ravel`` order."""
    key = jax.random.key(config["seed"])
    batch = _data(config, jax.random.fold_in(key, 1))
    model = models.MLP(tuple(config["structures_widths"]), config["structures_classes"])
    trained = training.train(
        model,
        np.asarray(batch.x),
        np.asarray(batch.y),
        key=jax.random.fold_in(key, 2),
        epochs=config["structures_epochs"],
        batch_size=config["structures_points"],
        optimizer=optax.adam(1e-2),
        prior_prec=1.0,
        progress=False,
    )
    params = trained.variables["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    likelihood = losses.categorical()
    out = {"exact GGN": exact_ggn(apply_fn, likelihood, params, batch)}
    for name, factory in STRUCTURES.items():
        curv = factory(apply_fn, likelihood, fisher=curvature.exact_fisher())

        @jax.jit
        def fitted(params, batch, curv=curv):  # one compiled call instead of eager ops
            state = curv.update(curv.init(params, batch.x[:1]), params, batch, key)
            return curv.to_dense(curv.finalize(state))

        out[name] = np.asarray(fitted(params, batch))
    sizes = np.cumsum([leaf.size for leaf in _layers(params)])
    return out, [int(s) for s in sizes[:-1]]


def _layers(params) -> list[np.ndarray]:
    """Each layer's parameters raveled (layers in ``tree.ravel`` order: sorted module names)."""
    return [
        jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(params[k])]) for k in sorted(params)
    ]


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """The curvature-structure and Kronecker-product figures; returns the relative errors."""
    del fitted  # a tiny network of its own
    check(config)

    def compute() -> dict:
        mats, boundaries = matrices(config)
        return {"matrices": mats, "boundaries": np.asarray(boundaries)}

    stored = Cache(Path(out_dir) / "cache").stage("structures", config, compute)
    mats = {name: np.asarray(stored["matrices"][name]) for name in ("exact GGN", *STRUCTURES)}
    boundaries = [int(b) for b in stored["boundaries"]]
    exact = mats["exact GGN"]
    errors = {name: plotting.relative_error(m, exact) for name, m in mats.items() if m is not exact}
    widths = [
        config["structures_inputs"],
        *config["structures_widths"],
        config["structures_classes"],
    ]
    size = exact.shape[0]
    edges = [0, *boundaries, size]
    blocks = [b - a for a, b in itertools.pairwise(edges)]
    counts = {  # numbers each structure stores (KFAC: A of (inputs + 1)^2, G of outputs^2)
        "exact GGN": size * size,
        "block-diagonal": sum(b * b for b in blocks),
        "diagonal (DIAG)": size,
        "KFAC": sum((a + 1) ** 2 + b**2 for a, b in itertools.pairwise(widths)),
    }
    net = "-".join(str(w) for w in widths)
    report.section("Curvature structures (blog section 1.3)")
    report.text(
        f"A {net} ReLU MLP trained on {config['structures_points']} points (prior precision 1) "
        f"has {size} parameters, so its exact GGN is a {size} x {size} matrix. All structures "
        "below use the exact GGN, so they differ only by what they keep."
    )
    best = min(errors, key=errors.get)
    order = sorted(errors, key=errors.get)
    caption = (
        "The exact GGN and its approximations on one symmetric-log colour scale (white = 0; "
        "black lines separate the layers). Relative Frobenius errors ||M - G|| / ||G||: "
        + ", ".join(f"{n} {errors[n]:.2f} ({counts[n]} numbers)" for n in order)
        + f", against {counts['exact GGN']} for the exact GGN. {best} is closest here"
    )
    if errors["block-diagonal"] > 0:
        share = errors["block-diagonal"] ** 2
        caption += (
            f"; the cross-layer blocks that every layer-wise structure drops hold {share:.0%} "
            "of the GGN's squared Frobenius norm"
        )
    report.figure(
        "curvature_structures",
        plotting.curvature_structures(mats, boundaries=boundaries),
        caption + ".",
    )
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    b = np.array([[1.0, 2.0], [3.0, 4.0]])
    report.figure(
        "kronecker_product",
        plotting.kronecker_product(a, b),
        "The Kronecker product as the post draws it: each coloured entry a_ij of A multiplies the "
        "grey matrix B and the block a_ij B takes a_ij's place, so the 4 x 4 result (16 numbers) "
        "is stored as two 2 x 2 factors (8 numbers), and (A ⊗ B)^-1 = A^-1 ⊗ B^-1.",
    )
    return {
        "num_params": size,
        "network": net,
        "relative_error": errors,
        "stored_numbers": counts,
    }


main = common.alone_main("bnn_jax: curvature structures", "structures", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="structures")
