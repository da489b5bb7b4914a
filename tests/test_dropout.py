import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import dropout, models


class BatchNormNet(nn.Module):
    """Dense -> BatchNorm -> ReLU -> Dropout -> Dense."""

    dropout_rate: float

    @nn.compact
    def __call__(self, x, *, train: bool = False, mc_dropout: bool = False):
        h = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
        h = nn.Dropout(self.dropout_rate, deterministic=not (train or mc_dropout))(nn.relu(h))
        return nn.Dense(3)(h)


class SpatialNet(nn.Module):
    """A small conv net with spatial Concrete Dropout on the second convolution's input."""

    @nn.compact
    def __call__(self, x, *, train: bool = False, mc_dropout: bool = False):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        conv = models.SpatialConcreteDropout(nn.Conv(4, (3, 3)), init_min=0.3, init_max=0.3)
        h = nn.relu(conv(h, train=train, mc_dropout=mc_dropout))
        return nn.Dense(3)(h.mean(axis=(1, 2)))


STOCHASTIC = {
    "mlp": (models.MLP((16, 16), 3, dropout_rate=0.5), (4,)),
    "concrete_mlp": (models.ConcreteDropoutMLP((16, 16), 3, init_min=0.3, init_max=0.3), (4,)),
    "spatial_concrete": (SpatialNet(), (6, 6, 2)),
}


def _setup(name, batch=4):
    model, shape = STOCHASTIC[name]
    variables = jax.jit(lambda k: models.init(model, k, shape))(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, *shape))
    return model, variables, x


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (models.MLP((16, 16), 3, dropout_rate=0.0), (4,)),
        (BatchNormNet(0.0), (4,)),
    ],
    ids=["mlp", "batchnorm"],
)
def test_rate_zero_equals_the_deterministic_model(model, shape):
    """Also with BatchNorm: MC dropout keeps it on its running averages."""
    variables = jax.jit(lambda k: models.init(model, k, shape))(jax.random.key(0))
    if "batch_stats" in variables:  # non-trivial running statistics
        variables["batch_stats"] = jax.tree.map(
            lambda s: s + jax.random.uniform(jax.random.key(5), s.shape), variables["batch_stats"]
        )
    x = jax.random.normal(jax.random.key(1), (4, *shape))

    @jax.jit
    def both(variables, x):
        lp = dropout.sample_log_probs(model, variables, x, key=jax.random.key(2), num_samples=3)
        logits = models.make_apply_fn(model, variables)(variables["params"], x)
        return lp, jax.nn.log_softmax(logits)

    lp, expected = both(variables, x)
    assert lp.shape == (3, 4, 3)
    for sample in lp:
        np.testing.assert_allclose(sample, expected, rtol=1e-5, atol=1e-5)


def test_samples_differ_per_key_and_are_reproducible():
    """Un-jitted, and the same values under ``jax.jit``."""
    model, variables, x = _setup("concrete_mlp")
    sample = functools.partial(dropout.sample_log_probs, model, variables, x, num_samples=4)
    a, b = sample(key=jax.random.key(3)), sample(key=jax.random.key(4))
    assert not np.allclose(a, b)
    for s in range(1, 4):  # every mask is a different posterior sample
        assert not np.allclose(a[0], a[s])
    np.testing.assert_allclose(np.exp(np.asarray(a, np.float64)).sum(-1), 1.0, rtol=1e-5)
    jitted = jax.jit(lambda k: dropout.sample_log_probs(model, variables, x, key=k, num_samples=4))
    again = jitted(jax.random.key(3))
    np.testing.assert_allclose(again, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jitted(jax.random.key(3)), again)


