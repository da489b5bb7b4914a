import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special

from bnn_jax import data, dropout, losses, models, training, uncertainty
from bnn_jax.types import Batch


def _keep_mean(p: float, temperature: float) -> float:
    """E[1 - sigmoid((logit p + logit u) / t)], u ~ U(0, 1), by quadrature."""
    logit_p = np.log(p) - np.log1p(-p)
    f = lambda u: scipy.special.expit(-(logit_p + np.log(u) - np.log1p(-u)) / temperature)
    return scipy.integrate.quad(f, 0.0, 1.0, points=[1 - p], limit=200)[0]


def test_relaxed_mask_mean_is_the_keep_probability():
    """Through the layer (identity kernel, inputs of ones): mean(out) (1 - p) is the mask mean."""
    layer = models.ConcreteDropout(nn.Dense(8, use_bias=False))

    @jax.jit
    def masks(p_logit):
        params = {"p_logit": p_logit, "layer": {"kernel": jnp.eye(8)}}
        out = layer.apply(
            {"params": params},
            jnp.ones((20_000, 8)),
            train=True,
            rngs={"dropout": jax.random.key(1)},
        )
        return out * jax.nn.sigmoid(-p_logit)

    for p in (0.1, 0.3, 0.8):
        z = np.asarray(masks(jnp.float32(np.log(p / (1 - p)))), np.float64)
        exact = _keep_mean(p, 0.1)
        assert abs(z.mean() - exact) < 4 * z.std() / np.sqrt(z.size)
        assert abs(exact - (1 - p)) < 2e-3  # the relaxation's bias at temperature 0.1
        assert z.min() >= 0 and z.max() <= 1 + 1e-6


def _forward_reference(params, x, uniforms, temperature):
    """The notebook network in numpy: dense_0 + ReLU, then relaxed dropout of the inputs of
    dense_1 (+ ReLU) and dense_2, rescaled by 1 / (1 - p). ``uniforms=None``: no dropout."""
    h = np.maximum(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"], 0)
    for i in (1, 2):
        if uniforms is not None:
            p = scipy.special.expit(params[f"concrete_dropout_{i}"]["p_logit"])
            u = uniforms[f"concrete_dropout_{i}"]
            logit = np.log(p) - np.log(1 - p) + np.log(u) - np.log(1 - u)
            h = h * (1 - scipy.special.expit(logit / temperature)) / (1 - p)
        h = h @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"]
        if i == 1:
            h = np.maximum(h, 0)
    return h


def _objective_reference(params, x, y, uniforms, *, wr, dr, temperature):
    logits = _forward_reference(params, x, uniforms, temperature)
    log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    nll = -np.mean(log_probs[np.arange(len(y)), y])
    regularizer = 0.0
    for i in (1, 2):
        p = scipy.special.expit(params[f"concrete_dropout_{i}"]["p_logit"])
        kernel = params[f"dense_{i}"]["kernel"]
        input_dim = kernel.shape[0]
        regularizer += wr * np.sum(kernel**2) / (1 - p)
        regularizer += dr * input_dim * (p * np.log(p) + (1 - p) * np.log(1 - p))
    return nll + regularizer


def test_objective_and_gradient_match_a_hand_computation_with_fixed_noise(x64):
    wr, dr, temperature = 0.03, 0.2, 0.1
    model = models.ConcreteDropoutMLP(
        (5, 4), 3, weight_regularizer=wr, dropout_regularizer=dr, init_min=0.2, init_max=0.4
    )
    x = np.random.default_rng(0).normal(size=(6, 2))
    y = np.array([0, 1, 2, 2, 1, 0])
    params = jax.jit(lambda k: models.init(model, k, (2,)))(jax.random.key(0))["params"]
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
    for i in (1, 2):  # initial p drawn from [init_min, init_max]
        assert 0.2 <= scipy.special.expit(params[f"concrete_dropout_{i}"]["p_logit"]) <= 0.4
    rng = np.random.default_rng(1)
    uniforms = {
        "concrete_dropout_1": rng.uniform(size=(6, 5)),
        "concrete_dropout_2": rng.uniform(size=(6, 4)),
    }

    def fixed_noise(next_fun, args, kwargs, context):
        if context.method_name == "uniform_noise":
            return jnp.asarray(uniforms[context.module.name])
        return next_fun(*args, **kwargs)

    optimizer = optax.sgd(1.0)
    state = training.state_from_variables({"params": params}, optimizer)
    step = training.make_train_step(model, optimizer, num_data=100)
    with nn.intercept_methods(fixed_noise):  # active while jit traces the step
        new_state, metrics = jax.jit(step)(
            state, Batch(jnp.asarray(x), jnp.asarray(y)), jax.random.key(2)
        )
    expected = _objective_reference(params, x, y, uniforms, wr=wr, dr=dr, temperature=temperature)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-12)

    # SGD with lr 1: the update is minus the gradient; check it against central differences,
    # for the dropout logits (through the relaxed mask and 1/(1-p)) and one kernel.
    grads = jax.tree.map(lambda a, b: a - b, params, new_state.params)
    for name, leaf in [
        ("concrete_dropout_1", "p_logit"),
        ("concrete_dropout_2", "p_logit"),
        ("dense_1", "kernel"),
    ]:
        value = np.asarray(params[name][leaf], np.float64)
        flat_index = np.unravel_index(value.size - 1, value.shape)
        shifted = []
        for h in (1e-6, -1e-6):
            moved = value.copy()
            moved[flat_index] += h
            trial = {**params, name: {**params[name], leaf: moved}}
            shifted.append(
                _objective_reference(trial, x, y, uniforms, wr=wr, dr=dr, temperature=temperature)
            )
        numeric = (shifted[0] - shifted[1]) / 2e-6
        np.testing.assert_allclose(np.asarray(grads[name][leaf])[flat_index], numeric, rtol=1e-6)

    deterministic = model.apply({"params": params}, jnp.asarray(x))  # no mask, no rescaling
    np.testing.assert_allclose(
        deterministic, _forward_reference(params, x, None, temperature), rtol=1e-12
    )


