"""Deep ensembles (Lakshminarayanan et al. 2017): members trained together with ``jax.vmap``.

An ensemble is one variables pytree whose leaves carry a leading member axis ``M`` ("stacked
variables"). :func:`train_ensemble` initialises member ``i`` from key ``i`` of
``jax.random.split(key, M)`` and trains all members at once: the epoch of
:func:`bnn_jax.training.make_epoch` is vmapped over members and scanned over epochs inside a
single ``jax.jit``, so member ``i`` is exactly what ``training.train(model, x, y, key=keys[i],
...)`` would return (same initialisation, minibatch order and dropout masks), up to float
rounding. BatchNorm statistics are per member. The posterior predictive averages the members:
``sample_log_probs`` returns their log-probabilities ``[M, batch, classes]``.

Example:
  >>> result = train_ensemble(models.MLP((50,), 2), x, y, key=jax.random.key(0),
  ...                         num_members=5, epochs=100, batch_size=32)
  >>> lp = sample_log_probs(models.MLP((50,), 2), result.variables, x_test)   # [5, n, 2]
  >>> uncertainty.bald(lp)
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import checks, losses, models, predictive, training
from bnn_jax.data import check_arrays

__all__ = ["make_member_logits_fn", "member", "sample_log_probs", "stack", "train_ensemble"]


def stack(members: Sequence[models.Variables]) -> models.Variables:
    """Stack the variables of separately built members along a new leading member axis."""
    if len(members) < 1:
        raise ValueError("members: expected at least one member's variables, got none")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)


def member(variables: models.Variables, index: int) -> models.Variables:
    """The variables of member ``index`` (``-M <= index < M``, Python's negative indices) of
    stacked ``variables``."""
    leaves = jax.tree.leaves(variables)
    num_members = jnp.shape(leaves[0])[0] if leaves and jnp.ndim(leaves[0]) else 0
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"index: expected an integer member index, got {index!r}")
    if not -num_members <= index < num_members:
        raise ValueError(
            f"index: expected a member index in [-{num_members}, {num_members}), got {index}"
        )
    return jax.tree.map(lambda leaf: leaf[index], variables)


def make_member_logits_fn(model: nn.Module) -> Callable[[models.Variables, jax.Array], jax.Array]:
    """``logits_fn(member_variables, x) -> logits`` in inference mode: the ``logits_fn(sample,
    x)`` of :func:`bnn_jax.predictive.sample_log_probs` and of the attacks, with one member's
    variables (``"params"`` and e.g. ``"batch_stats"``) as the posterior sample."""
    return lambda variables, x: models.apply(model, variables, x)


def sample_log_probs(
    model: nn.Module,
    variables: models.Variables,
    x: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """Log-probabilities ``[num_members, batch, classes]`` of ``x`` under every member.

    Args:
      model: the members' flax module.
      variables: stacked member variables (leading member axis), e.g. from
        :func:`train_ensemble` or :func:`stack`.
      x: inputs ``[batch, ...]``.
      chunk_size: members evaluated at once (memory bound); ``None`` evaluates all at once.

    Example:
      >>> log_p_bar = uncertainty.mean_log_probs(sample_log_probs(model, stacked, x))
    """
    checks.chunk_size("chunk_size", chunk_size)
    if jnp.ndim(x) < 2:
        raise ValueError(f"x: expected a batch of inputs [batch, ...], got shape {jnp.shape(x)}")
    checks.finite("x", x)
    return predictive.sample_log_probs(
        make_member_logits_fn(model), variables, x, chunk_size=chunk_size
    )


def train_ensemble(
    model: nn.Module,
    x,
    y,
    *,
    key: jax.Array,
    num_members: int,
    epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    prior_prec: float = 0.0,
    likelihood: losses.Likelihood | None = None,
    validation: tuple[Any, Any] | None = None,
    epoch_metrics: Callable[[models.Variables], dict[str, Any]] | None = None,
) -> training.TrainResult:
    """Train ``num_members`` copies of ``model`` from independent initialisations, together.

    Member ``i`` uses ``keys[i]`` of ``keys = jax.random.split(key, num_members)`` exactly as
    ``training.train(model, x, y, key=keys[i], ...)`` uses its key (initialisation, shuffling,
    dropout). The whole run, all members and epochs, is one jit-compiled call: a ``lax.scan``
    over epochs of the member-vmapped :func:`bnn_jax.training.make_epoch`. For convolutional
    models on CPU, training the members one by one with ``training.train`` can be faster:
    XLA:CPU runs convolution gradients inside loops slowly (``training.make_epoch_loop``).

    Args:
      model, x, y, epochs, batch_size, optimizer, prior_prec, likelihood, validation: as in
        :func:`bnn_jax.training.train`.
      key: PRNG key of the ensemble.
      num_members: ensemble size ``M >= 1``.
      epoch_metrics: optional jittable ``fn(variables) -> {name: array}`` evaluated for every
        member after every epoch (e.g. ``lambda v: dropout.concrete_rates(v["params"])``).

    Returns:
      ``TrainResult(variables, history)``: stacked variables (leading axis ``M``) and history
      arrays ``[epochs, M]`` (``loss``, ``nll``, ``accuracy``, ``val_*`` as in ``train``).

    Example:
      >>> result = train_ensemble(model, x, y, key=jax.random.key(0), num_members=5,
      ...                         epochs=30, batch_size=64, prior_prec=1.0)
      >>> result.history["val_accuracy"][-1]          # final accuracy of each member
    """
    checks.key("key", key)
    num_members = checks.positive_int("num_members", num_members)
    epochs = checks.positive_int("epochs", epochs)
    batch_size = checks.positive_int("batch_size", batch_size)
    checks.nonnegative("prior_prec", prior_prec)
    x, y = jnp.asarray(x), jnp.asarray(y)
    optimizer = optimizer or optax.adam(1e-3)
    input_shape = tuple(x.shape[1:])
    init = lambda k: models.init(model, k, input_shape)
    num_outputs = jax.eval_shape(lambda k: model.apply(init(k), x[:1]), key).shape[-1]
    check_arrays(x, y, num_classes=num_outputs)
    if validation is not None:
        check_arrays(
            *validation, num_classes=num_outputs, x_name="validation[0]", y_name="validation[1]"
        )
        validation = tuple(map(jnp.asarray, validation))
    likelihood = losses.categorical() if likelihood is None else likelihood
    step = training.make_train_step(
        model, optimizer, num_data=x.shape[0], prior_prec=prior_prec, likelihood=likelihood
    )
    member_epoch = training.make_epoch(step, x, y, min(batch_size, x.shape[0]))

    def epoch(state: training.TrainState, loop_key: jax.Array, index: jax.Array):
        state, metrics = member_epoch(state, jax.random.fold_in(loop_key, index))
        if validation is not None:
            outputs = model.apply(state.variables, validation[0])
            metrics.update(training.evaluate_predictions(outputs, validation[1], likelihood))
        if epoch_metrics is not None:
            metrics.update(epoch_metrics(state.variables))
        return state, metrics

    def start(member_key: jax.Array):
        init_key, loop_key = jax.random.split(member_key)  # as in training.train
        return training.state_from_variables(init(init_key), optimizer), loop_key

    @jax.jit
    def run(member_keys):
        states, loop_keys = jax.vmap(start)(member_keys)
        all_members = jax.vmap(epoch, in_axes=(0, 0, None))
        return jax.lax.scan(lambda s, i: all_members(s, loop_keys, i), states, jnp.arange(epochs))

    states, history = run(jax.random.split(key, num_members))
    history = {name: np.asarray(values) for name, values in history.items()}
    return training.TrainResult(states.variables, history)
