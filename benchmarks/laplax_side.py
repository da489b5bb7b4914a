"""bnn_jax side by side with laplax (the JAX Laplace library), on the same trained weights.

``python -m benchmarks.laplax_side [--quick] --out benchmarks/laplax.json`` trains one MLP MAP,
then times, in one process and one run, every operation both libraries provide and checks
that the results agree where the definitions do:

- ``full``: the dense GGN ``sum_n J_n^T H_n J_n`` (ours: ``curvature.dense`` with the exact
  Fisher, per-example Jacobian products; laplax: ``estimate_curvature("full")``, one
  GGN-vector product over the data per parameter). Equal matrices.
- ``diagonal``: its diagonal (ours: ``curvature.diagonal``, squared per-example factors;
  laplax: ``P`` GGN-vector products against basis vectors). Equal.
- ``low_rank``: top-``k`` eigenpairs (ours: ``curvature.low_rank``, randomised subspace
  iteration, 4 iterations, plus the exact diagonal; laplax: Lanczos). The top eigenvalues are
  compared with those of the dense GGN; the posteriors differ by definition (ours keeps the exact
  diagonal of the remainder, laplax's adds only the prior there), so no predictive is
  compared.
- ``glm_probit_*``: the linearised predictive with the probit (mean-field-0) link,
  ``softmax(mu / sqrt(1 + pi/8 diag J Sigma J^T))``, for the full and the diagonal posterior
  (laplax: ``set_lin_pushforward`` with ``lin_special_pred_act``). Equal probabilities.
- ``marglik``: the Laplace log marginal likelihood on a grid of prior precisions, and its
  argmax (laplax: ``marginal_log_likelihood`` per grid point, the loop of its
  ``grid_search``; ours: one ``vmap`` over the grid, and ``optimize_marglik`` (Adam)).
  laplax's log-likelihood term is ``-L / (2 sigma)`` (written for a squared error); with
  ``sigma = 1/2`` and a softmax cross-entropy loss it is our ``-NLL``, and the values agree.

``ratio = laplax seconds / ours`` (above 1: bnn_jax is faster); medians of repeats after a
warm-up, as in ``benchmarks.run``, with LAPACK on one thread for both (``main``). The load
average of the machine is recorded at start and end.
"""

import argparse
import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import threadpoolctl
from jax.flatten_util import ravel_pytree

