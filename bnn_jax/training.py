"""Maximum-a-posteriori training with optax, weight decay expressed as a Gaussian prior.

The objective of one step on a minibatch ``B`` drawn from ``N`` training examples is the
negative log posterior per example,

    L(theta) = mean_{n in B} nll(f(x_n; theta), y_n) + prior_prec / (2 N) ||theta||^2
               + sum(regularisers the model sows into its "losses" collection),

with ``nll`` the likelihood's (``losses.categorical()`` by default, ``losses.gaussian(sigma=s)``
for regression), so ``prior_prec`` is the precision tau of the prior ``N(0, tau^-1 I)`` over all
parameters: the same tau the Laplace approximation adds to the summed curvature (``scale = 1``).
``train`` runs an epoch as a host loop of one jitted step per shuffled minibatch
(``make_epoch_loop``); ``make_epoch`` is the same epoch as one ``lax.scan``, for vmapping over
ensemble members inside ``jit``.

Models: flax.linen modules following :mod:`bnn_jax.models`' calling convention, or flax.nnx
modules called as ``module(x)`` (trained in ``.train()`` mode with every RNG stream reseeded
from the step's key, evaluated in ``.eval()`` mode; their ``variables`` are the full
``nnx.State``, for ``models.nnx_apply_fn(module, variables)`` or ``nnx.update(module,
variables)``; nnx models sow no regularisers). The module passed in is never changed.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bnn_jax import checks, losses, models
from bnn_jax._tqdm import tqdm
from bnn_jax.data import check_arrays, epoch_batches
from bnn_jax.models import nnx as nnx_models
from bnn_jax.types import Batch, Key, Params

Model = nn.Module | nnx.Module


class TrainState(NamedTuple):
    """Parameters, non-trainable collections (BatchNorm statistics; for nnx models the other
    variables as an ``nnx.State``), optimiser state, step."""

    params: Params
    model_state: dict[str, Any]
    opt_state: optax.OptState
    step: jax.Array

    @property
    def variables(self) -> models.Variables:
        """The flax variables dict, ready for ``model.apply`` (linen models)."""
        return {"params": self.params, **self.model_state}


def variables_of(model: Model, state: TrainState):
    """The trained variables: linen's dict, or the full ``nnx.State`` of an nnx model."""
    if isinstance(model, nnx.Module):
        return nnx_models.join_variables(model, state.params, state.model_state)
    return state.variables


class TrainResult(NamedTuple):
    """Trained variables and per-epoch history (numpy arrays keyed by metric name)."""

    variables: models.Variables
    history: dict[str, np.ndarray]


def init_state(
    model: Model, optimizer: optax.GradientTransformation, key: Key, input_shape
) -> TrainState:
    """Initialise model variables and optimiser state (an nnx model is initialised already:
    its own state is used and ``key`` is not)."""
    return state_from_variables(_initial_variables(model, key, input_shape), optimizer)


def _initial_variables(model: Model, key: Key, input_shape):
    if isinstance(model, nnx.Module):
        return nnx.state(model)
    return models.init(model, key, tuple(input_shape))


def state_from_variables(variables, optimizer) -> TrainState:
    """A fresh ``TrainState`` (step 0, new optimiser state) around existing variables (a linen
    variables dict, or the ``nnx.State`` of an nnx model)."""
    if isinstance(variables, nnx.State):
        params, model_state = nnx_models.split_variables(variables)
    else:
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k not in ("params", "losses")}
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))


