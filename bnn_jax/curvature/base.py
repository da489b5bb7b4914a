"""The ``Curvature`` interface shared by every structure, and its input checks.

A curvature approximation ``C`` of the GGN/Fisher of the negative log-likelihood, summed over
the examples seen, is a NamedTuple of pure functions over an array state (optax style), plus
what it was built for (``apply_fn``, ``likelihood``, ``subset``: static, so ``laplace.fit``
takes nothing twice). With ``scale = s`` (the post's ``N``, relative to the number of examples
seen) and ``prior_prec = tau``, the posterior precision is ``s C + tau I`` (Kronecker
structures also offer the post's per-factor form, see ``kron``). ``scale`` and ``prior_prec``
are traced arguments: everything expensive happens in ``update``/``finalize``, so grids and
gradients over them are cheap and ``jax.vmap`` over a grid of ``prior_prec`` works.

The fitting protocol (``laplace.fit`` runs it):

  >>> state = curv.init(params, first_batch.x)   # shapes and dtype of the inputs only
  >>> for p in range(curv.num_passes):
  ...     for step, batch in enumerate(batches):            # the same data on every pass
  ...         state = curv.update(state, params, batch, jax.random.fold_in(key, step))
  ...     state = curv.finalize(state)
  >>> check_finite(state)

Relation to per-example means: ``C`` is a sum over ``state.num_data`` examples. Libraries
that use the mean ``F = C / num_data`` with a multiplier ``N`` (laplace-torch, the post) have
``N F = scale C`` for ``scale = N / num_data``; ``scale = 1`` with ``prior_prec`` equal to the
weight decay's Gaussian prior precision is the textbook Laplace approximation.

Where inputs are checked (``with_checks`` adds these to any structure): ``update`` checks the
batch shapes at trace time and, when the values are concrete (un-jitted call), labels out of
range and non-finite targets; ``precision_mvp`` checks ``scale > 0`` and ``prior_prec >= 0``
and ``solve``/``sample``/``log_det`` check ``scale > 0`` and ``prior_prec > 0`` when these are
concrete (the inverse of ``s C`` alone does not exist: directions the data do not constrain,
such as blank pixels, would have infinite variance); ``finalize`` (when run outside ``jit``)
and ``check_finite`` raise ``ValueError`` for non-finite curvature. Traced values are not
checked: validate them at your own public boundary (``laplace`` does).

**Layer-wise prior precision.** ``prior_prec`` is a scalar or a pytree shaped like the selected
parameters (``subset.select(params)``) holding one scalar per leaf, e.g. one value per layer
(``laplace.layerwise_prior``); then ``scale C + prior_prec I`` stands for ``scale C +
diag(tau)`` with ``tau`` constant on each leaf. ``prior_per_leaf`` and ``prior_vector`` turn
either form into per-leaf values or a flat ``[P]`` vector.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.curvature.subset import Subset
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params

__all__ = [
    "Curvature",
    "check_finite",
    "check_hyperparameters",
    "example_inputs",
    "is_scalar_prior",
    "prior_per_leaf",
    "prior_vector",
    "with_checks",
]

State = Any


class Curvature(NamedTuple):
    """A curvature approximation as pure functions (see the module docstring).

    Attributes:
      init: ``(params, x) -> state``: zero accumulators for the selected parameters; ``x`` is
        an example batch of inputs (an array or ``jax.ShapeDtypeStruct``; only its shape and
        dtype matter), from which layer-wise structures find the Dense/Conv layers.
      update: ``(state, params, batch, key) -> state``: add this batch's sum over examples
        (``key`` draws the MC Fisher's targets; unused by other Fisher types).
      finalize: ``state -> state``: eigendecompositions etc., once after each pass.
      precision_mvp: ``(state, v, scale, prior_prec) -> (scale C + prior_prec I) v``.
      solve: ``(state, v, scale, prior_prec) -> (scale C + prior_prec I)^{-1} v``.
      sample: ``(state, key, scale, prior_prec) -> z ~ N(0, (scale C + prior_prec I)^{-1})``.
      log_det: ``(state, scale, prior_prec) -> log det(scale C + prior_prec I)``.
      to_dense: ``state -> C`` as a ``[P, P]`` matrix in ``tree.ravel`` order of ``v``.
      apply_fn: ``apply_fn(params, x) -> outputs``, the model it was built for (static).
      likelihood: the likelihood it was built for (``bnn_jax.losses``; static).
      subset: the parameters it covers (``curvature.subset``; static).
      num_passes: how many passes over the data the fit must make.
      layer_precisions: optional capability, ``None`` when the structure cannot provide it:
        ``(state, scale, prior_prec) -> layerwise.LayerPrecisions``, the precision of every
        Dense/Conv block as ``Q diag(D) Q^T`` in a Kronecker eigenbasis ``Q = Q_A ⊗ Q_G``
        (or the identity) and a diagonal precision for every other leaf. The linearised and
        local-reparameterisation predictives use it instead of per-input Jacobians.

    ``params`` are the full model parameters; ``v`` and ``z`` are pytrees of the selected
    parameters (``subset.select(params)``). For Kronecker structures with
    ``kron.per_factor_prior()``, "``scale C + prior_prec I``" stands for their per-factor
    precision.
    """

    init: Callable[[Params, Any], State]
    update: Callable[[State, Params, Batch, Key], State]
    finalize: Callable[[State], State]
    precision_mvp: Callable[[State, Params, Any, Any], Params]
    solve: Callable[[State, Params, Any, Any], Params]
    sample: Callable[[State, Key, Any, Any], Params]
    log_det: Callable[[State, Any, Any], jax.Array]
    to_dense: Callable[[State], jax.Array]
    apply_fn: ApplyFn
    likelihood: Likelihood
    subset: Subset
    num_passes: int = 1
    layer_precisions: Callable[[State, Any, Any], Any] | None = None


def is_scalar_prior(prior_prec: Any) -> bool:
    """Whether ``prior_prec`` is one value (a pytree leaf) rather than a pytree of per-leaf
    values."""
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(prior_prec))


def prior_per_leaf(prior_prec: Any, layout) -> list:
    """The prior precision of each leaf of ``layout`` (a ``Layout`` of the selected
    parameters): the scalar repeated, or the pytree's leaves in the same order."""
    if is_scalar_prior(prior_prec):
        return [prior_prec] * len(layout.paths)
    leaves = jax.tree.leaves(prior_prec)
    if len(leaves) != len(layout.paths):
        raise ValueError(
            f"prior_prec: expected a scalar or one value per selected parameter leaf "
            f"({len(layout.paths)}), got {len(leaves)} values"
        )
    return leaves


def prior_vector(prior_prec: Any, layout) -> jax.Array:
    """``tau`` as a flat ``[P]`` vector in ``tree.ravel`` order of the selected parameters."""
    taus = prior_per_leaf(prior_prec, layout)
    return jnp.concatenate(
        [jnp.broadcast_to(t, (n,)) for t, n in zip(taus, layout.sizes, strict=True)]
    )


def _values(name: str, value: Any) -> list[np.ndarray]:
    leaves = jax.tree.leaves(value)
    if not leaves:
        raise ValueError(f"{name}: expected a number or a pytree of numbers, got {value!r}")
    return [v for v in (checks.concrete(leaf) for leaf in leaves) if v is not None]


def check_hyperparameters(scale: Any, prior_prec: Any, *, invertible: bool = True) -> None:
    """Raise ``ValueError`` unless ``scale > 0`` and ``prior_prec > 0`` (``>= 0`` when
    ``invertible`` is false: a precision-vector product needs no inverse), all finite;
    ``prior_prec`` may be a pytree (every leaf is checked). Traced values are not checked."""
    for s in _values("scale", scale):
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError(f"scale: expected a finite value > 0, got {s}")
    bound = "> 0" if invertible else ">= 0"
    for t in _values("prior_prec", prior_prec):
        if not np.all(np.isfinite(t)) or not np.all(t > 0 if invertible else t >= 0):
            reason = (
                ": directions the data do not constrain (zero curvature, e.g. blank pixels) "
                "would have infinite variance"
                if invertible and np.all(t >= 0)
                else ""
            )
            raise ValueError(f"prior_prec: expected a finite value {bound}, got {t}{reason}")


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


def example_inputs(x: Any) -> jax.ShapeDtypeStruct:
    """``jax.ShapeDtypeStruct`` of one example of the batch ``x`` (shape ``[1, ...]``): what
    ``init`` learns from the first batch (hashable, so it can be a static argument)."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 1:
        raise ValueError(f"x: expected an example batch of inputs [batch, ...], got {x!r}")
    return jax.ShapeDtypeStruct((1, *shape[1:]), x.dtype)


def with_checks(curvature: Curvature) -> Curvature:
    """Wrap a curvature's functions with the checks described in the module docstring, and
    compile ``init`` (it only traces shapes and allocates zeros; run op by op, every new
    shape would cost a separate compilation). ``init`` sees ``x`` as a one-example
    ``jax.ShapeDtypeStruct`` (``example_inputs``)."""
    jitted_init = jax.jit(curvature.init, static_argnums=1)

    def init(params, x):
        return jitted_init(params, example_inputs(x))

    def finalize(state):
        state = curvature.finalize(state)
        check_finite(state)
        return state

    def precision_mvp(state, v, scale, prior_prec):
        check_hyperparameters(scale, prior_prec, invertible=False)
        return curvature.precision_mvp(state, v, scale, prior_prec)

    def solve(state, v, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.solve(state, v, scale, prior_prec)

    def sample(state, key, scale, prior_prec):
        checks.key("key", key)
        check_hyperparameters(scale, prior_prec)
        return curvature.sample(state, key, scale, prior_prec)

    def log_det(state, scale, prior_prec):
        check_hyperparameters(scale, prior_prec)
        return curvature.log_det(state, scale, prior_prec)

    return curvature._replace(
        init=init,
        finalize=finalize,
        precision_mvp=precision_mvp,
        solve=solve,
        sample=sample,
        log_det=log_det,
    )
