"""Every method of the studies seen through one interface, :class:`Predictor`.

A predictor gives (a) predictive samples ``[T, batch, C]`` for the metrics (entropy, BALD,
calibration), (b) the MC-averaged predictive ``log (1/T) sum_t p_t`` that attacks differentiate
(expectation over the same fixed posterior draws), and (c) the predictive of single posterior
draws (one dropout mask, one weight sample, one member): the notebook's FGM target and its
"four draws from the posterior". The method table of the studies maps names to builders of
predictors; the library itself never switches on method names.
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import attacks, curvature, laplace, models, predictive
from bnn_jax import dropout as dropout_lib
from bnn_jax import ensembles as ensembles_lib

LogitsFn = Callable[[Any, jax.Array], jax.Array]


class Predictor(NamedTuple):
    """A posterior predictive (see the module docstring).

    Attributes:
      sample_log_probs: ``x -> [T, batch, C]`` log-probabilities of the posterior draws.
      log_prob_fn: ``x -> [batch, C]``, the MC predictive over the same draws (differentiable).
      draw_log_prob_fn: ``t -> (x -> [batch, C])``, the predictive of draw ``t`` alone.
      num_draws: ``T``.
    """

    sample_log_probs: Callable[[jax.Array], jax.Array]
    log_prob_fn: Callable[[jax.Array], jax.Array]
    draw_log_prob_fn: Callable[[int], Callable[[jax.Array], jax.Array]]
    num_draws: int

    def attack_method(self) -> attacks.Method:
        """The :class:`bnn_jax.attacks.Method` of this predictor (white-box: the attacker
        knows the draws)."""
        return attacks.Method(self.log_prob_fn, self.sample_log_probs)


def from_samples(logits_fn: LogitsFn, samples: Any, *, chunk_size: int | None = None) -> Predictor:
    """A predictor from ``logits_fn(sample, x)`` and a pytree of draws with a leading axis."""
    num_draws = jax.tree.leaves(samples)[0].shape[0]

    @jax.jit
    def sample_log_probs(x):
        return predictive.sample_log_probs(logits_fn, samples, x, chunk_size=chunk_size)

    def draw(t: int):
        sample = jax.tree.map(lambda leaf: leaf[t], samples)
        return attacks.single_sample_log_prob_fn(logits_fn, sample)

    log_prob_fn = attacks.mc_log_prob_fn(logits_fn, samples, chunk_size=chunk_size)
    return Predictor(sample_log_probs, log_prob_fn, draw, num_draws)


def deterministic(apply_fn, params, *, temperature: float = 1.0) -> Predictor:
    """A point estimate (MAP, or MAP with temperature scaling ``softmax(f / T)``): one draw."""
    return from_samples(lambda _, x: apply_fn(params, x) / temperature, jnp.zeros((1,)))


def laplace_posterior(posterior: laplace.Posterior, key, num_samples: int, *, chunk_size=None):
    """MC predictive of a Laplace posterior over ``num_samples`` fixed weight draws (the keys
    are the draws; weights are sampled inside the chunks, so memory stays bounded)."""
    keys = jax.random.split(key, num_samples)
    logits_fn = lambda k, x: posterior.apply_fn(laplace.sample_one(posterior, k), x)
    return from_samples(logits_fn, keys, chunk_size=chunk_size)


def mc_dropout(model, variables, key, num_samples: int, *, chunk_size=None) -> Predictor:
    """MC dropout or Concrete Dropout over ``num_samples`` fixed masks."""
    keys = jax.random.split(key, num_samples)
    return from_samples(
        dropout_lib.make_mask_logits_fn(model, variables), keys, chunk_size=chunk_size
    )


def ensemble(model, stacked_variables, *, chunk_size=None) -> Predictor:
    """A deep ensemble: the members are the draws."""
    return from_samples(
        ensembles_lib.make_member_logits_fn(model), stacked_variables, chunk_size=chunk_size
    )


def map_apply_fn(model, variables):
    """``(apply_fn, params)`` of a trained model in inference mode."""
    return models.make_apply_fn(model, variables), variables["params"]


LAPLACE_STRUCTURES = {
    "diag_laplace": lambda input_shape: curvature.diagonal,
    "kfac_laplace": lambda input_shape: partial(curvature.kfac, input_shape=input_shape),
}
"""Method name -> ``input_shape -> curvature factory(apply_fn, likelihood, *, fisher)``."""