from benchmarks.timing import host, measure
from bnn_jax import curvature, data, laplace, losses, models, predictive, training, tree


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the comparison (small enough for laplax's dense and diagonal estimates, which
    cost one GGN-vector product over the data per parameter).

    Attributes:
      num_train, num_test, input_dim, num_classes: synthetic data, ``x ~ U[0, 1]`` with labels
        of a random linear teacher.
      widths: hidden widths of the MLP.
      epochs: training epochs of the MAP.
      prior_prec: the training prior precision and the posteriors' ``tau``.
      rank: eigenpairs of the low-rank structures.
      grid: prior precisions of the marginal-likelihood search (log-spaced, both sides).
      marglik_steps: Adam steps of ``optimize_marglik``.
      repeats, budget_s: timing (see ``benchmarks.timing.measure``).
      seed: data, initialisation and keys.
    """

    num_train: int = 1000
    num_test: int = 200
    input_dim: int = 64
    num_classes: int = 10
    widths: tuple[int, ...] = (32,)
    epochs: int = 20
    prior_prec: float = 1.0
    rank: int = 20
    grid: tuple[float, float, int] = (-2.0, 4.0, 60)
    marglik_steps: int = 100
    repeats: int = 3
    budget_s: float = 5.0
    seed: int = 0


def quick_config() -> Config:
    return Config(num_train=300, num_test=50, widths=(16,), epochs=5, rank=8, repeats=1)


def make_problem(config: Config):
    """Synthetic data and a trained MAP: ``(apply_fn, params, (x, y), x_test)``."""
    rng = np.random.default_rng(config.seed)
    teacher = rng.standard_normal((config.input_dim, config.num_classes)).astype(np.float32)
    n = config.num_train + config.num_test
    x = rng.random((n, config.input_dim), dtype=np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32)
    model = models.MLP(config.widths, config.num_classes)
    key = jax.random.key(config.seed)
    result = training.train(
        model,
        x[: config.num_train],
        y[: config.num_train],
        key=key,
        epochs=config.epochs,
        batch_size=100,
        optimizer=optax.adam(1e-2),
        prior_prec=config.prior_prec,
        progress=False,
    )
    apply_fn = models.make_apply_fn(model, result.variables)
    train = (x[: config.num_train], y[: config.num_train])
    return apply_fn, result.variables["params"], train, x[config.num_train :]


def our_curvature(structure: str, apply_fn, config: Config):
    """The exact-GGN curvature of one structure (the one place ours are built)."""
    lik, fisher = losses.categorical(), curvature.exact_fisher()
    if structure == "full":
        return curvature.dense(apply_fn, lik, fisher=fisher)
    if structure == "diagonal":
        return curvature.diagonal(apply_fn, lik, fisher=fisher)
    key = jax.random.key(config.seed)
    return curvature.low_rank(
        apply_fn, lik, fisher=fisher, rank=config.rank, key=key, num_iterations=4
    )


def our_fit(curv, apply_fn, params, train, config: Config):
    """``laplace.fit`` over the training data in batches of 500 (the one place it is called)."""
    return laplace.fit(
        curv,
        params,
        data.Batches(*train, 500),
        key=jax.random.key(config.seed),
        prior_prec=config.prior_prec,
        progress=False,
    )


def _cross_entropy(logits, labels):
    """Summed softmax cross-entropy (laplax's ``LossFn.CROSS_ENTROPY`` is a sigmoid one)."""
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))


class _Laplax:
    """laplax's operations on our MAP (imported here: laplax is an optional dependency)."""

    def __init__(self, apply_fn, params, train, config: Config):
        from laplax.curv.cov import estimate_curvature, set_posterior_fn
        from laplax.curv.ggn import create_ggn_mv
        from laplax.enums import LossFn
        from laplax.eval.likelihood import marginal_log_likelihood
        from laplax.eval.pushforward import (
            lin_pred_mean,
            lin_pred_var,
            lin_setup,
            lin_special_pred_act,
            set_lin_pushforward,
        )

        self.model_fn = lambda input, params: apply_fn(params, input[None])[0]
        self.params, self.config = params, config
        self.data = {"input": jnp.asarray(train[0]), "target": jnp.asarray(train[1])}
        self.ggn_mv = create_ggn_mv(self.model_fn, params, self.data, loss_fn=LossFn.CROSS_ENTROPY)
        self._estimate, self._posterior_fn = estimate_curvature, set_posterior_fn
        self._marglik, self._lin = marginal_log_likelihood, set_lin_pushforward
        self._pushforward = [
            lin_setup,
            lin_pred_mean,
            lin_pred_var,
            functools.partial(lin_special_pred_act, special_pred_type="mean_field_0"),
        ]

    def curvature(self, kind: str):
        options = {"key": jax.random.key(self.config.seed), "rank": self.config.rank}
        extra = options if kind == "lanczos" else {}
        return self._estimate(kind, mv=self.ggn_mv, layout=self.params, **extra)

    def probit_fn(self, kind: str):
        """A jitted ``(estimate, x) -> probabilities``: the posterior (laplax computes its
        covariance from the precision) and the pushforward of every input, compiled once
        with the estimate as an argument (closed over, it would be a constant that XLA
        folds at every compilation)."""

        def probit(estimate, x):
            posterior_fn = self._posterior_fn(kind, estimate, layout=self.params)
            predict = self._lin(
                self.model_fn,
                self.params,
                posterior_fn,
                {"prior_prec": self.config.prior_prec},
                pushforward_fns=self._pushforward,
            )
            return jax.vmap(lambda xi: predict(xi)["special_pred_act"])(x)

        return jax.jit(probit)

    def marglik_fn(self):
        """A jitted ``(estimate, tau) -> log marginal likelihood`` of the full posterior."""

        def value(estimate, data, tau):
            return self._marglik(
                estimate,
                {"prior_prec": tau, "sigma": 0.5},
                data,
                self.model_fn,
                self.params,
                _cross_entropy,
                "full",
                vmap_over_data=True,
            )

        jitted = jax.jit(value)
        return lambda estimate, tau: jitted(estimate, self.data, tau)


