import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnn_jax import data, ensembles, models, training


class BatchNormNet(nn.Module):
    """Dense -> BatchNorm -> ReLU -> dropout -> Dense: exercises batch_stats and dropout keys."""

    @nn.compact
    def __call__(self, x, *, train: bool = False, mc_dropout: bool = False):
        h = nn.Dense(16)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        h = nn.Dropout(0.2, deterministic=not (train or mc_dropout))(h)
        return nn.Dense(2)(h)


def _assert_trees_close(a, b, **tolerances):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, **tolerances)


def test_each_member_equals_training_it_alone():
    """Member i of the vmapped run is ``training.train`` with key i of split(key, M): same
    initialisation, minibatches, dropout masks and BatchNorm statistics."""
    ds = data.load("toy2d", seed=0)
    model, key, epochs, members = BatchNormNet(), jax.random.key(3), 4, 2
    options = dict(
        epochs=epochs,
        batch_size=32,
        prior_prec=1.0,
        optimizer=optax.sgd(0.1),  # Adam would amplify rounding in near-zero gradients
        validation=(ds.x_val, ds.y_val),
    )
    result = ensembles.train_ensemble(
        model,
        ds.x_train,
        ds.y_train,
        key=key,
        num_members=members,
        epoch_metrics=lambda v: {"bn_mean": jnp.mean(v["batch_stats"]["BatchNorm_0"]["mean"])},
        **options,
    )
    assert set(result.variables) == {"params", "batch_stats"}
    for name in ("loss", "nll", "accuracy", "val_nll", "val_accuracy", "bn_mean"):
        assert result.history[name].shape == (epochs, members)
    last = jax.random.split(key, members)[-1]
    alone = training.train(model, ds.x_train, ds.y_train, key=last, progress=False, **options)
    _assert_trees_close(
        ensembles.member(result.variables, -1), alone.variables, rtol=1e-5, atol=1e-6
    )
    for name, values in alone.history.items():
        np.testing.assert_allclose(result.history[name][:, -1], values, rtol=1e-5, atol=1e-6)
    assert not np.allclose(result.history["loss"][:, 0], result.history["loss"][:, 1])


def test_one_member_ensemble_equals_its_member_and_members_are_samples():
    model = models.MLP((8,), 3)
    init = jax.jit(lambda k: models.init(model, k, (4,)))
    variables = [init(jax.random.key(i)) for i in range(3)]
    x = jax.random.normal(jax.random.key(9), (5, 4))
    log_probs = jax.jit(
        lambda v: jax.nn.log_softmax(models.make_apply_fn(model, v)(v["params"], x))
    )
    expected = [log_probs(v) for v in variables]

    single = ensembles.sample_log_probs(model, ensembles.stack(variables[:1]), x)
    assert single.shape == (1, 5, 3)
    np.testing.assert_allclose(single[0], expected[0], rtol=1e-6, atol=1e-6)

    stacked = ensembles.stack(variables)
    full = ensembles.sample_log_probs(model, stacked, x)
    chunked = jax.jit(lambda v, xs: ensembles.sample_log_probs(model, v, xs, chunk_size=2))(
        stacked, x
    )
    np.testing.assert_allclose(full, np.stack(expected), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-6)
    _assert_trees_close(ensembles.member(stacked, 2), variables[2], rtol=0, atol=0)


def test_bad_inputs_are_value_errors():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    model = models.MLP((4,), 2)
    common = dict(key=jax.random.key(0), epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="num_members: expected an integer >= 1, got 0"):
        ensembles.train_ensemble(model, x, y, num_members=0, **common)
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1"):
        ensembles.train_ensemble(model, x, y, num_members=2, **{**common, "epochs": 0})
    with pytest.raises(ValueError, match="y: "):
        ensembles.train_ensemble(model, x, y + 5, num_members=2, **common)
    with pytest.raises(ValueError, match="members: expected at least one"):
        ensembles.stack([])


def _bad_ensemble_calls():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    model = models.MLP((4,), 2)
    common = dict(key=jax.random.key(0), num_members=2, epochs=1, batch_size=2)
    train = lambda **kw: ensembles.train_ensemble(model, x, y, **(common | kw))
    stacked = ensembles.stack([models.init(model, jax.random.key(i), (2,)) for i in range(2)])
    return [
        (lambda: train(num_members=2.5), r"num_members: expected an integer >= 1, got 2\.5"),
        (lambda: train(num_members=None), "num_members: expected an integer >= 1, got None"),
        (lambda: train(epochs=1.0), "epochs: expected an integer"),
        (lambda: train(batch_size=2.5), "batch_size: expected an integer"),
        (lambda: train(prior_prec=float("nan")), "prior_prec: expected a finite value >= 0"),
        *[(lambda k=k: train(key=k), "key: expected a PRNG key") for k in (0, "abc", None)],
        (lambda: ensembles.member(stacked, 2), r"index: expected a member index in \[-2, 2\)"),
        (lambda: ensembles.member(stacked, 1.0), "index: expected an integer member index"),
        (
            lambda: ensembles.sample_log_probs(model, stacked, x, chunk_size=0.5),
            "chunk_size: expected an integer",
        ),
        (
            lambda: ensembles.sample_log_probs(model, stacked, np.full((4, 2), np.nan)),
            "x: expected finite values",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_bad_ensemble_calls())))
def test_bad_arguments_are_named(index):
    call, match = _bad_ensemble_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()
