"""MC dropout and Concrete Dropout as approximate posteriors: one-mask passes, predictive samples
and the learned Concrete Dropout rates.

A dropout mask is one draw of the weights from the variational posterior (Gal & Ghahramani
2016): dropping unit ``j`` of a layer's input zeroes row ``j`` of its weight matrix for *every*
input. So here a PRNG key is one posterior sample, and the forward pass it defines applies the
same mask to every input of the call (common random numbers): ``logits_fn(key, x)[i]`` does not
depend on which other inputs are in ``x``. This is what the notebook's "4 draws from the dropout
posterior" and an FGM attack on one draw need (a deterministic function of ``x``), and it makes
predictions on ``[x1, x2]`` equal to predictions on ``x1`` and ``x2`` separately. It is done by
evaluating each example as a batch of one with the same key (``jax.vmap`` over the batch), so
any model of :mod:`bnn_jax.models` works unchanged: ``nn.Dropout``, :class:`ConcreteDropout`
and :class:`SpatialConcreteDropout` layers alike. (Training keeps the usual independent masks per
example, through ``model.apply(..., train=True)``.)

Example:
  >>> model = models.MLP((50,), 2, dropout_rate=0.1)
  >>> result = training.train(model, x, y, key=k0, epochs=100, batch_size=32)
  >>> lp = sample_log_probs(model, result.variables, x_test, key=k1, num_samples=50)
  >>> uncertainty.bald(lp), uncertainty.predictive_entropy(lp)
  >>> one_draw = make_mask_logits_fn(model, result.variables)      # (key, x) -> logits
  >>> draws = [one_draw(k, grid) for k in jax.random.split(k2, 4)]
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnn_jax import checks, models, predictive
from bnn_jax.types import Key, Params

__all__ = ["concrete_rates", "make_mask_logits_fn", "make_shared_mask_apply_fn", "sample_log_probs"]


def _check_inputs(x: jax.Array) -> None:
    """A batch ``[batch, ...]`` of inputs, finite when concrete (as the Laplace predictives)."""
    if jnp.ndim(x) < 2:
        raise ValueError(f"x: expected a batch of inputs [batch, ...], got shape {jnp.shape(x)}")
    checks.finite("x", x)


def make_shared_mask_apply_fn(
    model: nn.Module, variables: models.Variables
) -> Callable[[Params, jax.Array, Key], jax.Array]:
    """``apply_fn(params, x, key) -> logits`` with one dropout mask, drawn from ``key`` and shared
    by every input of ``x`` (dropout on, BatchNorm in inference mode).

    Unlike :func:`bnn_jax.models.make_per_example_dropout_apply_fn` (a fresh mask per
    example), the output for an input does not depend on the rest of the batch. Every
    collection except ``"params"`` is closed over.
    """
    dropout_apply = models.make_per_example_dropout_apply_fn(model, variables)

    def apply_fn(params: Params, x: jax.Array, key: Key) -> jax.Array:
        _check_inputs(x)
        checks.key("key", key)
        return jax.vmap(lambda xi: dropout_apply(params, xi[None], key)[0])(x)

    return apply_fn


def make_mask_logits_fn(
    model: nn.Module, variables: models.Variables
) -> Callable[[Key, jax.Array], jax.Array]:
    """The one-mask forward pass ``logits_fn(key, x) -> logits [batch, classes]`` at the trained
    parameters: the ``logits_fn(sample, x)`` of :func:`bnn_jax.predictive.sample_log_probs` and
    of the attacks, with a PRNG key as the posterior sample.

    Example:
      >>> logits_fn = make_mask_logits_fn(model, variables)
      >>> keys = jax.random.split(key, 50)
      >>> lp = predictive.sample_log_probs(logits_fn, keys, x, chunk_size=10)
      >>> x_adv = attacks.fgm(attacks.single_sample_log_prob_fn(logits_fn, keys[0]), x, ...)
    """
    apply_fn = make_shared_mask_apply_fn(model, variables)
    params = variables["params"]
    return lambda key, x: apply_fn(params, x, key)


def sample_log_probs(
    model: nn.Module,
    variables: models.Variables,
    x: jax.Array,
    *,
    key: Key,
    num_samples: int,
    chunk_size: int | None = None,
) -> jax.Array:
    """MC dropout predictive samples: ``log softmax`` of ``num_samples`` one-mask passes.

    Sample ``t`` uses the mask of ``jax.random.split(key, num_samples)[t]``, the same for every
    input. Works for MC dropout (``nn.Dropout``) and Concrete Dropout models alike. Jittable
    with ``model``, ``num_samples`` and ``chunk_size`` static.

    Args:
      model: a flax module following :mod:`bnn_jax.models`' calling convention.
      variables: its trained variables (``"params"`` and e.g. ``"batch_stats"``).
      x: inputs ``[batch, ...]``, finite.
      key: PRNG key of the masks.
      num_samples: number of masks ``T >= 1``.
      chunk_size: masks evaluated at once (memory bound); ``None`` evaluates all at once.

    Returns:
      Log-probabilities ``[num_samples, batch, classes]``.

    Example:
      >>> lp = sample_log_probs(model, variables, x, key=jax.random.key(1), num_samples=50)
      >>> log_p_bar = uncertainty.mean_log_probs(lp)
    """
    num_samples = checks.positive_int("num_samples", num_samples)
    checks.chunk_size("chunk_size", chunk_size)
    checks.key("key", key)
    _check_inputs(x)
    keys = jax.random.split(key, num_samples)
    return predictive.sample_log_probs(
        make_mask_logits_fn(model, variables), keys, x, chunk_size=chunk_size
    )


def concrete_rates(params: Params) -> dict[str, jax.Array]:
    """The dropout rates ``p = sigmoid(p_logit)`` of every Concrete Dropout layer in ``params``.

    Keys are the layers' paths in the tree joined by ``/`` (e.g. ``"concrete_dropout_1"``);
    leading axes of stacked parameters (an ensemble) are kept. Jittable, so it can also be
    recorded every epoch: ``training.train(..., epoch_metrics=lambda v:
    concrete_rates(v["params"]))`` adds one history entry per layer.

    Example:
      >>> concrete_rates(result.variables["params"])
      {'concrete_dropout_1': Array(0.07, dtype=float32), 'concrete_dropout_2': Array(0.21, ...)}
    """
    rates = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path]
        if names and names[-1] == "p_logit":
            rates["/".join(names[:-1])] = jax.nn.sigmoid(leaf)
    return rates
