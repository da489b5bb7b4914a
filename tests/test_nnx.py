"""flax.nnx models against the linen models with the same weights: identical layers, curvature,
predictions and training."""

import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bnn_jax import curvature, data, laplace, losses, models, predictive, training

# ---------------------------------------------------------------- the same three models, twice


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(4, 5, rngs=rngs)
        self.out = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, mc_dropout=False):
        return nn.Dense(3, name="out")(jnp.tanh(nn.Dense(5, name="hidden")(x)))


class NnxCNN(nnx.Module):
    """Two convolutions (zero padding: sliced patches; circular: the identity-kernel patches),
    BatchNorm (running averages in ``rest``) and a Dense head without bias."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(2, rngs=rngs)
        self.wrap = nnx.Conv(2, 2, (2, 2), strides=2, padding="CIRCULAR", rngs=rngs)
        self.head = nnx.Linear(8, 3, use_bias=False, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.norm(self.conv(x)))
        h = jnp.tanh(self.wrap(h))
        return self.head(h.reshape(h.shape[0], -1))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, mc_dropout=False):
        h = nn.Conv(2, (3, 3), name="conv")(x)
        h = jnp.tanh(nn.BatchNorm(use_running_average=not train, name="norm")(h))
        h = jnp.tanh(nn.Conv(2, (2, 2), strides=2, padding="CIRCULAR", name="wrap")(h))
        return nn.Dense(3, use_bias=False, name="head")(h.reshape(h.shape[0], -1))


class NnxNormed(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(4, 5, rngs=rngs)
        self.norm = nnx.LayerNorm(5, rngs=rngs)
        self.out = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.norm(self.hidden(x))))


class LinenNormed(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False, mc_dropout=False):
        h = nn.LayerNorm(name="norm")(nn.Dense(5, name="hidden")(x))
        return nn.Dense(3, name="out")(jnp.tanh(h))


PAIRS = {
    "mlp": (NnxMLP, LinenMLP, (4,)),
    "cnn": (NnxCNN, LinenCNN, (4, 4, 1)),
    "layernorm": (NnxNormed, LinenNormed, (4,)),
}


def _pair(name, dtype=jnp.float64):
    """``(nnx apply_fn, nnx params, linen apply_fn, linen params)`` with equal weights and
    equal parameter trees (so equal ``tree.ravel`` order), and data ``x [6, ...]``, ``y``."""
    nnx_cls, linen_cls, shape = PAIRS[name]
    module = nnx_cls(nnx.Rngs(0))
    if name == "cnn":  # running statistics away from (0, 1), so that closing over them matters
        module.norm.mean.set_value(jnp.array([0.3, -0.2]))
        module.norm.var.set_value(jnp.array([2.0, 0.5]))
    apply_nnx, params = models.nnx_apply_fn(module)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    variables = {"params": params}
    if name == "cnn":
        stats = {"mean": module.norm.mean.get_value(), "var": module.norm.var.get_value()}
        variables["batch_stats"] = {"norm": stats}
    apply_linen = models.make_apply_fn(linen_cls(), variables)
    x = jax.random.normal(jax.random.key(1), (6, *shape), dtype)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    return apply_nnx, params, apply_linen, params, x, y


@pytest.mark.parametrize("name", PAIRS)
def test_nnx_layers_and_captured_statistics_match_linen(x64, name):
    apply_nnx, p_nnx, apply_linen, p_linen, x, _ = _pair(name)
    np.testing.assert_allclose(apply_nnx(p_nnx, x), apply_linen(p_linen, x), rtol=1e-12)
    layers_nnx = curvature.find_layers(apply_nnx, p_nnx, x)
    layers_linen = curvature.find_layers(apply_linen, p_linen, x)
    assert layers_nnx == layers_linen  # same paths, kinds, shapes, bias paths
    cotangent = jax.random.normal(jax.random.key(2), (6, 3), x.dtype)
    cap_nnx = curvature.capture(apply_nnx, p_nnx, x)
    cap_linen = curvature.capture(apply_linen, p_linen, x)
    for layer in layers_nnx:
        np.testing.assert_allclose(cap_nnx.inputs[layer.path], cap_linen.inputs[layer.path])
        np.testing.assert_allclose(
            cap_nnx.backward(cotangent)[layer.path], cap_linen.backward(cotangent)[layer.path]
        )


FACTORIES = {
    "kfac": lambda a, lik, shape: curvature.kfac(a, lik, fisher=curvature.exact_fisher()),
    "efb": lambda a, lik, shape: curvature.efb(a, lik, fisher=curvature.exact_fisher()),
    "block_diagonal": lambda a, lik, shape: curvature.block_diagonal(
        a, lik, fisher=curvature.exact_fisher()
    ),
    "diagonal": lambda a, lik, shape: curvature.diagonal(a, lik, fisher=curvature.exact_fisher()),
}


def _fit(factory, apply_fn, params, x, y):
    lik = losses.categorical()
    curv = FACTORIES[factory](apply_fn, lik, x.shape[1:])
    batches = data.Batches(np.asarray(x), np.asarray(y), 3)
    return laplace.fit(
        curv,
        params,
        batches,
        key=jax.random.key(0),
        prior_prec=0.5,
        progress=False,
    )


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("name", PAIRS)
def test_nnx_curvature_and_predictives_equal_linen(x64, name, factory):
    """Curvature (``to_dense``) and the GLM probit predictive for every structure; for KFAC
    also MC (weight samples), GLM with the MC link and local reparameterisation (same draws)."""
    apply_nnx, p_nnx, apply_linen, p_linen, x, y = _pair(name)
    post_nnx = _fit(factory, apply_nnx, p_nnx, x, y)
    post_linen = _fit(factory, apply_linen, p_linen, x, y)
    dense_nnx = post_nnx.curvature.to_dense(post_nnx.state)
    dense_linen = post_linen.curvature.to_dense(post_linen.state)
    assert float(jnp.max(jnp.abs(dense_linen))) > 1e-3  # not a trivially empty curvature
    np.testing.assert_allclose(dense_nnx, dense_linen, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        predictive.glm_probit_log_probs(post_nnx, x),
        predictive.glm_probit_log_probs(post_linen, x),
        rtol=1e-10,
    )
    if factory != "kfac":
        return
    key = jax.random.key(3)
    for fn in (
        predictive.laplace_log_probs,
        predictive.glm_mc_log_probs,
        predictive.local_log_probs,
    ):
        a = fn(post_nnx, x, key=key, num_samples=4)
        b = fn(post_linen, x, key=key, num_samples=4)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=fn.__name__)


def test_nnx_interception_is_scoped_and_per_context():
    """The nnx dispatcher is installed only while some context is inside the block and calls
    only that context's interceptor: another thread's forward pass is not intercepted."""
    before = (nnx.Linear.__call__, nnx.Conv.__call__)
    module = NnxMLP(nnx.Rngs(0))
    apply_fn, params = models.nnx_apply_fn(module)
    x = jnp.ones((2, 4))
    seen, other_thread = [], []

    def record(layer, conv, inputs, out):
        seen.append(layer.path)
        return out

    def elsewhere():
        other_thread.append(apply_fn(params, x))

    with curvature.intercept_layers(params, record):
        assert nnx.Linear.__call__ is not before[0]
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        apply_fn(params, x)
    assert seen == [("hidden",), ("out",)]
    assert (nnx.Linear.__call__, nnx.Conv.__call__) == before
    np.testing.assert_allclose(other_thread[0], apply_fn(params, x))


def test_nnx_layer_whose_parameters_are_copied_is_not_captured():
    """Layers are matched to ``params`` by identity: an apply_fn that copies the parameters
    before merging hides its layers (they become "other" parameters), it does not mislabel."""
    module = NnxMLP(nnx.Rngs(0))
    graphdef, state = nnx.split(module)
    params = nnx.to_pure_dict(state)

    def copying_apply(p, x):
        return nnx.merge(graphdef, jax.tree.map(lambda a: 1.0 * a, p))(x)

    assert curvature.find_layers(copying_apply, params, jnp.ones((1, 4))) == ()
    with pytest.raises(ValueError, match="at least one selected"):
        curvature.kfac(copying_apply, losses.categorical(), fisher=curvature.mc_fisher()).init(
            params, jnp.ones((1, 4))
        )


def test_nnx_apply_fn_refuses_a_linen_module():
    with pytest.raises(ValueError, match=r"module: expected an nnx\.Module"):
        models.nnx_apply_fn(LinenMLP())


def test_training_an_nnx_model_equals_training_the_linen_model():
    """Same initial weights and key: the same shuffles and steps, so the same trained weights
    and BatchNorm statistics; the nnx module passed in is not changed."""
    module = NnxCNN(nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(module))
    _, params = models.nnx_apply_fn(module)
    stats = {"mean": module.norm.mean.get_value(), "var": module.norm.var.get_value()}
    x = jax.random.normal(jax.random.key(1), (24, 4, 4, 1))
    y = jax.random.randint(jax.random.key(2), (24,), 0, 3)
    kwargs = dict(key=jax.random.key(3), epochs=3, batch_size=8, prior_prec=1.0, progress=False)
    kwargs["optimizer"] = optax.adam(1e-2)
    kwargs["validation"] = (x[:6], y[:6])
    trained = training.train(module, x, y, **kwargs)
    reference = training.train(
        LinenCNN(), x, y, variables={"params": params, "batch_stats": {"norm": stats}}, **kwargs
    )
    assert set(trained.history) == set(reference.history)
    for name in trained.history:
        np.testing.assert_allclose(trained.history[name], reference.history[name], rtol=1e-5)
    apply_fn, new_params = models.nnx_apply_fn(module, trained.variables)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        new_params,
        reference.variables["params"],
    )
    norm = nnx.merge(nnx.graphdef(module), trained.variables).norm
    new_stats = {"mean": norm.mean.get_value(), "var": norm.var.get_value()}
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        new_stats,
        reference.variables["batch_stats"]["norm"],
    )
    assert float(jnp.max(jnp.abs(new_stats["mean"] - stats["mean"]))) > 0  # statistics moved
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(module)))
    logits = models.make_apply_fn(LinenCNN(), reference.variables)(new_params, x)
    np.testing.assert_allclose(apply_fn(new_params, x), logits, rtol=1e-5, atol=1e-6)


class NnxDropout(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(4, 16, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(jax.nn.relu(self.hidden(x))))


def test_nnx_dropout_is_driven_by_the_training_key():
    x = jax.random.normal(jax.random.key(1), (16, 4))
    y = jax.random.randint(jax.random.key(2), (16,), 0, 3)

    def final_params(seed):
        result = training.train(
            NnxDropout(nnx.Rngs(0)),
            x,
            y,
            key=jax.random.key(seed),
            epochs=2,
            batch_size=16,
            progress=False,
        )
        return models.nnx_apply_fn(NnxDropout(nnx.Rngs(0)), result.variables)[1]

    same = jax.tree.map(np.testing.assert_array_equal, final_params(0), final_params(0))
    del same
    moved = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), final_params(0), final_params(1)
    )
    assert max(jax.tree.leaves(moved)) > 0
