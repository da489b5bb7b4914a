"""Monte Carlo posterior predictives shared by every approximate posterior.

A posterior is represented for prediction by a pytree ``samples`` with a leading sample axis
(PRNG keys for Laplace weight draws or dropout masks, stacked parameters for an ensemble)
and a function ``logits_fn(sample, x) -> logits``. The predictive samples are the
log-probabilities ``log softmax(logits_fn(s_t, x))`` of shape ``[num_samples, batch, classes]``;
the same sample ``s_t`` is used for every input of the call (common random numbers).
"""

from collections.abc import Callable
from typing import Any

import jax

from bnn_jax.uncertainty import mean_log_probs

__all__ = ["mean_log_probs", "sample_log_probs"]


def sample_log_probs(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    samples: Any,
    x: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """Log-probabilities ``[num_samples, batch, classes]`` of ``x`` under each posterior sample.

    Args:
      logits_fn: ``(sample, x) -> logits [batch, classes]`` for one posterior sample.
      samples: pytree whose leaves share a leading axis ``num_samples``.
      x: inputs ``[batch, ...]``.
      chunk_size: evaluate this many samples at once with ``vmap`` (``lax.map`` over chunks),
        so memory is bounded by ``chunk_size`` forward passes for any number of samples.
        ``None`` vmaps over all samples at once.

    Example:
      >>> keys = jax.random.split(jax.random.key(0), 30)
      >>> lp = sample_log_probs(lambda k, x: dropout_apply(params, x, k), keys, x, chunk_size=10)
      >>> predictive = mean_log_probs(lp)                         # log (1/T) sum_t p_t
    """
    leaves = jax.tree.leaves(samples)
    if not leaves or leaves[0].ndim == 0 or leaves[0].shape[0] < 1:
        raise ValueError("samples: expected a pytree with a leading sample axis of length >= 1")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size}")

    def one(sample):
        return jax.nn.log_softmax(logits_fn(sample, x), axis=-1)

    return jax.lax.map(one, samples, batch_size=chunk_size)
