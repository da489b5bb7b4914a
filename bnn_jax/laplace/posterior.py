"""The Laplace posterior ``N(theta*, (scale C + prior_prec I)^-1)`` as a pytree, and its fit.

``theta*`` is the MAP (the trained parameters), ``C`` a curvature approximation of the GGN/Fisher
summed over the training examples (``bnn_jax.curvature``), ``scale`` the post's ``N`` relative
to that sum and ``prior_prec`` the prior precision ``tau``. With ``scale = 1`` and ``prior_prec``
equal to the training weight decay's prior precision this is the textbook Laplace
approximation; the post's (and laplace-torch's) ``N F`` with a per-example mean ``F`` is
``scale = N / num_data``. Only the parameters selected by the curvature's ``subset`` are
random; the others stay at the MAP.

A :class:`Posterior` holds arrays (``mean``, curvature ``state``, ``scale``, ``prior_prec``,
``train_nll``) as pytree leaves and the functions (curvature, subset, ``apply_fn``,
likelihood) as static fields, so ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (e.g. over a grid of
``prior_prec``) work on posteriors directly.
"""

import functools
from collections.abc import Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import tree
from bnn_jax._tqdm import tqdm
from bnn_jax.curvature.base import Curvature, check_finite, check_hyperparameters
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params

__all__ = ["Posterior", "fit", "log_det", "sample", "sample_one"]


@flax.struct.dataclass
class Posterior:
    """A fitted Laplace approximation (a pytree; the function fields are static).

    Attributes:
      mean: the MAP parameters ``theta*`` (all parameters of the model).
      state: the curvature state (``C`` summed over ``state.num_data`` examples).
      scale: ``s``, multiplier of ``C`` (the post's ``N`` is ``s * state.num_data``).
      prior_prec: ``tau``, precision of the isotropic Gaussian prior on the selected parameters.
      train_nll: training negative log-likelihood at the MAP, summed over the examples
        (used by the marginal likelihood).
      curvature, subset, apply_fn, likelihood: the functions the posterior was fitted with.
    """

    mean: Params
    state: object
    scale: jax.Array
    prior_prec: jax.Array
    train_nll: jax.Array
    curvature: Curvature = flax.struct.field(pytree_node=False)
    subset: Subset = flax.struct.field(pytree_node=False)
    apply_fn: ApplyFn = flax.struct.field(pytree_node=False)
    likelihood: Likelihood = flax.struct.field(pytree_node=False)


def _float_dtype(params: Params):
    leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def check_scalar_hyperparameters(scale, prior_prec) -> None:
    """``ValueError`` unless ``scale`` and ``prior_prec`` are scalars with ``scale > 0`` and
    ``prior_prec >= 0`` (values are checked only when concrete)."""
    for name, value in (("scale", scale), ("prior_prec", prior_prec)):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name}: expected a scalar, got shape {jnp.shape(value)}")
    check_hyperparameters(scale, prior_prec)


