"""Maximum-a-posteriori training with optax, weight decay expressed as a Gaussian prior.

The objective of one step on a minibatch ``B`` drawn from ``N`` training examples is the
negative log posterior per example,

    L(theta) = mean_{n in B} nll(f(x_n; theta), y_n) + prior_prec / (2 N) ||theta||^2
               + sum(regularisers the model sows into its "losses" collection),

so ``prior_prec`` is the precision tau of the prior ``N(0, tau^-1 I)`` over all parameters:
the same tau the Laplace approximation adds to the summed curvature (``scale = 1``).
``train`` runs an epoch as a host loop of one jitted step per shuffled minibatch
(``make_epoch_loop``); ``make_epoch`` is the same epoch as one ``lax.scan``, for vmapping over
ensemble members inside ``jit``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import models
from bnn_jax._tqdm import tqdm
from bnn_jax.data import check_arrays, epoch_batches
from bnn_jax.types import Batch, Key, Params

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss_fn(outputs [batch, ...], targets [batch, ...]) -> per-example NLL [batch]``."""


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example categorical NLL ``-log softmax(logits)[label]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class TrainState(NamedTuple):
    """Parameters, non-trainable collections (BatchNorm statistics), optimiser state, step."""

    params: Params
    model_state: dict[str, Any]
    opt_state: optax.OptState
    step: jax.Array

    @property
    def variables(self) -> models.Variables:
        """The flax variables dict, ready for ``model.apply``."""
        return {"params": self.params, **self.model_state}


class TrainResult(NamedTuple):
    """Trained variables and per-epoch history (numpy arrays keyed by metric name)."""

    variables: models.Variables
    history: dict[str, np.ndarray]


def init_state(
    model: nn.Module, optimizer: optax.GradientTransformation, key: Key, input_shape
) -> TrainState:
    """Initialise model variables and optimiser state."""
    variables = models.init(model, key, tuple(input_shape))
    return state_from_variables(variables, optimizer)


def state_from_variables(variables: models.Variables, optimizer) -> TrainState:
    """A fresh ``TrainState`` (step 0, new optimiser state) around existing variables."""
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k not in ("params", "losses")}
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    num_data: int,
    prior_prec: float = 0.0,
    loss_fn: LossFn = cross_entropy,
) -> Callable[[TrainState, Batch, Key], tuple[TrainState, dict[str, jax.Array]]]:
    """One optimisation step ``step(state, batch, key) -> (state, metrics)`` (not jitted).

    ``key`` drives dropout. ``metrics`` holds the minibatch ``loss`` (the objective above),
    ``nll`` and, for integer targets, ``accuracy``. Runs unchanged with the batch sharded over
    devices (``jax.sharding``): reductions are means over the batch axis.
    """
    if num_data < 1:
        raise ValueError(f"num_data: expected an integer >= 1, got {num_data}")
    if prior_prec < 0:
        raise ValueError(f"prior_prec: expected a precision >= 0, got {prior_prec}")

    def objective(params, model_state, batch, key):
        outputs, updates = model.apply(
            {"params": params, **model_state},
            batch.x,
            train=True,
            rngs={"dropout": key},
            mutable=[*model_state.keys(), "losses"],
        )
        nll = jnp.mean(loss_fn(outputs, batch.y))
        decay = 0.5 * prior_prec / num_data * optax.tree.norm(params, squared=True)
        sown = sum(jnp.sum(v) for v in jax.tree.leaves(updates.pop("losses", {})))
        metrics = {"nll": nll}
        if jnp.issubdtype(batch.y.dtype, jnp.integer):
            metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == batch.y)
        return nll + decay + sown, (dict(updates), metrics)

    def step(state: TrainState, batch: Batch, key: Key):
        (loss, (model_state, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state.model_state, batch, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params, model_state, opt_state, state.step + 1)
        return new_state, {"loss": loss, **metrics}

    return step


def make_epoch(
    step: Callable, x: jax.Array, y: jax.Array, batch_size: int
) -> Callable[[TrainState, Key], tuple[TrainState, dict[str, jax.Array]]]:
    """One epoch ``epoch(state, key) -> (state, mean metrics)``: a ``lax.scan`` of ``step`` over
    ``n // batch_size`` shuffled minibatches (not jitted; ``jax.vmap`` it over ensemble members).
    """

    def epoch(state: TrainState, key: Key):
        shuffle_key, dropout_key = jax.random.split(key)
        batches = epoch_batches(x, y, batch_size, shuffle_key)
        keys = jax.random.split(dropout_key, batches.x.shape[0])
        state, metrics = jax.lax.scan(lambda s, bk: step(s, *bk), state, (batches, keys))
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch


def make_epoch_loop(
    step: Callable, x: jax.Array, y: jax.Array, batch_size: int
) -> Callable[[TrainState, Key], tuple[TrainState, dict[str, jax.Array]]]:
    """``make_epoch``'s epoch (same batches, keys and result) as a host loop of jitted steps.

    Why not the scan: XLA:CPU emits the kernel gradient of a convolution inside a ``while``
    body with a non-canonical layout and runs it outside its fast convolution library, 5-20x
    slower (LeNet-5, 4 steps of 500: 1.6 s scanned, 0.31 s unrolled or looped); a host loop
    costs one dispatch per step, which keeps MLP epochs as fast as the scan.
    """
    jitted_step = jax.jit(step)

    @jax.jit
    def shuffle(x, y, key):
        shuffle_key, dropout_key = jax.random.split(key)
        batches = epoch_batches(x, y, batch_size, shuffle_key)
        return batches, jax.random.split(dropout_key, batches.x.shape[0])

    def epoch(state: TrainState, key: Key):
        batches, keys = shuffle(x, y, key)
        metrics = []
        for i in range(keys.shape[0]):
            state, step_metrics = jitted_step(state, Batch(batches.x[i], batches.y[i]), keys[i])
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *values: jnp.mean(jnp.stack(values)), *metrics)

    return epoch


