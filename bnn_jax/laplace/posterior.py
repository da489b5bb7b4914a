"""The Laplace posterior ``N(theta*, (scale C + prior_prec I)^-1)`` as a pytree, and its fit.

``theta*`` is the MAP (the trained parameters), ``C`` a curvature approximation of the GGN/Fisher
summed over the training examples (``bnn_jax.curvature``), ``scale`` the post's ``N`` relative
to that sum and ``prior_prec`` the prior precision ``tau``. With ``scale = 1`` and ``prior_prec``
equal to the training weight decay's prior precision this is the textbook Laplace
approximation; the post's (and laplace-torch's) ``N F`` with a per-example mean ``F`` is
``scale = N / num_data``. Only the parameters selected by the curvature's ``subset`` are
random; the others stay at the MAP.

A :class:`Posterior` holds arrays (``mean``, curvature ``state``, ``scale``, ``prior_prec``,
``train_nll``) as pytree leaves and the curvature (with the ``apply_fn``, likelihood and subset
it was built for) as a static field, so ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (e.g. over a
grid of ``prior_prec``) work on posteriors directly.

Where hyperparameters are checked: ``fit`` requires ``prior_prec > 0`` and ``scale > 0`` (with
``prior_prec = 0`` directions the data do not constrain would have infinite variance, every
prediction would be NaN). ``sample``, ``log_det``, the marginal likelihood, the predictives and
the tuners check a posterior's ``scale`` and ``prior_prec`` again when they are concrete, e.g.
after ``post.replace(prior_prec=-1.0)``, also inside a caller's ``jax.jit`` when the value is a
constant there. Values that are traced (arguments of a caller's ``jit``/``vmap``/``grad``)
cannot be inspected: keeping them positive is the caller's responsibility (optimise
``log prior_prec``, as ``optimize_marglik`` does).
"""

import functools
from collections.abc import Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks, tree
from bnn_jax._tqdm import tqdm
from bnn_jax.curvature.base import (
    Curvature,
    check_finite,
    check_hyperparameters,
    example_inputs,
    is_scalar_prior,
)
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import Subset
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params

__all__ = ["Posterior", "fit", "layerwise_prior", "log_det", "sample", "sample_one"]


@flax.struct.dataclass
class Posterior:
    """A fitted Laplace approximation (a pytree; the curvature is static).

    Attributes:
      mean: the MAP parameters ``theta*`` (all parameters of the model).
      state: the curvature state (``C`` summed over ``state.num_data`` examples).
      scale: ``s``, multiplier of ``C`` (the post's ``N`` is ``s * state.num_data``).
      prior_prec: ``tau``, precision of the Gaussian prior on the selected parameters: a scalar,
        or one value per selected leaf (a pytree like ``subset.select(mean)``, see
        :func:`layerwise_prior`), i.e. ``diag(tau)`` constant on each leaf.
      train_nll: training negative log-likelihood at the MAP, summed over the examples
        (used by the marginal likelihood).
      curvature: the ``Curvature`` it was fitted with; ``apply_fn``, ``likelihood`` and
        ``subset`` read the ones the curvature was built for.
      inputs: shape and dtype of one input example (``[1, ...]``) the curvature was
        initialised with (set by :func:`fit`; ``laplace.load`` rebuilds the state from it).
    """

    mean: Params
    state: object
    scale: jax.Array
    prior_prec: jax.Array
    train_nll: jax.Array
    curvature: Curvature = flax.struct.field(pytree_node=False)
    inputs: jax.ShapeDtypeStruct | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def apply_fn(self) -> ApplyFn:
        return self.curvature.apply_fn

    @property
    def likelihood(self) -> Likelihood:
        return self.curvature.likelihood

    @property
    def subset(self) -> Subset:
        return self.curvature.subset

    def with_apply_fn(self, apply_fn: ApplyFn) -> "Posterior":
        """The same posterior predicting through ``apply_fn`` (same parameters, other
        computation), e.g. ``post.with_apply_fn(precision.in_dtype(post.apply_fn))`` for
        bfloat16 forward passes. The fitted curvature state is kept as it is."""
        return self.replace(curvature=self.curvature._replace(apply_fn=apply_fn))


