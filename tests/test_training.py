import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnn_jax import data, losses, models, training
from bnn_jax.types import Batch


def test_mlp_reaches_95_percent_on_digits():
    ds = data.load("digits", seed=0)
    model = models.MLP((100,), 10)
    result = training.train(
        model,
        ds.x_train,
        ds.y_train,
        key=jax.random.key(0),
        epochs=30,
        batch_size=64,
        prior_prec=1.0,
        validation=(ds.x_val, ds.y_val),
        progress=False,
    )
    logits = models.make_apply_fn(model, result.variables)(result.variables["params"], ds.x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == ds.y_test))
    assert accuracy >= 0.95, accuracy
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert set(result.history) == {"loss", "nll", "accuracy", "val_nll", "val_accuracy"}


@pytest.mark.parametrize(
    "model", [models.MLP((8,), 3, dropout_rate=0.5), models.LeNet5(3, conv2_padding="SAME")]
)
def test_epoch_loop_matches_the_scanned_epoch(model):
    """Same shuffles, dropout keys, updates and mean metrics, host loop or ``lax.scan``."""
    x = jax.random.uniform(jax.random.key(0), (40, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (40,), 0, 3)
    variables = models.init(model, jax.random.key(2), x.shape[1:])
    optimizer = optax.adam(1e-2)
    step = training.make_train_step(model, optimizer, num_data=40, prior_prec=1.0)
    state = training.state_from_variables(variables, optimizer)
    looped, loop_metrics = training.make_epoch_loop(step, x, y, 16)(state, jax.random.key(3))
    scanned, scan_metrics = jax.jit(training.make_epoch(step, x, y, 16))(state, jax.random.key(3))
    assert int(looped.step) == int(scanned.step) == 2  # 40 // 16 full batches
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, looped.params, scanned.params)
    jax.tree.map(close, loop_metrics, scan_metrics)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), looped.params, state.params)
    assert min(jax.tree.leaves(moved)) > 0  # every parameter was updated


def test_step_is_sgd_on_the_negative_log_posterior(x64):
    """One SGD step equals theta - lr * (grad mean NLL + tau / N theta), computed by hand."""
    model = models.MLP((3,), 2)
    x = jax.random.normal(jax.random.key(0), (5, 4), jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1])
    lr, tau, n = 0.1, 2.0, 50
    state = training.init_state(model, optax.sgd(lr), jax.random.key(1), (4,))
    state = state._replace(params=jax.tree.map(lambda p: p.astype(jnp.float64), state.params))
    state = state._replace(opt_state=optax.sgd(lr).init(state.params))
    step = training.make_train_step(model, optax.sgd(lr), num_data=n, prior_prec=tau)
    new_state, metrics = step(state, Batch(x, y), jax.random.key(2))

    def nll(params):
        logits = model.apply({"params": params}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    grads = jax.grad(nll)(state.params)
    expected = jax.tree.map(lambda p, g: p - lr * (g + tau / n * p), state.params, grads)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    sq = sum(jnp.sum(p**2) for p in jax.tree.leaves(state.params))
    np.testing.assert_allclose(metrics["loss"], nll(state.params) + 0.5 * tau / n * sq, rtol=1e-12)


class _Sowing(nn.Module):
    """A linear model that sows a penalty 0.5 * c * ||W||^2 into "losses"."""

    c: float

    @nn.compact
    def __call__(self, x, *, train=False, mc_dropout=False):
        dense = nn.Dense(2)
        out = dense(x)
        self.sow(
            "losses", "penalty", 0.5 * self.c * jnp.sum(dense.variables["params"]["kernel"] ** 2)
        )
        return out


def test_sown_losses_are_added_to_the_objective():
    x, y = jnp.ones((4, 3)), jnp.array([0, 1, 0, 1])
    state = training.init_state(_Sowing(0.0), optax.sgd(1.0), jax.random.key(0), (3,))
    grads = {}
    for c in (0.0, 3.0):
        step = training.make_train_step(_Sowing(c), optax.sgd(1.0), num_data=4)
        new, _ = step(state, Batch(x, y), jax.random.key(0))
        grads[c] = jax.tree.map(jnp.subtract, state.params, new.params)
    np.testing.assert_allclose(
        grads[3.0]["Dense_0"]["kernel"] - grads[0.0]["Dense_0"]["kernel"],
        3.0 * state.params["Dense_0"]["kernel"],
        rtol=1e-5,
    )


def test_batchnorm_statistics_are_updated_and_epoch_metrics_recorded():
    ds = data.load("digits", num_train=64)
    model = models.ResNet(depth=8, width=4, num_outputs=10)
    init = models.init(model, jax.random.key(0), ds.input_shape)
    result = training.train(
        model,
        ds.x_train,
        ds.y_train,
        key=jax.random.key(0),
        epochs=2,
        batch_size=32,
        variables=init,
        progress=False,
        epoch_metrics=lambda v: {"kernel_norm": optax.tree.norm(v["params"])},
    )
    before, after = init["batch_stats"], result.variables["batch_stats"]
    assert not np.allclose(jax.tree.leaves(before)[0], jax.tree.leaves(after)[0])
    assert result.history["kernel_norm"].shape == (2,)


def test_bad_input_errors():
    model, x, y = models.MLP((4,), 3), np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    common = dict(key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1, got 0"):
        training.train(model, x, y, epochs=0, batch_size=4, **common)
    with pytest.raises(ValueError, match="batch_size"):
        training.train(model, x, y, epochs=1, batch_size=-1, **common)
    with pytest.raises(ValueError, match="x: expected finite"):
        training.train(model, np.full_like(x, np.nan), y, epochs=1, batch_size=4, **common)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        training.train(model, x, y + 3, epochs=1, batch_size=4, **common)
    with pytest.raises(ValueError, match="prior_prec"):
        training.make_train_step(model, optax.sgd(0.1), num_data=8, prior_prec=-1.0)


def _probe_data():
    x = jax.random.normal(jax.random.key(0), (8, 2))
    return models.MLP((4,), 3), x, jnp.arange(8) % 3


def test_nan_prior_precision_is_refused_before_training():
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match="prior_prec: expected a finite value >= 0, got nan"):
        training.train(
            model, x, y, key=jax.random.key(0), epochs=1, batch_size=4, prior_prec=float("nan")
        )


@pytest.mark.parametrize("epochs, batch_size", [(1, 8), (2, 4)])
def test_nan_learning_rate_is_reported_as_divergence(epochs, batch_size):
    """One step (finite loss, NaN parameters) or several: a clear error naming the optimizer."""
    model, x, y = _probe_data()
    with pytest.raises(
        ValueError, match=r"optimizer: training diverged in epoch 0 .*learning rate"
    ):
        training.train(
            model,
            x,
            y,
            key=jax.random.key(0),
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optax.sgd(float("nan")),
            progress=False,
        )


def test_float_labels_for_a_classification_likelihood_are_refused():
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match="y: expected an integer dtype for class labels"):
        training.train(
            model, x, y.astype(jnp.float32), key=jax.random.key(0), epochs=1, batch_size=4
        )