def marglik_grid(value_fn, estimate, grid) -> np.ndarray:
    """The loop of laplax's ``grid_search``: one evaluation per prior precision."""
    return np.array([float(value_fn(estimate, t)) for t in grid])


def _agreement(ours, theirs) -> dict:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(float(np.abs(theirs).max()), 1e-30)
    return {
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "max_rel_diff": float(np.abs(ours - theirs).max() / scale),
    }


def run(config: Config) -> dict:
    """Every side-by-side case; ``{"machine", "cases", "num_params", "wall_s"}``."""
    start = time.perf_counter()
    load_start = list(os.getloadavg())
    apply_fn, params, train, x_test = make_problem(config)
    theirs = _Laplax(apply_fn, params, train, config)
    timed = functools.partial(
        measure, repeats=config.repeats, budget_s=config.budget_s, sync=jax.block_until_ready
    )
    cases, posteriors, estimates = [], {}, {}

    def case(name, ours_fn, theirs_fn, compare, note):
        ours_t, theirs_t = timed(ours_fn), timed(theirs_fn)
        ours_value, theirs_value = ours_fn(), theirs_fn()
        entry = {
            "name": name,
            "ours_s": ours_t.median_s,
            "laplax_s": theirs_t.median_s,
            "ratio": theirs_t.median_s / ours_t.median_s,
            "ours_warmup_s": ours_t.warmup_s,
            "laplax_warmup_s": theirs_t.warmup_s,
            "note": note,
            **compare(ours_value, theirs_value),
        }
        cases.append(entry)
        return ours_value, theirs_value

    curvatures = {k: our_curvature(k, apply_fn, config) for k in ("full", "diagonal", "low")}
    fit = lambda kind: our_fit(curvatures[kind], apply_fn, params, train, config)
    dense_ggn = None
    for ours_kind, laplax_kind in (("full", "full"), ("diagonal", "diagonal")):
        post, estimate = case(
            f"{ours_kind}_ggn",
            lambda k=ours_kind: fit(k),
            lambda k=laplax_kind: theirs.curvature(k),
            lambda p, e, k=ours_kind: _agreement(
                p.curvature.to_dense(p.state) if k == "full" else ravel_pytree(p.state.diagonal)[0],
                e,
            ),
            "same definition (exact GGN summed over the data): equal",
        )
        posteriors[ours_kind], estimates[ours_kind] = post, estimate
        if ours_kind == "full":
            dense_ggn = np.asarray(estimate, np.float64)

    exact = np.sort(np.linalg.eigvalsh(dense_ggn))[::-1][: config.rank]

    def top_eigenvalues(post, lanczos):
        ours_top = np.sort(np.asarray(post.state.eigenvalues))[::-1]
        theirs_top = np.sort(np.asarray(lanczos.S))[::-1]
        return {
            "ours_vs_exact_rel": float(np.abs(ours_top - exact).max() / exact[0]),
            "laplax_vs_exact_rel": float(np.abs(theirs_top - exact).max() / exact[0]),
            **_agreement(ours_top, theirs_top),
        }

    case(
        "low_rank_ggn",
        lambda: fit("low"),
        lambda: theirs.curvature("lanczos"),
        top_eigenvalues,
        f"top {config.rank} eigenvalues against the dense GGN's; posteriors differ by "
        "definition (ours: exact diagonal of the remainder; laplax: prior only)",
    )
    x = jnp.asarray(x_test)
    probit_fns = {kind: theirs.probit_fn(kind) for kind in ("full", "diagonal")}
    for kind in ("full", "diagonal"):
        case(
            f"glm_probit_{kind}",
            lambda k=kind: predictive.glm_probit_log_probs(posteriors[k], x, centred=False),
            lambda k=kind: probit_fns[k](estimates[k], x),
            lambda ours, probs: _agreement(np.exp(ours), probs),
            f"{len(x)} inputs, probit / mean-field-0 link: equal probabilities",
        )

    grid = np.logspace(*config.grid[:2], config.grid[2]).astype(np.float32)
    their_marglik = theirs.marglik_fn()
    post = posteriors["full"]
    # the posterior is an argument, not a constant XLA could fold into the program
    ours_grid = jax.jit(
        jax.vmap(lambda p, t: laplace.log_marginal_likelihood(p, prior_prec=t), (None, 0))
    )

    def compare_grid(ours, values):
        out = _agreement(ours, values)
        out["argmax_ours"] = float(grid[int(np.argmax(ours))])
        out["argmax_laplax"] = float(grid[int(np.argmax(values))])
        return out

    case(
        "marglik_grid",
        lambda: ours_grid(post, jnp.asarray(grid)),
        lambda: marglik_grid(their_marglik, estimates["full"], grid),
        compare_grid,
        f"full GGN, {len(grid)} prior precisions; laplax with sigma=1/2 and softmax "
        "cross-entropy (its default halves the NLL and uses a sigmoid loss): equal",
    )
    tuned = timed(
        lambda: (
            laplace.optimize_marglik(post, steps=config.marglik_steps, learning_rate=0.1)[
                0
            ].prior_prec
        )
    )
    best = float(
        laplace.optimize_marglik(post, steps=config.marglik_steps, learning_rate=0.1)[0].prior_prec
    )
    cases[-1] |= {
        "ours_adam_s": tuned.median_s,
        "ours_adam_prior_prec": best,
        "adam_steps": config.marglik_steps,
    }
    return {
        "machine": {
            **host(load_start),
            "devices": [str(d) for d in jax.devices()],
            "laplax": _version("laplax"),
            "jax": jax.__version__,
        },
        "config": dataclasses.asdict(config),
        "num_params": tree.tree_size(params),
        "cases": cases,
        "wall_s": time.perf_counter() - start,
    }


