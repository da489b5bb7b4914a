"""Uncertainty measures of a predictive distribution, in nats, computed from log-probabilities.

Every function takes log-probabilities (``jax.nn.log_softmax`` of logits), never probabilities:
an entry of ``-inf`` is a class of probability exactly 0 and contributes exactly 0 to every
entropy (``0 log 0 = 0``), in the value and in the gradient. Predictive samples are
``sample_log_probs`` of shape ``[T, batch, ..., C]`` (``T`` posterior samples, at least one
batch axis, ``C`` classes), as returned by :func:`bnn_jax.predictive.sample_log_probs`. A
``[n, C]`` array is refused by the sample-based functions rather than read as ``n`` samples of
one input: pass ``log_probs[None]`` for a single (deterministic) prediction per input, and
``samples[:, None]`` for ``T`` samples of a single input.

Validation and jit: every public function checks its input with :func:`check_log_probs` in
Python and then calls a jitted core. Shape checks always run; the value checks (no NaN, rows on
the probability simplex) need concrete arrays, so they run when called eagerly and are skipped
when the function is traced inside the caller's ``jax.jit``/``vmap``/``grad``, which is the
unchecked, fully staged path (the jitted core inlines into the caller's program).
"""

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks

__all__ = [
    "bald",
    "check_log_probs",
    "check_samples",
    "entropy",
    "expected_entropy",
    "max_probability",
    "mean_log_probs",
    "predictive_entropy",
    "variation_ratio",
]


def is_concrete(x) -> bool:
    """True if ``x`` holds values, False for an abstract tracer inside ``jit``/``vmap``/``grad``.

    The metric modules run their value checks only on concrete inputs.
    """
    return not checks.is_traced(x)


def _simplex_tolerance(dtype) -> float:
    """Allowed ``|logsumexp(log_probs)|``: ``max(1e-3, sqrt(eps(dtype)))`` nats."""
    return max(1e-3, float(np.sqrt(jnp.finfo(dtype).eps)))