def test_labels_of_shape_n_by_1_are_refused():
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match=r"y: expected integer labels of shape \(8,\)"):
        training.train(model, x, y[:, None], key=jax.random.key(0), epochs=1, batch_size=4)


def test_validation_targets_are_checked_by_the_likelihood():
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match=r"validation\[1\]: y: expected an integer dtype"):
        training.train(
            model,
            x,
            y,
            key=jax.random.key(0),
            epochs=1,
            batch_size=4,
            validation=(x, y.astype(jnp.float32)),
        )


def test_empty_data_is_refused():
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match=r"x: expected a non-empty array \[n, ...\]"):
        training.train(model, x[:0], y[:0], key=jax.random.key(0), epochs=1, batch_size=4)


@pytest.mark.parametrize("name, value", [("batch_size", 2.5), ("epochs", 1.5), ("epochs", "3")])
def test_non_integer_batch_size_and_epochs_are_refused(name, value):
    model, x, y = _probe_data()
    kwargs = {"epochs": 1, "batch_size": 4, name: value}
    with pytest.raises(ValueError, match=f"{name}: expected an integer >= 1, got {value!r}"):
        training.train(model, x, y, key=jax.random.key(0), **kwargs)


@pytest.mark.parametrize("key", [0, "abc", None])
def test_keys_that_are_not_prng_keys_are_refused(key):
    model, x, y = _probe_data()
    with pytest.raises(ValueError, match=r"key: expected a PRNG key from jax\.random\.key"):
        training.train(model, x, y, key=key, epochs=1, batch_size=4)


def test_regression_training_with_a_gaussian_likelihood():
    """Float targets [n, K] with ``likelihood=losses.gaussian``: the NLL is the Gaussian's,
    the history has no accuracy, and classification-style targets are refused."""
    x = jax.random.normal(jax.random.key(0), (32, 2))
    y = jnp.stack([x[:, 0] - x[:, 1], 2 * x[:, 0]], axis=1)
    lik = losses.gaussian(sigma=0.5)
    model = models.MLP((16,), 2)
    result = training.train(
        model,
        x,
        y,
        key=jax.random.key(1),
        epochs=60,
        batch_size=16,
        optimizer=optax.adam(1e-2),
        likelihood=lik,
        validation=(x, y),
        progress=False,
    )
    assert set(result.history) == {"loss", "nll", "val_nll"}
    outputs = models.make_apply_fn(model, result.variables)(result.variables["params"], x)
    np.testing.assert_allclose(result.history["val_nll"][-1], lik.nll(outputs, y).mean(), rtol=1e-5)
    assert result.history["nll"][-1] < result.history["nll"][0] - 1.0
    with pytest.raises(ValueError, match="y: expected a floating dtype"):
        training.train(
            model,
            x,
            jnp.zeros((32, 2), jnp.int32),
            key=jax.random.key(1),
            epochs=1,
            batch_size=16,
            likelihood=lik,
        )
