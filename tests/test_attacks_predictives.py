"""Attacking Bayesian predictives: MC average over fixed samples (EOT) vs one sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import attacks


@pytest.fixture(scope="module")
def dropout_net():
    """A random one-hidden-layer net with dropout rate 0.5 on its hidden units, one mask per
    key shared by the batch (as :func:`bnn_jax.dropout.make_mask_logits_fn`): posterior samples
    disagree visibly."""
    rng = np.random.default_rng(0)
    w1, b1, w2 = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(2, 16), 16, (16, 3)])

    def logits_fn(key, x):
        mask = jax.random.bernoulli(key, 0.5, (16,)) / 0.5
        return (jax.nn.relu(x @ w1 + b1) * mask) @ w2

    x = rng.normal(size=(12, 2)).astype(np.float32)
    return logits_fn, x


def test_mc_predictive_is_the_mean_of_the_sample_probabilities(x64, dropout_net):
    """log (1/T) sum_t p_t for any chunking; its input gradient (the notebook's quiver field,
    d/dx [-log p_bar(argmax p_bar | x)] per example) matches central finite differences."""
    logits_fn, x = dropout_net
    x = np.asarray(x, np.float64)
    keys = jax.random.split(jax.random.key(2), 5)
    one_pass = jax.jit(logits_fn)
    probs = [np.asarray(jax.nn.softmax(one_pass(k, x))) for k in keys]
    expected = np.log(np.mean(probs, axis=0))
    for chunk_size in (None, 2):
        f = jax.jit(attacks.mc_log_prob_fn(logits_fn, keys, chunk_size=chunk_size))
        np.testing.assert_allclose(f(x), expected, rtol=1e-12, atol=1e-15)
    single = jax.jit(attacks.single_sample_log_prob_fn(logits_fn, keys[3]))
    np.testing.assert_allclose(single(x), np.log(probs[3]), rtol=1e-12, atol=1e-15)

    predicted = np.argmax(expected, axis=1)
    loss = lambda x_: -np.asarray(f(x_))[np.arange(len(x)), predicted]
    h = 1e-6
    finite_differences = np.stack(
        [(loss(x + h * np.eye(2)[j]) - loss(x - h * np.eye(2)[j])) / (2 * h) for j in range(2)],
        axis=1,
    )
    np.testing.assert_allclose(
        attacks.input_gradient(f, x), finite_differences, rtol=1e-5, atol=1e-8
    )


def test_mc_attack_differs_from_one_sample_and_is_reproducible_from_the_key(dropout_net):
    logits_fn, x = dropout_net

    def attack(key, num_samples):
        keys = jax.random.split(key, num_samples)
        f = attacks.mc_log_prob_fn(logits_fn, keys)
        if num_samples == 1:
            f = attacks.single_sample_log_prob_fn(logits_fn, keys[0])
        return attacks.bim(f, x, eps=0.5, eps_iter=0.1, steps=5, norm="l2")

    mc = jax.jit(attack, static_argnums=1)
    first = mc(jax.random.key(4), 20)
    np.testing.assert_array_equal(first, mc(jax.random.key(4), 20))
    assert not np.allclose(first, mc(jax.random.key(5), 20), atol=1e-3)
    one = mc(jax.random.key(4), 1)
    moved = np.linalg.norm(np.asarray(first - one), axis=1)
    assert np.mean(moved > 1e-3) > 0.5


def test_one_member_ensemble_attack_equals_attacking_the_member(dropout_net):
    """Stacked parameters as samples: the MC predictive of one member is that member."""
    _, x = dropout_net
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32), "b": jnp.zeros(3)}
    logits_fn = lambda p, x_: jnp.tanh(x_ @ p["w"] + p["b"]) * 3
    members = jax.tree.map(lambda p: p[None], params)
    f = attacks.mc_log_prob_fn(logits_fn, members)
    member = attacks.single_sample_log_prob_fn(logits_fn, params)
    both = jax.jit(lambda x_: [attacks.fgm(g, x_, eps=0.3, norm="linf") for g in (f, member)])(x)
    np.testing.assert_allclose(both[0], both[1])
    assert not np.allclose(both[0], x)


def test_mc_method_attacks_its_samples_and_evaluates_its_eval_samples(dropout_net):
    logits_fn, x = dropout_net
    attack_keys = jax.random.split(jax.random.key(7), 4)
    eval_keys = jax.random.split(jax.random.key(8), 6)
    method = attacks.mc_method(logits_fn, attack_keys, eval_samples=eval_keys, chunk_size=4)
    one_pass = jax.jit(logits_fn)
    sample_probs = lambda keys: np.stack([jax.nn.softmax(one_pass(k, x)) for k in keys])
    np.testing.assert_allclose(
        jax.jit(method.log_prob_fn)(x), np.log(sample_probs(attack_keys).mean(0)), rtol=1e-5
    )
    np.testing.assert_allclose(
        jnp.exp(jax.jit(method.sample_log_probs_fn)(x)), sample_probs(eval_keys), rtol=1e-5
    )
    same = attacks.mc_method(logits_fn, attack_keys)
    assert jax.eval_shape(same.sample_log_probs_fn, x).shape == (4, 12, 3)