@pytest.mark.parametrize("name", ["mlp", "concrete_mlp", "spatial_concrete"])
def test_common_random_numbers_one_mask_passes_and_chunking(name):
    model, variables, x = _setup(name, batch=4)
    key = jax.random.key(7)
    sample = functools.partial(dropout.sample_log_probs, model, variables, key=key, num_samples=5)

    @jax.jit
    def variants(x):
        out = {
            "full": sample(x),
            "reordered": sample(x[jnp.array([2, 1, 2])]),
            "one_mask": dropout.make_mask_logits_fn(model, variables)(
                jax.random.split(key, 5)[3], x
            ),
        }
        if name == "mlp":  # chunking does not depend on the model
            out["chunked"] = sample(x, chunk_size=2)  # chunks of 2 masks, the last one partial
        return out

    out = variants(x)
    full = out["full"]
    assert full.shape == (5, 4, 3) and not np.allclose(full[0], full[1])
    # Common random numbers: mask t is the same for every input, so an input's samples do not
    # depend on the rest of the batch, and a repeated input gets the same prediction within a
    # sample (one mask = one function).
    np.testing.assert_allclose(out["reordered"], full[:, [2, 1, 2]], rtol=1e-5, atol=1e-6)
    # Sample t is the one-mask pass with key t of split(key, T).
    np.testing.assert_allclose(jax.nn.log_softmax(out["one_mask"]), full[3], rtol=1e-5, atol=1e-6)
    if "chunked" in out:
        np.testing.assert_allclose(out["chunked"], full, rtol=1e-5, atol=1e-6)


def test_mask_apply_fn_on_one_input_is_the_models_dropout_pass_with_its_gradient():
    """For a batch of one, the shared mask is the per-example mask of
    ``models.make_per_example_dropout_apply_fn``."""
    model, variables, x = _setup("mlp")
    shared = dropout.make_shared_mask_apply_fn(model, variables)
    per_example = models.make_per_example_dropout_apply_fn(model, variables)
    key = jax.random.key(4)
    value_and_grad = lambda f: jax.value_and_grad(lambda p: jnp.sum(jnp.sin(f(p, x[:1], key))))
    both = jax.jit(lambda p: (value_and_grad(shared)(p), value_and_grad(per_example)(p)))
    (a, grads_a), (b, grads_b) = both(variables["params"])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for u, v in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)


def test_bad_inputs_are_value_errors():
    model, variables, x = _setup("mlp")
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1, got 0"):
        dropout.sample_log_probs(model, variables, x, key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="x: expected a batch"):
        dropout.sample_log_probs(model, variables, x[0], key=jax.random.key(0), num_samples=2)
    with pytest.raises(ValueError, match="chunk_size"):
        dropout.sample_log_probs(
            model, variables, x, key=jax.random.key(0), num_samples=2, chunk_size=0
        )


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda r: models.MLP((4,), 2, dropout_rate=r), (3,)),
        (lambda r: models.LeNet5(2, dropout_rate=r), (28, 28, 1)),
        (lambda r: models.ResNet(depth=8, width=2, num_outputs=2, dropout_rate=r), (8, 8, 1)),
    ],
    ids=["mlp", "lenet", "resnet"],
)
def test_dropout_rate_outside_unit_interval_is_a_value_error(make, shape, rate):
    with pytest.raises(ValueError, match=r"dropout_rate: expected a rate in \[0, 1\)"):
        models.init(make(rate), jax.random.key(0), shape)


def _bad_dropout_calls():
    model, variables, x = _setup("mlp")
    key = jax.random.key(0)
    sample = lambda **kw: dropout.sample_log_probs(
        model, variables, kw.pop("x", x), **({"key": key, "num_samples": 2} | kw)
    )
    apply_fn = dropout.make_shared_mask_apply_fn(model, variables)
    logits_fn = dropout.make_mask_logits_fn(model, variables)
    return [
        (lambda: sample(x=x.at[1, 0].set(jnp.inf)), "x: expected finite values"),
        (lambda: sample(x=x.at[0, 1].set(jnp.nan)), "x: expected finite values"),
        (lambda: sample(num_samples=None), "num_samples: expected an integer >= 1, got None"),
        (lambda: sample(num_samples=2.5), r"num_samples: expected an integer >= 1, got 2\.5"),
        (lambda: sample(chunk_size=1.5), "chunk_size: expected an integer"),
        *[(lambda k=k: sample(key=k), "key: expected a PRNG key") for k in (0, "abc", None)],
        (lambda: apply_fn(variables["params"], x, 0), "key: expected a PRNG key"),
        (lambda: logits_fn("abc", x), "key: expected a PRNG key"),
        (lambda: logits_fn(key, x.at[0, 0].set(-jnp.inf)), "x: expected finite values"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_dropout_calls())))
def test_bad_arguments_are_named(index):
    call, match = _bad_dropout_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()
