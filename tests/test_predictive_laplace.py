"""Monte Carlo predictive of a Laplace posterior: chunking, keys, common random numbers, the
distribution of the weight samples and bounded memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_laplace_problems import covariance, posterior
from test_laplace_problems import key as make_key

from bnn_jax import laplace, predictive


def test_chunked_equals_unchunked_and_equals_explicit_samples(x64):
    post, x = posterior("dense")
    key = jax.random.key(11)  # threefry: vmapped draws equal one-by-one draws (rbg's do not)
    full = predictive.laplace_log_probs(post, x, key=key, num_samples=7)
    assert full.shape == (7, len(x), 3)
    chunked = predictive.laplace_log_probs(post, x, key=key, num_samples=7, chunk_size=3)
    np.testing.assert_allclose(chunked, full, rtol=1e-12, atol=1e-12)  # 2 chunks + remainder
    # Sample t is laplace.sample(post, key, T)[t], pushed through the model.
    thetas = laplace.sample(post, key, 7)
    explicit = jax.nn.log_softmax(jax.vmap(post.apply_fn, (0, None))(thetas, x), axis=-1)
    np.testing.assert_allclose(full, explicit, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.exp(full).sum(-1), 1.0, rtol=1e-12)


def test_reproducible_from_the_key_and_common_random_numbers(x64):
    post, x = posterior("dense")
    key = make_key(5)
    a = predictive.laplace_log_probs(post, x, key=key, num_samples=6, chunk_size=4)
    b = predictive.laplace_log_probs(post, x, key=key, num_samples=6, chunk_size=4)
    np.testing.assert_array_equal(a, b)
    other = predictive.laplace_log_probs(post, x, key=make_key(6), num_samples=6)
    assert not np.allclose(a, other)
    # Predicting [x1, x2] together equals predicting x1 and x2 separately with the same key.
    first = predictive.laplace_log_probs(post, x[:12], key=key, num_samples=6, chunk_size=4)
    second = predictive.laplace_log_probs(post, x[12:], key=key, num_samples=6, chunk_size=4)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), a, rtol=1e-12)
    # The samples differ from each other and from the MAP.
    assert not np.allclose(a[0], a[1])


@pytest.mark.parametrize("case", [("kfac", False), ("dense", True)], ids=["kfac", "last_layer"])
def test_weight_samples_have_the_dense_posterior_covariance(x64, case):
    post, _ = posterior(case[0], "mlp", case[1])
    num = 4000
    thetas = laplace.sample(post, make_key(0), num)
    selected = lambda params: ravel_pytree(post.subset.select(params))[0]
    centred = jax.vmap(selected)(thetas) - selected(post.mean)
    empirical = np.asarray(centred.T @ centred) / num  # known mean: the MAP
    sigma = covariance(case[0], "mlp", case[1])
    # For Gaussian samples with known mean, Var(empirical_ij) = (S_ii S_jj + S_ij^2) / T.
    std = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / num)
    assert np.max(np.abs(empirical - sigma) / std) < 5.5
    mean_std = np.sqrt(np.diag(sigma) / num)
    assert np.max(np.abs(np.asarray(centred.mean(0))) / mean_std) < 5


def test_peak_memory_does_not_grow_with_the_number_of_samples(x64):
    post, x = posterior("kfac")

    def temp_bytes(num_samples):
        lowered = jax.jit(
            lambda p, xs: predictive.laplace_log_probs(
                p, xs, key=make_key(0), num_samples=num_samples, chunk_size=10
            )
        ).lower(post, x)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    # Only the [T] array of sample keys may grow with T; one weight sample of this network
    # takes 31 * 8 bytes, more than a key, so holding all samples at once would show.
    key_bytes = jax.random.key_data(make_key(0)).nbytes
    small, large = temp_bytes(30), temp_bytes(1000)
    assert large - small <= key_bytes * (1000 - 30) < 31 * 8 * (1000 - 30), (small, large)


def test_bad_inputs_raise_value_errors(x64):
    post, x = posterior("dense")
    key = make_key(0)
    with pytest.raises(ValueError, match="num_samples"):
        predictive.laplace_log_probs(post, x, key=key, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        predictive.laplace_log_probs(post, x, key=key, num_samples=3, chunk_size=0)
    with pytest.raises(ValueError, match="x"):
        predictive.laplace_log_probs(post, x * np.nan, key=key, num_samples=3)
    with pytest.raises(ValueError, match="x"):
        predictive.laplace_log_probs(post, jnp.ones(()), key=key, num_samples=3)