def _forward_fns(model: Model):
    """``forward(params, model_state, x, key) -> (outputs, model_state, sown)`` in training mode
    and ``predict(params, model_state, x) -> outputs`` in evaluation mode."""
    if isinstance(model, nnx.Module):
        train_forward, predict = nnx_models.forward_fns(model)

        def forward(params, model_state, x, key):
            outputs, model_state = train_forward(params, model_state, x, key)
            return outputs, model_state, 0.0

        return forward, predict

    def forward(params, model_state, x, key):
        outputs, updates = model.apply(
            {"params": params, **model_state},
            x,
            train=True,
            rngs={"dropout": key},
            mutable=[*model_state.keys(), "losses"],
        )
        updates = dict(updates)
        sown = sum(jnp.sum(v) for v in jax.tree.leaves(updates.pop("losses", {})))
        return outputs, updates, sown

    def predict(params, model_state, x):
        return model.apply({"params": params, **model_state}, x)

    return forward, predict


def make_train_step(
    model: Model,
    optimizer: optax.GradientTransformation,
    *,
    num_data: int,
    prior_prec: float = 0.0,
    likelihood: losses.Likelihood | None = None,
) -> Callable[[TrainState, Batch, Key], tuple[TrainState, dict[str, jax.Array]]]:
    """One optimisation step ``step(state, batch, key) -> (state, metrics)`` (not jitted).

    ``key`` drives dropout. ``metrics`` holds the minibatch ``loss`` (the objective above),
    ``nll`` and, for a classification likelihood (default ``losses.categorical()``),
    ``accuracy``. Runs unchanged with the batch sharded over devices (``jax.sharding``):
    reductions are means over the batch axis.
    """
    num_data = checks.positive_int("num_data", num_data)
    checks.nonnegative("prior_prec", prior_prec)
    likelihood = losses.categorical() if likelihood is None else likelihood
    forward, _ = _forward_fns(model)

    def objective(params, model_state, batch, key):
        outputs, model_state, sown = forward(params, model_state, batch.x, key)
        nll = jnp.mean(likelihood.nll(outputs, batch.y))
        decay = 0.5 * prior_prec / num_data * optax.tree.norm(params, squared=True)
        metrics = {"nll": nll}
        if likelihood.task == "classification":
            metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == batch.y)
        return nll + decay + sown, (model_state, metrics)

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
    model: Model,
    x,
    y,
    *,
    key: Key,
    epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    prior_prec: float = 0.0,
    likelihood: losses.Likelihood | None = None,
    validation: tuple[Any, Any] | None = None,
    variables=None,
    epoch_metrics: Callable[[Any], dict[str, Any]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``(x, y)`` for ``epochs`` epochs of shuffled minibatches.

    Args:
      model: a flax.linen module following :mod:`bnn_jax.models`' calling convention, or an
        ``nnx.Module`` (module docstring).
      x, y: training inputs ``[n, ...]`` and targets (labels ``[n]`` for classification,
        ``[n, K]`` floats for regression), checked by the likelihood.
      key: PRNG key for initialisation, shuffling and dropout (``fold_in`` per epoch and step).
      epochs, batch_size: positive integers; a batch size above ``n`` is reduced to ``n``.
        Each epoch takes ``n // batch_size`` full batches of a fresh permutation.
      optimizer: optax transformation (default ``optax.adam(1e-3)``).
      prior_prec: Gaussian prior precision tau (weight decay ``tau / (2 n) ||theta||^2``).
      likelihood: from :mod:`bnn_jax.losses` (default ``losses.categorical()``; e.g.
        ``losses.gaussian(sigma=0.1)`` for regression).
      validation: optional ``(x_val, y_val)`` evaluated after every epoch.
      variables: start from these variables (linen dict, or an nnx model's ``nnx.State``)
        instead of a fresh initialisation (linen) or the module's own state (nnx).
      epoch_metrics: optional ``fn(variables) -> {name: value}`` called after every epoch; its
        values are recorded in the history (e.g. the learned Concrete Dropout rates).
      progress: show a tqdm bar over epochs.

    Returns:
      ``TrainResult(variables, history)`` with per-epoch ``loss``, ``nll``, ``accuracy``
      (classification; means over the epoch's minibatches) and ``val_nll``, ``val_accuracy``
      when ``validation`` is given.

    Raises:
      ValueError: for bad arguments (naming them), and when training diverges (a non-finite
        loss or parameters after an epoch; with finite data and ``prior_prec`` the cause is the
        optimiser, e.g. a NaN or too large learning rate).

    Example:
      >>> ds = data.load("digits")
      >>> result = train(MLP((100,), 10), ds.x_train, ds.y_train, key=jax.random.key(0),
      ...                epochs=30, batch_size=64, prior_prec=1.0)
    """
    checks.key("key", key)
    epochs = checks.positive_int("epochs", epochs)
    batch_size = checks.positive_int("batch_size", batch_size)
    checks.nonnegative("prior_prec", prior_prec)
    likelihood = losses.categorical() if likelihood is None else likelihood
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty array [n, ...], got shape {x.shape}")
    optimizer = optimizer or optax.adam(1e-3)
    init_key, loop_key = jax.random.split(key)
    if variables is None:
        variables = _initial_variables(model, init_key, x.shape[1:])
    state = state_from_variables(variables, optimizer)
    _, predict = _forward_fns(model)
    num_outputs = jax.eval_shape(predict, state.params, state.model_state, x[:1]).shape[-1]
    _check_data(likelihood, num_outputs, x, y, "x", "y")
    if validation is not None:
        validation = tuple(map(jnp.asarray, validation))
        _check_data(likelihood, num_outputs, *validation, "validation[0]", "validation[1]")
    batch_size = min(batch_size, x.shape[0])
    step = make_train_step(
        model, optimizer, num_data=x.shape[0], prior_prec=prior_prec, likelihood=likelihood
    )

    run_epoch = make_epoch_loop(step, x, y, batch_size)
    evaluate = jax.jit(lambda p, s, xv, yv: evaluate_predictions(predict(p, s, xv), yv, likelihood))
    finite = jax.jit(lambda p: jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in p])))
    history: dict[str, list] = {}
    for epoch in tqdm(range(epochs), desc="train", disable=not progress, leave=False):
        state, metrics = run_epoch(state, jax.random.fold_in(loop_key, epoch))
        _check_divergence(epoch, metrics["loss"], finite(jax.tree.leaves(state.params)))
        if validation is not None:
            metrics.update(evaluate(state.params, state.model_state, *validation))
        if epoch_metrics is not None:
            metrics.update(epoch_metrics(variables_of(model, state)))
        for name, value in metrics.items():
            history.setdefault(name, []).append(np.asarray(value))
    history = {k: np.asarray(v) for k, v in history.items()}
    return TrainResult(variables_of(model, state), history)


def _check_data(likelihood, num_outputs: int, x, y, x_name: str, y_name: str) -> None:
    classification = likelihood.task == "classification"
    check_arrays(
        x, y, num_classes=num_outputs if classification else None, x_name=x_name, y_name=y_name
    )
    try:
        likelihood.check_targets((x.shape[0], num_outputs), y)
    except ValueError as err:
        if y_name == "y":
            raise
        raise ValueError(f"{y_name}: {err}") from None


def _check_divergence(epoch: int, loss, params_finite) -> None:
    loss, params_finite = float(loss), bool(params_finite)
    if np.isfinite(loss) and params_finite:
        return
    parameters = "finite" if params_finite else "not finite"
    raise ValueError(
        f"optimizer: training diverged in epoch {epoch} (mean loss {loss}, parameters "
        f"{parameters}); the data and prior_prec are finite, so the optimiser's updates are not: "
        "check its learning rate (NaN or too large)"
    )


def evaluate_predictions(outputs, y, likelihood) -> dict[str, jax.Array]:
    """``val_nll`` (mean NLL) and, for classification, ``val_accuracy`` of ``outputs``."""
    metrics = {"val_nll": jnp.mean(likelihood.nll(outputs, y))}
    if likelihood.task == "classification":
        metrics["val_accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == y)
    return metrics