def _float_dtype(params: Params):
    leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def as_prior(prior_prec, selected: Params, dtype=None):
    """``prior_prec`` as a scalar array or a pytree of scalar arrays shaped like ``selected``
    (the selected parameters); ``ValueError`` for any other shape or tree."""
    if is_scalar_prior(prior_prec):
        if jnp.ndim(prior_prec) != 0:
            raise ValueError(
                "prior_prec: expected a scalar or one value per selected parameter leaf (a "
                f"pytree from laplace.layerwise_prior), got shape {jnp.shape(prior_prec)}"
            )
        return jnp.asarray(prior_prec, dtype)
    paths = Layout.of(selected).paths
    if jax.tree.structure(prior_prec) != jax.tree.structure(selected) or any(
        jnp.ndim(t) != 0 for t in jax.tree.leaves(prior_prec)
    ):
        raise ValueError(
            "prior_prec: expected a scalar or one scalar per selected parameter leaf, a pytree "
            f"like subset.select(params) with leaves {['/'.join(p) for p in paths]} (see "
            f"laplace.layerwise_prior), got {jax.tree.structure(prior_prec)}"
        )
    return jax.tree.map(lambda t: jnp.asarray(t, dtype), prior_prec)


def check_hyperparameters_of(posterior, scale, prior_prec) -> None:
    """``ValueError`` unless ``scale`` is a scalar > 0 and ``prior_prec`` a valid prior (> 0)
    for ``posterior``'s selected parameters (values are checked only when concrete). A
    per-leaf prior is also passed through the structure once (``log_det``), which refuses
    values it cannot represent (e.g. different kernel and bias values in one Kronecker
    block)."""
    if jnp.ndim(scale) != 0:
        raise ValueError(f"scale: expected a scalar, got shape {jnp.shape(scale)}")
    as_prior(prior_prec, posterior.subset.select(posterior.mean))
    check_hyperparameters(scale, prior_prec)
    concrete = not any(checks.is_traced(leaf) for leaf in jax.tree.leaves((scale, prior_prec)))
    if not is_scalar_prior(prior_prec) and concrete:
        posterior.curvature.log_det(posterior.state, scale, prior_prec)


def check_posterior(posterior) -> None:
    """``ValueError`` unless ``posterior`` is a :class:`Posterior` whose ``scale`` and
    ``prior_prec`` are valid (when concrete; module docstring)."""
    if not isinstance(posterior, Posterior):
        raise ValueError(f"posterior: expected a laplace.Posterior, got {type(posterior).__name__}")
    check_hyperparameters_of(posterior, posterior.scale, posterior.prior_prec)


def layerwise_prior(curvature: Curvature, params: Params, value) -> Params:
    """One prior precision per selected parameter leaf, for ``fit``/``replace``/the marginal
    likelihood: ``value(path)`` for each leaf path (a tuple of strings), or ``value`` for all.

    Example (one value per layer, kernel and bias alike):
      >>> taus = {"Dense_0": 1.0, "Dense_1": 10.0}
      >>> prior = laplace.layerwise_prior(curv, params, lambda path: taus[path[0]])
      >>> post = laplace.fit(curv, params, batches, key=key, prior_prec=prior)
    """
    selected = curvature.subset.select(params)
    values = [value(p) if callable(value) else value for p in Layout.of(selected).paths]
    return as_prior(
        jax.tree.unflatten(jax.tree.structure(selected), values), selected, _float_dtype(params)
    )


@functools.partial(jax.jit, static_argnames=("curvature",))
def _fit_step(state, nll_sum, finite, params, batch, key, index, *, curvature):
    """One batch: curvature update with ``fold_in(key, index)``, summed NLL at the MAP,
    finiteness of the inputs. Compiled once per curvature and batch shape, across ``fit``
    calls. The key is folded in here, not on the host: an eager
    ``fold_in`` waits for the steps in flight, so host and device would take turns."""
    state = curvature.update(state, params, batch, jax.random.fold_in(key, index))
    outputs = curvature.apply_fn(params, batch.x)
    nll = jnp.sum(curvature.likelihood.nll(outputs, batch.y)).astype(nll_sum.dtype)
    return state, nll_sum + nll, finite & jnp.all(jnp.isfinite(batch.x))


