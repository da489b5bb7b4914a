"""Monte Carlo predictive of a Laplace posterior: chunking, keys, common random numbers, the
distribution of the weight samples and bounded memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_laplace_problems import dense_covariance, fit, problem, structure_factory
from test_laplace_problems import key as make_key

from bnn_jax import laplace, predictive


def _posterior(name="kfac", kind="mlp"):
    apply_fn, params, x, y = problem(kind)
    return fit(structure_factory(name, x.shape), apply_fn, params, x, y, prior_prec=0.5), x


def test_chunked_equals_unchunked_and_equals_explicit_samples(x64):
    post, x = _posterior()
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
    post, x = _posterior()
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


@pytest.mark.parametrize("name", ["dense", "diagonal", "kfac", "kfac_per_factor"])
def test_weight_samples_have_the_dense_posterior_covariance(x64, name):
    post, _ = _posterior(name)
    num = 4000
    thetas = laplace.sample(post, make_key(0), num)
    flat_map = ravel_pytree(post.mean)[0]
    flat = jax.vmap(lambda t: ravel_pytree(t)[0])(thetas) - flat_map
    empirical = np.asarray(flat.T @ flat) / num  # known mean: the MAP
    sigma = dense_covariance(post)
    # For Gaussian samples with known mean, Var(empirical_ij) = (S_ii S_jj + S_ij^2) / T.
    std = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / num)
    z = np.abs(empirical - sigma) / std
    assert z.max() < 5.5, (name, z.max())
    np.testing.assert_allclose(np.asarray(flat.mean(0)), 0.0, atol=6 * np.sqrt(sigma.max() / num))


def test_peak_memory_does_not_grow_with_the_number_of_samples(x64):
    post, x = _posterior("kfac")

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
    post, x = _posterior("dense")
    key = make_key(0)
    with pytest.raises(ValueError, match="num_samples"):
        predictive.laplace_log_probs(post, x, key=key, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        predictive.laplace_log_probs(post, x, key=key, num_samples=3, chunk_size=0)
    with pytest.raises(ValueError, match="x"):
        predictive.laplace_log_probs(post, x * np.nan, key=key, num_samples=3)
    with pytest.raises(ValueError, match="x"):
        predictive.laplace_log_probs(post, jnp.ones(()), key=key, num_samples=3)