def check_num_samples(num_samples) -> None:
    """``ValueError`` unless ``num_samples`` is an integer >= 1."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ValueError(f"num_samples: expected an integer >= 1, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples: expected an integer >= 1, got {num_samples}")


def _check_subset(curvature: Curvature, subset: Subset, state, params: Params) -> None:
    one = jnp.ones((), _float_dtype(params))
    z = jax.eval_shape(curvature.sample, state, jax.random.key(0), one, one)
    selected = subset.select(params)
    same_tree = jax.tree.structure(z) == jax.tree.structure(selected)
    if not same_tree or any(
        a.shape != b.shape
        for a, b in zip(jax.tree.leaves(z), jax.tree.leaves(selected), strict=True)
    ):
        raise ValueError(
            "subset: does not select the parameters the curvature covers; pass fit the same "
            "subset as the curvature factory"
        )


@functools.partial(jax.jit, static_argnames=("curvature", "apply_fn", "likelihood"))
def _fit_step(
    state, nll_sum, finite, params, batch, key, index, *, curvature, apply_fn, likelihood
):
    """One batch: curvature update with ``fold_in(key, index)``, summed NLL at the MAP,
    finiteness of the inputs. Compiled once per (curvature, apply_fn, likelihood) and batch
    shape, across ``fit`` calls. The key is folded in here, not on the host: an eager
    ``fold_in`` waits for the steps in flight, so host and device would take turns."""
    state = curvature.update(state, params, batch, jax.random.fold_in(key, index))
    nll = jnp.sum(likelihood.nll(apply_fn(params, batch.x), batch.y)).astype(nll_sum.dtype)
    return state, nll_sum + nll, finite & jnp.all(jnp.isfinite(batch.x))


def fit(
    curvature: Curvature,
    params: Params,
    batches: Iterable[Batch],
    *,
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    key: Key,
    prior_prec,
    scale=1.0,
    subset: Subset | None = None,
    progress: bool = True,
) -> Posterior:
    """Accumulate the curvature at the MAP ``params`` over ``batches`` and build the posterior.

    Runs ``curvature.num_passes`` passes over ``batches`` (``update`` on batch ``i`` with
    ``fold_in(key, i)``, the same keys on every pass; ``finalize`` after each pass). One
    jitted step per batch updates the curvature and adds the batch's summed NLL at the MAP
    (kept from the last pass). Batches may be sharded over devices (``jax.sharding``); the
    inputs stay on device (their finiteness is checked in the step, reported after each
    pass), only the targets are checked on the host.

    Args:
      curvature: a ``Curvature`` built for the same ``apply_fn``, likelihood and subset.
      params: the MAP parameters (full model params).
      batches: a re-iterable of ``Batch(x, y)`` (e.g. ``data.Batches(x, y, 128)``), the
        training data; iterated once per pass.
      apply_fn: ``apply_fn(params, x) -> outputs``, the model the curvature was built for.
      likelihood: the likelihood the curvature was built for (``bnn_jax.losses``).
      key: PRNG key for the MC Fisher's sampled targets.
      prior_prec: prior precision ``tau >= 0``.
      scale: multiplier ``s > 0`` of the summed curvature (default 1).
      subset: the parameter subset given to the curvature factory (default: all).
      progress: show a tqdm progress bar over batches.

    Returns:
      A :class:`Posterior`.

    Example:
      >>> curv = curvature.kfac(apply_fn, losses.categorical(), fisher=curvature.mc_fisher())
      >>> post = laplace.fit(curv, params, data.Batches(x, y, 256), apply_fn=apply_fn,
      ...                    likelihood=losses.categorical(), key=key, prior_prec=1.0)
    """
    check_scalar_hyperparameters(scale, prior_prec)
    subset = everything() if subset is None else subset
    dtype = _float_dtype(params)
    state = curvature.init(params)
    _check_subset(curvature, subset, state, params)

    step = functools.partial(
        _fit_step, curvature=curvature, apply_fn=apply_fn, likelihood=likelihood
    )
    finalize = jax.jit(curvature.finalize)
    total = curvature.num_passes * len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(total=total, desc="laplace.fit", disable=not progress, leave=False)
    num_outputs, counts = None, []
    for _ in range(curvature.num_passes):
        nll_sum, finite, count = jnp.zeros((), dtype), jnp.asarray(True), 0
        for index, batch in enumerate(batches):
            if not isinstance(batch, Batch) or jnp.ndim(batch.x) < 1 or len(batch.x) == 0:
                raise ValueError(f"batches: expected non-empty Batch(x, y) items, got {batch!r}")
            if num_outputs is None:
                num_outputs = jax.eval_shape(apply_fn, params, batch.x).shape[-1]
            # numpy targets are checked on the host as they are: a device copy would make the
            # check wait for the steps in flight and stop host work overlapping the compute
            targets = batch.y if isinstance(batch.y, jax.Array) else np.asarray(batch.y)
            likelihood.check_targets((len(batch.x), num_outputs), targets)
            state, nll_sum, finite = step(state, nll_sum, finite, params, batch, key, index)
            count += len(batch.x)
            bar.update()
        if count == 0:
            raise ValueError(
                "batches: a pass saw no examples; expected a non-empty re-iterable "
                "(not a one-shot iterator when the curvature needs several passes)"
            )
        if not bool(finite):
            raise ValueError("batches: expected finite inputs x, got NaN or inf")
        counts.append(count)
        state = finalize(state)
        check_finite(state)
    bar.close()
    if len(set(counts)) > 1:
        raise ValueError(f"batches: expected the same examples on every pass, got counts {counts}")
    if not np.isfinite(float(nll_sum)):
        raise ValueError("params: the training NLL at the MAP is not finite")
    return Posterior(
        mean=params,
        state=state,
        scale=jnp.asarray(scale, dtype),
        prior_prec=jnp.asarray(prior_prec, dtype),
        train_nll=nll_sum,
        curvature=curvature,
        subset=subset,
        apply_fn=apply_fn,
        likelihood=likelihood,
    )


def sample_one(posterior: Posterior, key: Key) -> Params:
    """One draw ``theta* + z``, ``z ~ N(0, (scale C + prior_prec I)^-1)`` on the selected
    parameters (the others at the MAP), as full model params."""
    z = posterior.curvature.sample(posterior.state, key, posterior.scale, posterior.prior_prec)
    theta = posterior.subset.select(posterior.mean)
    return posterior.subset.merge(posterior.mean, tree.tree_add(theta, z))


def sample(posterior: Posterior, key: Key, num_samples: int) -> Params:
    """``num_samples`` posterior draws as a params pytree with a leading sample axis.

    Draw ``t`` uses ``jax.random.split(key, num_samples)[t]`` (the same draws as
    ``predictive.laplace_log_probs`` with that key). All draws are held at once; to predict
    with many samples use ``predictive.laplace_log_probs``, which draws them in chunks.
    Jit-compiled (static ``num_samples``); works under ``jax.vmap`` over posteriors.

    Example:
      >>> thetas = laplace.sample(post, jax.random.key(1), 30)
      >>> logits = jax.vmap(apply_fn, (0, None))(thetas, x)          # [30, batch, classes]
    """
    check_num_samples(num_samples)
    return _sample(posterior, key, num_samples)


@jax.jit(static_argnums=2)
def _sample(posterior: Posterior, key: Key, num_samples: int) -> Params:
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: sample_one(posterior, k))(keys)


def log_det(posterior: Posterior) -> jax.Array:
    """``log det(scale C + prior_prec I)``, the log-determinant of the posterior precision."""
    return posterior.curvature.log_det(posterior.state, posterior.scale, posterior.prior_prec)