def _version(package):
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def markdown(results: dict) -> str:
    lines = [
        "| operation | bnn_jax (s) | laplax (s) | ratio | max rel. difference | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for c in results["cases"]:
        note = c["note"]
        if "ours_vs_exact_rel" in c:
            note += (
                f"; largest error against the exact eigenvalues, relative to the top one: "
                f"ours {c['ours_vs_exact_rel']:.1e}, laplax {c['laplax_vs_exact_rel']:.1e}"
            )
        if "argmax_ours" in c:
            note += (
                f"; argmax tau: ours {c['argmax_ours']:.3g}, laplax {c['argmax_laplax']:.3g}; "
                f"optimize_marglik (Adam, {c['adam_steps']} steps): tau "
                f"{c['ours_adam_prior_prec']:.3g} in {c['ours_adam_s']:.3g} s"
            )
        lines.append(
            f"| {c['name']} | {c['ours_s']:.3g} | {c['laplax_s']:.3g} | {c['ratio']:.2f} | "
            f"{c['max_rel_diff']:.1e} | {note} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    # LAPACK (OpenBLAS) on one thread for both sides: its threads spin while they wait for a
    # core, which on a shared machine multiplies the time of small eigendecompositions
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        results = run(quick_config() if args.quick else Config())
    if args.out:
        from benchmarks.run import _write_json

        _write_json(args.out, results)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
