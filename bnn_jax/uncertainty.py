"""Uncertainty measures of a predictive distribution, in nats, computed from log-probabilities."""

import jax
import jax.numpy as jnp


def mean_log_probs(sample_log_probs: jax.Array) -> jax.Array:
    """Log of the MC predictive, ``log (1/T) sum_t p_t``, from samples ``[T, ..., C]``.

    Computed with ``logsumexp``, so probabilities that are exactly 0 or 1 stay exact.
    """
    num_samples = sample_log_probs.shape[0]
    return jax.nn.logsumexp(sample_log_probs, axis=0) - jnp.log(num_samples)