def test_spatial_variant_drops_whole_channels_and_counts_channels():
    wr, dr, p = 0.01, 0.1, 0.4
    layer = models.SpatialConcreteDropout(
        nn.Conv(5, (1, 1), use_bias=False),
        weight_regularizer=wr,
        dropout_regularizer=dr,
    )
    x = jnp.ones((3, 4, 4, 5))
    p_logit = jnp.float32(np.log(p / (1 - p)))
    params = {"p_logit": p_logit, "layer": {"kernel": jnp.eye(5)[None, None]}}
    apply = functools.partial(layer.apply, train=True, mutable=["losses"])
    out, state = jax.jit(apply)({"params": params}, x, rngs={"dropout": jax.random.key(1)})
    out = np.asarray(out)
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1, :], out.shape), rtol=1e-6)
    assert np.unique(np.round(out[:, 0, 0, :], 5)).size > 5  # channels and examples differ
    expected = wr * 5 / (1 - p) + dr * 5 * (p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(state["losses"]["concrete_dropout"], expected, rtol=1e-5)


def _fit_rates(num_data: int, epochs: int, batch_size: int) -> dict[str, float]:
    """Regression y = 2x + 1 + N(0, 1) with the guidance wr = l^2 / N, dr = 2 / N."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_data, 1)).astype(np.float32)
    y = (2 * x + 1 + rng.normal(size=(num_data, 1))).astype(np.float32)
    model = models.ConcreteDropoutMLP(
        (32, 32), 1, weight_regularizer=1e-4 / num_data, dropout_regularizer=2 / num_data
    )
    result = training.train(
        model,
        x,
        y,
        key=jax.random.key(0),
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optax.adam(1e-2),
        likelihood=losses.gaussian(sigma=1.0),
        progress=False,
    )
    return {k: float(v) for k, v in dropout.concrete_rates(result.variables["params"]).items()}


def test_more_data_gives_smaller_dropout_rates():
    """With wr, dr ~ 1/N the regulariser's pull towards p = 0.5 fades as N grows and the data
    term, which prefers less noise, takes over: p rises above its initial 0.1 for N = 16 and
    falls below it for N = 1024 (same number of optimiser steps)."""
    small = _fit_rates(16, epochs=160, batch_size=8)
    large = _fit_rates(1024, epochs=20, batch_size=64)
    for layer in small:
        assert small[layer] > 0.2, small
        assert large[layer] < 0.1, large


def test_notebook_network_trains_on_toy2d_and_records_rates():
    ds = data.load("toy2d", seed=0)
    n = ds.x_train.shape[0]
    model = models.ConcreteDropoutMLP(
        (500, 500), 2, weight_regularizer=1e-4 / n, dropout_regularizer=1 / n
    )
    epochs = 25
    result = training.train(
        model,
        ds.x_train,
        ds.y_train,
        key=jax.random.key(0),
        epochs=epochs,
        batch_size=32,
        optimizer=optax.adam(1e-3),
        progress=False,
        epoch_metrics=lambda v: dropout.concrete_rates(v["params"]),
    )
    for layer in ("concrete_dropout_1", "concrete_dropout_2"):
        rates = result.history[layer]
        assert rates.shape == (epochs,)
        assert np.all((rates > 0) & (rates < 1)) and not np.allclose(rates, 0.1)
    lp = dropout.sample_log_probs(
        model, result.variables, ds.x_test, key=jax.random.key(1), num_samples=10
    )
    accuracy = np.mean(np.argmax(uncertainty.mean_log_probs(lp), -1) == ds.y_test)
    assert accuracy > 0.9, accuracy


def test_concrete_rates_reads_every_layer_and_keeps_member_axes():
    model = models.ConcreteDropoutMLP((4, 4, 4), 2, init_min=0.05, init_max=0.3)
    params = jax.jit(lambda k: models.init(model, k, (3,)))(jax.random.key(0))["params"]
    rates = dropout.concrete_rates(params)
    assert set(rates) == {"concrete_dropout_1", "concrete_dropout_2", "concrete_dropout_3"}
    for name, rate in rates.items():
        np.testing.assert_allclose(rate, scipy.special.expit(params[name]["p_logit"]), rtol=1e-6)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    assert dropout.concrete_rates(stacked)["concrete_dropout_1"].shape == (2,)
    assert dropout.concrete_rates(jax.jit(lambda p: p)(params)).keys() == rates.keys()


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"init_min": 0.0}, "init_min, init_max"),
        ({"init_max": 1.0}, "init_min, init_max"),
        ({"init_min": 0.3, "init_max": 0.2}, "init_min, init_max"),
        ({"weight_regularizer": -1.0}, "weight_regularizer"),
        ({"dropout_regularizer": -1.0}, "dropout_regularizer"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"weight_regularizer": float("nan")}, "weight_regularizer"),
    ],
)
def test_bad_attributes_are_value_errors_at_construction(attributes, message):
    with pytest.raises(ValueError, match=message):
        models.ConcreteDropout(nn.Dense(2), **attributes)
    with pytest.raises(ValueError, match=message):
        models.ConcreteDropoutMLP((4,), 2, **attributes)