def train(
    model: nn.Module,
    x,
    y,
    *,
    key: Key,
    epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    prior_prec: float = 0.0,
    loss_fn: LossFn = cross_entropy,
    validation: tuple[Any, Any] | None = None,
    variables: models.Variables | None = None,
    epoch_metrics: Callable[[models.Variables], dict[str, Any]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``(x, y)`` for ``epochs`` epochs of shuffled minibatches.

    Args:
      model: a flax module following :mod:`bnn_jax.models`' calling convention.
      x, y: training inputs ``[n, ...]`` and targets (int labels or regression targets).
      key: PRNG key for initialisation, shuffling and dropout (``fold_in`` per epoch and step).
      epochs, batch_size: positive integers; a batch size above ``n`` is reduced to ``n``.
        Each epoch takes ``n // batch_size`` full batches of a fresh permutation.
      optimizer: optax transformation (default ``optax.adam(1e-3)``).
      prior_prec: Gaussian prior precision tau (weight decay ``tau / (2 n) ||theta||^2``).
      loss_fn: per-example NLL (default: softmax cross-entropy with integer labels).
      validation: optional ``(x_val, y_val)`` evaluated after every epoch.
      variables: start from these variables instead of a fresh initialisation.
      epoch_metrics: optional ``fn(variables) -> {name: value}`` called after every epoch; its
        values are recorded in the history (e.g. the learned Concrete Dropout rates).
      progress: show a tqdm bar over epochs.

    Returns:
      ``TrainResult(variables, history)`` with per-epoch ``loss``, ``nll``, ``accuracy`` (means
      over the epoch's minibatches) and ``val_nll``, ``val_accuracy`` when ``validation`` given.

    Example:
      >>> ds = data.load("digits")
      >>> result = train(MLP((100,), 10), ds.x_train, ds.y_train, key=jax.random.key(0),
      ...                epochs=30, batch_size=64, prior_prec=1.0)
    """
    if epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    optimizer = optimizer or optax.adam(1e-3)
    init_key, loop_key = jax.random.split(key)
    if variables is None:
        variables = models.init(model, init_key, x.shape[1:])
    num_outputs = jax.eval_shape(lambda v: model.apply(v, x[:1]), variables).shape[-1]
    check_arrays(x, y, num_classes=num_outputs)
    if validation is not None:
        check_arrays(
            *validation, num_classes=num_outputs, x_name="validation[0]", y_name="validation[1]"
        )
    state = state_from_variables(variables, optimizer)
    batch_size = min(batch_size, x.shape[0])
    step = make_train_step(
        model, optimizer, num_data=x.shape[0], prior_prec=prior_prec, loss_fn=loss_fn
    )

    run_epoch = make_epoch_loop(step, x, y, batch_size)
    evaluate = jax.jit(lambda v, xv, yv: _evaluate(model, v, xv, yv, loss_fn))
    history: dict[str, list] = {}
    for epoch in tqdm(range(epochs), desc="train", disable=not progress, leave=False):
        state, metrics = run_epoch(state, jax.random.fold_in(loop_key, epoch))
        if validation is not None:
            metrics.update(evaluate(state.variables, *map(jnp.asarray, validation)))
        if epoch_metrics is not None:
            metrics.update(epoch_metrics(state.variables))
        for name, value in metrics.items():
            history.setdefault(name, []).append(np.asarray(value))
    return TrainResult(state.variables, {k: np.asarray(v) for k, v in history.items()})


def _evaluate(model, variables, x, y, loss_fn) -> dict[str, jax.Array]:
    outputs = model.apply(variables, x)
    metrics = {"val_nll": jnp.mean(loss_fn(outputs, y))}
    if jnp.issubdtype(y.dtype, jnp.integer):
        metrics["val_accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == y)
    return metrics