def fit(
    curvature: Curvature,
    params: Params,
    batches: Iterable[Batch],
    *,
    key: Key,
    prior_prec,
    scale=1.0,
    progress: bool = True,
) -> Posterior:
    """Accumulate the curvature at the MAP ``params`` over ``batches`` and build the posterior.

    ``curvature.init(params, x)`` learns the input shape from the first batch; then
    ``curvature.num_passes`` passes over ``batches`` (``update`` on batch ``i`` with
    ``fold_in(key, i)``, the same keys on every pass; ``finalize`` after each pass). One
    jitted step per batch updates the curvature and adds the batch's summed NLL at the MAP
    (kept from the last pass). Batches may be sharded over devices (``jax.sharding``); the
    inputs stay on device (their finiteness is checked in the step, reported after each
    pass), only the targets are checked on the host. The model, likelihood and parameter
    subset are the curvature's (``curvature.apply_fn``, ``.likelihood``, ``.subset``).

    Args:
      curvature: a ``Curvature`` (e.g. ``curvature.kfac(apply_fn, likelihood, fisher=...)``).
      params: the MAP parameters (full model params).
      batches: a re-iterable of ``Batch(x, y)`` (e.g. ``data.Batches(x, y, 128)``), the
        training data; iterated once per pass.
      key: PRNG key for the MC Fisher's sampled targets.
      prior_prec: prior precision ``tau > 0``: a scalar or one value per selected parameter
        leaf (:func:`layerwise_prior`).
      scale: multiplier ``s > 0`` of the summed curvature (default 1).
      progress: show a tqdm progress bar over batches.

    Returns:
      A :class:`Posterior`.

    Example:
      >>> curv = curvature.kfac(apply_fn, losses.categorical(), fisher=curvature.mc_fisher())
      >>> post = laplace.fit(curv, params, data.Batches(x, y, 256), key=key, prior_prec=1.0)
    """
    if not isinstance(curvature, Curvature):
        raise ValueError(f"curvature: expected a curvature.Curvature, got {curvature!r}")
    checks.key("key", key)
    dtype = _float_dtype(params)
    prior_prec = as_prior(prior_prec, curvature.subset.select(params), dtype)
    if jnp.ndim(scale) != 0:
        raise ValueError(f"scale: expected a scalar, got shape {jnp.shape(scale)}")
    check_hyperparameters(scale, prior_prec)
    step = functools.partial(_fit_step, curvature=curvature)
    finalize = jax.jit(curvature.finalize)
    total = curvature.num_passes * len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(total=total, desc="laplace.fit", disable=not progress, leave=False)
    state, inputs, num_outputs, counts = None, None, None, []
    for _ in range(curvature.num_passes):
        nll_sum, finite, count = jnp.zeros((), dtype), jnp.asarray(True), 0
        for index, batch in enumerate(batches):
            if not isinstance(batch, Batch) or jnp.ndim(batch.x) < 1 or len(batch.x) == 0:
                raise ValueError(f"batches: expected non-empty Batch(x, y) items, got {batch!r}")
            if state is None:
                inputs = example_inputs(batch.x)
                state = curvature.init(params, inputs)
                num_outputs = jax.eval_shape(curvature.apply_fn, params, batch.x).shape[-1]
            # numpy targets are checked on the host as they are: a device copy would make the
            # check wait for the steps in flight and stop host work overlapping the compute
            targets = batch.y if isinstance(batch.y, jax.Array) else np.asarray(batch.y)
            curvature.likelihood.check_targets((len(batch.x), num_outputs), targets)
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
    posterior = Posterior(
        mean=params,
        state=state,
        scale=jnp.asarray(scale, dtype),
        prior_prec=prior_prec,
        train_nll=nll_sum,
        curvature=curvature,
        inputs=inputs,
    )
    check_posterior(posterior)  # a per-leaf prior the structure cannot take is refused here
    return posterior


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
    check_posterior(posterior)
    checks.key("key", key)
    checks.positive_int("num_samples", num_samples)
    return _sample(posterior, key, num_samples)


@jax.jit(static_argnums=2)
def _sample(posterior: Posterior, key: Key, num_samples: int) -> Params:
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: sample_one(posterior, k))(keys)


def log_det(posterior: Posterior) -> jax.Array:
    """``log det(scale C + diag(prior_prec))``, the log-determinant of the posterior
    precision."""
    check_posterior(posterior)
    return posterior.curvature.log_det(posterior.state, posterior.scale, posterior.prior_prec)
