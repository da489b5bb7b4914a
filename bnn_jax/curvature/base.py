"""The ``Curvature`` interface shared by every structure, and its input checks.

A curvature approximation ``C`` of the GGN/Fisher of the negative log-likelihood, summed over
the examples seen, is a NamedTuple of pure functions over an array state (optax style).
With ``scale = s`` (the post's ``N``, relative to the number of examples seen) and
``prior_prec = tau``, the posterior precision is ``s C + tau I`` (Kronecker structures also
offer the post's per-factor form, see ``kfac``). ``scale`` and ``prior_prec`` are traced
arguments: everything expensive happens in ``update``/``finalize``, so grids and gradients over
them are cheap and ``jax.vmap`` over a grid of ``prior_prec`` works.

The fitting protocol (``laplace.fit`` runs it):

  >>> state = curv.init(params)
  >>> for p in range(curv.num_passes):
  ...     for step, batch in enumerate(batches):            # the same data on every pass
  ...         state = curv.update(state, params, batch, jax.random.fold_in(key, step))
  ...     state = curv.finalize(state)
  >>> check_finite(state)

Relation to per-example means: ``C`` is a sum over ``state.num_data`` examples. Libraries
that use the mean ``F = C / num_data`` with a multiplier ``N`` (laplace-torch, the post) have
``N F = scale C`` for ``scale = N / num_data``; ``scale = 1`` with ``prior_prec`` equal to the
weight decay's Gaussian prior precision is the textbook Laplace approximation.

Where inputs are checked: factories check their static options; ``update`` checks the batch
shapes at trace time and, when the values are concrete (un-jitted call), labels out of range
and non-finite targets; ``precision_mvp``/``solve``/``sample``/``log_det`` check ``scale > 0``
and ``prior_prec >= 0`` when these are concrete; ``finalize`` (when run outside ``jit``) and
``check_finite`` raise ``ValueError`` for non-finite curvature. Traced values are not checked:
validate them at your own public boundary (``laplace.fit`` does).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from bnn_jax import checks
from bnn_jax.types import Batch, Key, Params

__all__ = ["Curvature", "check_finite", "check_hyperparameters", "with_checks"]

State = Any


class Curvature(NamedTuple):
    """A curvature approximation as pure functions (see the module docstring).

    Attributes:
      init: ``params -> state``: zero accumulators for the selected parameters.
      update: ``(state, params, batch, key) -> state``: add this batch's sum over examples
        (``key`` draws the MC Fisher's targets; unused by other Fisher types).
      finalize: ``state -> state``: eigendecompositions etc., once after each pass.
      precision_mvp: ``(state, v, scale, prior_prec) -> (scale C + prior_prec I) v``.
      solve: ``(state, v, scale, prior_prec) -> (scale C + prior_prec I)^{-1} v``.
      sample: ``(state, key, scale, prior_prec) -> z ~ N(0, (scale C + prior_prec I)^{-1})``.
      log_det: ``(state, scale, prior_prec) -> log det(scale C + prior_prec I)``.
      to_dense: ``state -> C`` as a ``[P, P]`` matrix in ``tree.ravel`` order of ``v``.
      num_passes: how many passes over the data the fit must make.

    ``params`` are the full model parameters; ``v`` and ``z`` are pytrees of the selected
    parameters (``subset.select(params)``). For ``prior="per_factor"`` Kronecker structures,
    "``scale C + prior_prec I``" stands for their per-factor precision.
    """

    init: Callable[[Params], State]
    update: Callable[[State, Params, Batch, Key], State]
    finalize: Callable[[State], State]
    precision_mvp: Callable[[State, Params, Any, Any], Params]
    solve: Callable[[State, Params, Any, Any], Params]
    sample: Callable[[State, Key, Any, Any], Params]
    log_det: Callable[[State, Any, Any], jax.Array]
    to_dense: Callable[[State], jax.Array]
    num_passes: int = 1


def check_hyperparameters(scale: Any, prior_prec: Any) -> None:
    """Raise ``ValueError`` unless ``scale > 0`` and ``prior_prec >= 0`` (finite); traced
    values are not checked."""
    s = checks.concrete(scale)
    if s is not None and not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"scale: expected a finite value > 0, got {s}")
    t = checks.concrete(prior_prec)
    if t is not None and not (np.all(np.isfinite(t)) and np.all(t >= 0)):
        raise ValueError(f"prior_prec: expected a finite value >= 0, got {t}")


def check_finite(state: State) -> None:
    """Raise ``ValueError`` if a floating-point array of ``state`` holds NaN or inf (call it
    outside ``jit`` after each pass; ``finalize`` does so when it runs un-jitted)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    for path, leaf in flat:
        value = checks.concrete(leaf)
        if value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        if not np.all(np.isfinite(value)):
            raise ValueError(
                "curvature: non-finite values (NaN or inf) in the state at "
                f"{jax.tree_util.keystr(path)}; check the model outputs and the data"
            )


def with_checks(curvature: Curvature) -> Curvature:
    """Wrap a curvature's functions with the checks described in the module docstring, and
    compile ``init`` (it only traces shapes and allocates zeros; run op by op, every new
    shape would cost a separate compilation)."""

    def finalize(state):
        state = curvature.finalize(state)
        check_finite(state)
        return state

    def precision_mvp(state, v, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.precision_mvp(state, v, scale, prior_prec)

    def solve(state, v, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.solve(state, v, scale, prior_prec)

    def sample(state, key, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.sample(state, key, scale, prior_prec)

    def log_det(state, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.log_det(state, scale, prior_prec)

    return curvature._replace(
        init=jax.jit(curvature.init),
        finalize=finalize,
        precision_mvp=precision_mvp,
        solve=solve,
        sample=sample,
        log_det=log_det,
    )