def check_log_probs(log_probs, *, name: str = "log_probs", min_ndim: int = 1) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``log_probs`` are valid log-probabilities.

    Checks: a floating array with at least ``min_ndim`` axes and no empty axis; and, when the
    values are concrete, no NaN and every row on the simplex,
    ``|logsumexp(log_probs, axis=-1)| <= max(1e-3, sqrt(eps))``. Entries of ``-inf`` are allowed.
    """
    shape = jnp.shape(log_probs)
    if len(shape) < min_ndim:
        raise ValueError(f"{name}: expected an array with at least {min_ndim} axes, got {shape}")
    if 0 in shape:
        raise ValueError(f"{name}: expected non-empty axes, got shape {shape}")
    dtype = jnp.result_type(log_probs)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name}: expected a floating dtype, got {dtype}")
    if not is_concrete(log_probs):
        return
    values = np.asarray(log_probs, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(f"{name}: expected no NaN values")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = np.max(values, axis=-1, keepdims=True)
        safe_top = np.where(np.isfinite(top), top, 0.0)
        total = np.log(np.sum(np.exp(values - safe_top), axis=-1)) + safe_top[..., 0]
    worst = np.max(np.abs(np.nan_to_num(total, nan=np.inf)))
    tol = _simplex_tolerance(dtype)
    if not worst <= tol:
        raise ValueError(
            f"{name}: expected log-probabilities with logsumexp over the last axis equal to 0 "
            f"(within {tol:g}), got a row with logsumexp {worst:g} away from 0; pass "
            "jax.nn.log_softmax(logits), not logits or probabilities"
        )


def check_samples(sample_log_probs, *, name: str = "sample_log_probs") -> None:
    """Raise ``ValueError`` unless ``sample_log_probs`` is ``[T, batch, ..., C]`` (at least three
    axes) of valid log-probabilities (:func:`check_log_probs`)."""
    _check_sample_axes(sample_log_probs, name)
    check_log_probs(sample_log_probs, name=name)


def _check_sample_axes(sample_log_probs, name: str) -> None:
    shape = jnp.shape(sample_log_probs)
    if len(shape) < 3:
        raise ValueError(
            f"{name}: expected posterior samples [T, batch, C] (at least 3 axes), got shape "
            f"{shape}; for one deterministic prediction per input pass log_probs[None]"
        )


def _plogp_terms(log_probs: jax.Array) -> jax.Array:
    """``-p log p`` from ``log p``; exactly 0 (value and gradient) where ``log p = -inf``."""
    finite = log_probs > -jnp.inf
    safe = jnp.where(finite, log_probs, 0.0)
    return jnp.where(finite, jnp.exp(safe) * -safe, 0.0)


def entropy(log_probs: jax.Array) -> jax.Array:
    """Entropy ``H[p] = -sum_c p_c log p_c`` in nats over the last axis.

    Args:
      log_probs: log-probabilities ``[..., C]``; ``-inf`` entries give exactly 0 contributions.

    Returns:
      ``[...]`` entropies in ``[0, log C]`` (up to rounding of a few ulp).

    Example:
      >>> entropy(jax.nn.log_softmax(jnp.zeros(4)))   # log 4
    """
    check_log_probs(log_probs)
    return _entropy(log_probs)


@jax.jit
def _entropy(log_probs):
    return jnp.sum(_plogp_terms(log_probs), axis=-1)


def mean_log_probs(sample_log_probs: jax.Array) -> jax.Array:
    """Log of the MC predictive, ``log (1/T) sum_t p_t``, from samples ``[T, batch, ..., C]``.

    Computed with ``logsumexp``, so probabilities that are exactly 0 or 1 stay exact. A
    primitive for staged code: it checks the number of axes (at least 3, as
    :func:`check_samples`) but not the values.
    """
    _check_sample_axes(sample_log_probs, "sample_log_probs")
    num_samples = sample_log_probs.shape[0]
    # logsumexp over samples, written out so that a class with probability 0 in every sample
    # gives -inf with a zero (not NaN) gradient.
    top = jax.lax.stop_gradient(jnp.max(sample_log_probs, axis=0))
    finite = top > -jnp.inf
    safe_top = jnp.where(finite, top, 0.0)
    total = jnp.sum(jnp.exp(sample_log_probs - safe_top), axis=0)
    log_total = jnp.log(jnp.where(finite, total, 1.0)) + safe_top
    return jnp.where(finite, log_total, -jnp.inf) - jnp.log(num_samples)


def predictive_entropy(sample_log_probs: jax.Array) -> jax.Array:
    """Entropy of the MC predictive, ``H[p_bar]`` with ``p_bar = (1/T) sum_t p_t``.

    Args:
      sample_log_probs: ``[T, batch, ..., C]`` log-probabilities of ``T`` posterior samples.

    Returns:
      ``[...]`` total (aleatoric + epistemic) uncertainty in nats.
    """
    check_samples(sample_log_probs)
    return _predictive_entropy(sample_log_probs)


@jax.jit
def _predictive_entropy(sample_log_probs):
    return _entropy(mean_log_probs(sample_log_probs))


def expected_entropy(sample_log_probs: jax.Array) -> jax.Array:
    """Mean entropy of the samples, ``(1/T) sum_t H[p_t]`` (the aleatoric part).

    Args:
      sample_log_probs: ``[T, batch, ..., C]`` log-probabilities of ``T`` posterior samples.

    Returns:
      ``[...]`` expected entropy in nats.
    """
    check_samples(sample_log_probs)
    return _expected_entropy(sample_log_probs)


@jax.jit
def _expected_entropy(sample_log_probs):
    return jnp.mean(_entropy(sample_log_probs), axis=0)


def bald(sample_log_probs: jax.Array) -> jax.Array:
    """BALD, the mutual information between the label and the parameters (epistemic part).

    ``I = H[p_bar] - (1/T) sum_t H[p_t]`` (Houlsby et al. 2011), i.e.
    ``predictive_entropy - expected_entropy``; equal to ``(1/T) sum_t KL(p_t || p_bar) >= 0``.
    It is not clipped at 0: rounding leaves an absolute error of order ``eps * log C``
    (about 1e-7 nats in float32), so tiny negative values are rounding while anything clearly
    negative points to a bug upstream. (Evaluating the KL form instead gains nothing: the
    rounding of the input log-probabilities dominates.)

    Args:
      sample_log_probs: ``[T, batch, ..., C]`` log-probabilities of ``T`` posterior samples.

    Returns:
      ``[...]`` BALD in nats, in ``[0, predictive_entropy]`` up to rounding.

    Example:
      >>> lp = predictive.sample_log_probs(logits_fn, keys, x)   # [T, batch, C]
      >>> bald(lp) <= predictive_entropy(lp)
    """
    check_samples(sample_log_probs)
    return _bald(sample_log_probs)


@jax.jit
def _bald(sample_log_probs):
    return _predictive_entropy(sample_log_probs) - _expected_entropy(sample_log_probs)


def variation_ratio(sample_log_probs: jax.Array) -> jax.Array:
    """Variation ratio ``1 - f_mode / T`` of the sampled predicted labels (Freeman 1965; Gal 2016).

    ``f_mode`` is how many of the ``T`` samples predict the most frequent label
    (``argmax_c log p_tc``, ties to the lower class index). 0 when all samples agree; at most
    ``1 - 1/min(T, C)``.

    Args:
      sample_log_probs: ``[T, batch, ..., C]`` log-probabilities of ``T`` posterior samples.

    Returns:
      ``[...]`` variation ratios in ``[0, 1)``.
    """
    check_samples(sample_log_probs)
    return _variation_ratio(sample_log_probs)


@jax.jit
def _variation_ratio(sample_log_probs):
    num_samples, num_classes = sample_log_probs.shape[0], sample_log_probs.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(sample_log_probs, axis=-1), num_classes, dtype=jnp.int32)
    mode_count = jnp.max(jnp.sum(votes, axis=0), axis=-1).astype(sample_log_probs.dtype)
    return 1 - mode_count / num_samples


def max_probability(log_probs: jax.Array) -> jax.Array:
    """Confidence ``max_c p_c`` over the last axis (``exp`` of the largest log-probability).

    Args:
      log_probs: log-probabilities ``[..., C]`` (e.g. ``mean_log_probs`` of samples).

    Returns:
      ``[...]`` confidences in ``[1/C, 1]``.
    """
    check_log_probs(log_probs)
    return _max_probability(log_probs)


@jax.jit
def _max_probability(log_probs):
    return jnp.exp(jnp.max(log_probs, axis=-1))
