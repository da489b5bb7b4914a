"""The Bayesian predictives an attack can target, and the methods a sweep compares.

``samples`` is the posterior in the form of :func:`bnn_jax.predictive.sample_log_probs`: PRNG
keys for Laplace weight draws or dropout masks, stacked parameters for ensemble members. The
samples are fixed when the predictive is built, so an attack on it is a deterministic function
of the key the samples came from, and every gradient step sees the same posterior draws.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from bnn_jax.attacks.gradient import LogProbFn
from bnn_jax.predictive import sample_log_probs
from bnn_jax.uncertainty import mean_log_probs

LogitsFn = Callable[[Any, jax.Array], jax.Array]
"""``logits_fn(sample, x) -> logits [batch, classes]`` for one posterior sample."""


def mc_log_prob_fn(
    logits_fn: LogitsFn, samples: Any, *, chunk_size: int | None = None
) -> LogProbFn:
    """The MC-averaged predictive ``x -> log (1/T) sum_t softmax(logits_fn(s_t, x))``.

    Attacking it is expectation over transformation (EOT): the gradient of the loss of the
    Bayesian model average over the ``T`` fixed samples.

    Args:
      logits_fn: ``(sample, x) -> logits`` for one posterior sample.
      samples: pytree with a leading sample axis (keys or stacked parameters).
      chunk_size: forward passes evaluated at once (memory bound), as in
        :func:`bnn_jax.predictive.sample_log_probs`.

    Example:
      >>> keys = jax.random.split(jax.random.key(0), 50)                 # 50 dropout masks
      >>> f = mc_log_prob_fn(dropout.make_mask_logits_fn(model, variables), keys)
      >>> x_adv = bim(f, x, eps=0.3, eps_iter=0.1, steps=10, norm="l2")
    """

    def log_prob_fn(x: jax.Array) -> jax.Array:
        return mean_log_probs(sample_log_probs(logits_fn, samples, x, chunk_size=chunk_size))

    return log_prob_fn


def single_sample_log_prob_fn(logits_fn: LogitsFn, sample: Any) -> LogProbFn:
    """The predictive of one posterior sample (one dropout mask, one weight draw, one member),
    ``x -> log_softmax(logits_fn(sample, x))``: the non-Bayesian attack to compare with."""

    def log_prob_fn(x: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(logits_fn(sample, x), axis=-1)

    return log_prob_fn


class Method(NamedTuple):
    """A predictive as a sweep attacks and judges it.

    Attributes:
      log_prob_fn: ``x -> log-probabilities [batch, classes]``, the function attacked.
      sample_log_probs_fn: ``x -> [T, batch, classes]``, the samples accuracy, NLL, ECE,
        entropy and BALD are computed from (``T = 1`` for a deterministic network:
        ``lambda x: log_prob_fn(x)[None]``).
    """

    log_prob_fn: LogProbFn
    sample_log_probs_fn: Callable[[jax.Array], jax.Array]


def mc_method(
    logits_fn: LogitsFn,
    samples: Any,
    *,
    eval_samples: Any = None,
    chunk_size: int | None = None,
) -> Method:
    """A :class:`Method` that attacks the MC predictive over ``samples`` and evaluates with
    ``eval_samples`` (default: the same samples, a white-box attacker who knows the draws;
    pass fresh keys for an attacker who knows only the posterior).

    Example:
      >>> method = mc_method(logits_fn, jax.random.split(k1, 30),
      ...                    eval_samples=jax.random.split(k2, 30))
    """
    eval_samples = samples if eval_samples is None else eval_samples

    def sample_log_probs_fn(x: jax.Array) -> jax.Array:
        return sample_log_probs(logits_fn, eval_samples, x, chunk_size=chunk_size)

    return Method(mc_log_prob_fn(logits_fn, samples, chunk_size=chunk_size), sample_log_probs_fn)
