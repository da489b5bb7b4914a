"""Attacking Bayesian predictives: MC average over fixed samples (EOT) vs one sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import attacks, dropout, models
from bnn_jax.predictive import sample_log_probs


@pytest.fixture(scope="module")
def dropout_net():
    """An (untrained) MLP with heavy dropout: posterior samples disagree visibly."""
    model = models.MLP(widths=(16, 16), num_outputs=3, dropout_rate=0.5)
    variables = models.init(model, jax.random.key(0), (2,))
    logits_fn = dropout.make_logits_fn(model, variables)
    x = jax.random.normal(jax.random.key(1), (12, 2))
    return logits_fn, x


def test_mc_predictive_is_the_mean_of_the_sample_probabilities(x64, dropout_net):
    logits_fn, x = dropout_net
    x = x.astype(jnp.float64)
    keys = jax.random.split(jax.random.key(2), 5)
    probs = [np.asarray(jax.nn.softmax(logits_fn(k, x))) for k in keys]
    expected = np.log(np.mean(probs, axis=0))
    for chunk_size in (None, 2):
        f = attacks.mc_log_prob_fn(logits_fn, keys, chunk_size=chunk_size)
        np.testing.assert_allclose(f(x), expected, rtol=1e-12)
    single = attacks.single_sample_log_prob_fn(logits_fn, keys[3])
    np.testing.assert_allclose(single(x), np.log(probs[3]), rtol=1e-12)


def test_input_gradient_of_mc_predictive_matches_finite_differences(x64, dropout_net):
    """The notebook's quiver field: d/dx [-log p_bar(argmax p_bar | x)], per example."""
    logits_fn, x = dropout_net
    x = np.asarray(x, np.float64)
    f = attacks.mc_log_prob_fn(logits_fn, jax.random.split(jax.random.key(3), 8))
    predicted = np.argmax(f(x), axis=1)
    loss = lambda x_: -np.asarray(f(x_))[np.arange(len(x)), predicted]
    h = 1e-6
    expected = np.stack(
        [(loss(x + h * np.eye(2)[j]) - loss(x - h * np.eye(2)[j])) / (2 * h) for j in range(2)],
        axis=1,
    )
    np.testing.assert_allclose(attacks.input_gradient(f, x), expected, rtol=1e-5, atol=1e-8)


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
    np.testing.assert_allclose(first, attack(jax.random.key(4), 20), atol=1e-6)  # eager
    assert not np.allclose(first, mc(jax.random.key(5), 20), atol=1e-3)
    one = mc(jax.random.key(4), 1)
    moved = np.linalg.norm(np.asarray(first - one), axis=1)
    assert np.mean(moved > 1e-3) > 0.5


def test_one_member_ensemble_attack_equals_attacking_the_member(dropout_net):
    """Stacked parameters as samples: the MC predictive of one member is that member."""
    _, x = dropout_net
    model = models.MLP(widths=(8,), num_outputs=3)
    variables = models.init(model, jax.random.key(6), (2,))
    apply_fn = models.make_apply_fn(model, variables)
    members = jax.tree.map(lambda p: p[None], variables["params"])
    f = attacks.mc_log_prob_fn(apply_fn, members)
    member = lambda x_: jax.nn.log_softmax(apply_fn(variables["params"], x_))
    np.testing.assert_allclose(
        attacks.fgm(f, x, eps=0.3, norm="linf"), attacks.fgm(member, x, eps=0.3, norm="linf")
    )


def test_mc_method_attacks_its_samples_and_evaluates_its_eval_samples(dropout_net):
    logits_fn, x = dropout_net
    attack_keys = jax.random.split(jax.random.key(7), 4)
    eval_keys = jax.random.split(jax.random.key(8), 6)
    method = attacks.mc_method(logits_fn, attack_keys, eval_samples=eval_keys, chunk_size=4)
    np.testing.assert_allclose(
        method.log_prob_fn(x), attacks.mc_log_prob_fn(logits_fn, attack_keys)(x), rtol=1e-6
    )
    np.testing.assert_allclose(
        method.sample_log_probs_fn(x), sample_log_probs(logits_fn, eval_keys, x), rtol=1e-6
    )
    same = attacks.mc_method(logits_fn, attack_keys)
    assert same.sample_log_probs_fn(x).shape == (4, 12, 3)
