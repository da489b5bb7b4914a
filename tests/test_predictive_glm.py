"""Linearised (GLM) predictive: the functional covariance against naive Jacobians and the dense
posterior covariance, and the probit and MC links."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_laplace_problems import covariance, posterior
from test_laplace_problems import key as make_key

from bnn_jax import predictive, uncertainty
from bnn_jax.predictive import kronecker

CASES = [
    ("dense", "mlp", False),  # generic path: Jacobian rows + solve
    ("dense", "mlp", True),  # last layer, generic path
    ("diagonal", "mlp", False),  # layer-structured path, identity basis
    ("kfac", "mlp", False),  # Kronecker eigenbases, exact prior
    ("kfac_per_factor", "cnn", False),  # conv patches, per-factor prior, LayerNorm diagonal
    ("kfac", "mlp", True),  # last layer through the Kronecker path
    ("kfac", "cnn", False, True),  # one prior precision per layer, Kronecker path
    ("dense", "mlp", True, True),  # one prior precision per layer, generic path
]


def _naive_functional_covariance(post, x, sigma):
    theta = post.subset.select(post.mean)
    flat, unravel = ravel_pytree(theta)

    def logits(th, xi):
        return post.apply_fn(post.subset.merge(post.mean, unravel(th)), xi[None])[0]

    jac = jax.jit(jax.vmap(jax.jacobian(logits), (None, 0)))(flat, x)  # [B, C, P]
    return np.einsum("bkp,pq,blq->bkl", jac, sigma, jac)


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_functional_covariance_equals_naive_jacobian_reference(x64, case):
    post, x = posterior(*case)
    x = x[:5]
    assert kronecker.supports(post) == (case[0] != "dense")
    expected = _naive_functional_covariance(post, x, covariance(*case))
    moments = predictive.glm_moments(post, x, chunk_size=2)
    np.testing.assert_allclose(moments.covariance, expected, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(moments.mean, post.apply_fn(post.mean, x), rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(expected) > 0)
    if case == ("kfac", "mlp", False):  # the generic path agrees on a structured posterior
        generic = predictive.jacobian_covariance(post, x, chunk_size=3)
        np.testing.assert_allclose(generic, expected, rtol=1e-8, atol=1e-12)


def test_probit_link_formula_and_limits(x64):
    post, x = posterior("kfac")
    moments = predictive.glm_moments(post, x)
    probit = predictive.glm_probit_log_probs(post, x, centred=False)
    var = np.diagonal(np.asarray(moments.covariance), axis1=1, axis2=2)
    expected = jax.nn.log_softmax(moments.mean / np.sqrt(1 + np.pi / 8 * var), axis=-1)
    np.testing.assert_allclose(probit, expected, rtol=1e-12)
    proj = np.eye(3) - 1 / 3
    centred = np.diagonal(proj @ np.asarray(moments.covariance) @ proj, axis1=1, axis2=2)
    expected = jax.nn.log_softmax(moments.mean / np.sqrt(1 + np.pi / 8 * centred), axis=-1)
    np.testing.assert_allclose(predictive.glm_probit_log_probs(post, x), expected, rtol=1e-12)
    # A huge prior precision removes the uncertainty: the MAP's softmax.
    sharp = predictive.glm_probit_log_probs(post.replace(prior_prec=jnp.asarray(1e12)), x)
    map_lp = jax.nn.log_softmax(post.apply_fn(post.mean, x), axis=-1)
    np.testing.assert_allclose(sharp, map_lp, atol=1e-8)
    # With moderate output variances (here <= 0.5) the probit approximation is close to the
    # exact (MC) linearised predictive; it degrades as the variances grow.
    post = post.replace(prior_prec=jnp.asarray(50.0))
    probit = predictive.glm_probit_log_probs(post, x)
    mc = predictive.glm_mc_log_probs(post, x, key=make_key(0), num_samples=4000)
    gap = np.abs(np.exp(probit) - np.exp(uncertainty.mean_log_probs(mc)))
    assert gap.max() < 0.025, gap.max()


def test_centred_probit_follows_the_exact_link_where_the_shift_direction_has_prior_variance(x64):
    """The GGN is zero along "the same shift of every logit" (output bias 1): there the
    posterior keeps the prior variance 1/tau. With a small tau that variance is large; it
    changes no softmax sample, so the exact (MC) linearised predictive ignores it, and so does
    the centred probit, while the plain probit flattens every prediction (a hidden
    temperature)."""
    post, x = posterior("kfac")
    post = post.replace(prior_prec=jnp.asarray(0.02))
    moments = predictive.glm_moments(post, x)
    var = np.diagonal(np.asarray(moments.covariance), axis1=1, axis2=2)
    assert var.max() > 100  # the shift direction carries the prior's variance
    exact = np.exp(
        uncertainty.mean_log_probs(
            predictive.glm_mc_log_probs(post, x, key=make_key(0), num_samples=20000)
        )
    )
    centred = np.exp(predictive.glm_probit_log_probs(post, x))
    plain = np.exp(predictive.glm_probit_log_probs(post, x, centred=False))
    assert np.abs(centred - exact).max() < 0.08
    assert np.abs(plain - exact).max() > 0.3
    plain_conf, exact_conf = plain.max(-1).mean(), exact.max(-1).mean()
    assert plain_conf < exact_conf - 0.1  # the plain link's hidden temperature
    with pytest.raises(ValueError, match="centred"):
        predictive.glm_probit_log_probs(post, x, centred="yes")


def test_mc_link_samples_have_the_functional_moments_and_common_random_numbers(x64):
    post, x = posterior("kfac")
    x = x[:6]
    key = make_key(1)
    num = 20000
    lp = predictive.glm_mc_log_probs(post, x, key=key, num_samples=num)
    assert lp.shape == (num, 6, 3)
    moments = predictive.glm_moments(post, x)
    # log-probability differences to class 0 are the logit differences f_k - f_0.
    diff = np.asarray(lp[..., 1:] - lp[..., :1])
    a = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    mean = np.asarray(moments.mean) @ a.T
    cov = np.einsum("ik,bkl,jl->bij", a, np.asarray(moments.covariance), a)
    std_mean = np.sqrt(np.diagonal(cov, axis1=1, axis2=2) / num)
    assert np.max(np.abs(diff.mean(0) - mean) / std_mean) < 5
    centred = diff - mean
    emp = np.einsum("tbi,tbj->bij", centred, centred) / num
    var = np.diagonal(cov, axis1=1, axis2=2)
    std_cov = np.sqrt((var[:, :, None] * var[:, None, :] + cov**2) / num)
    assert np.max(np.abs(emp - cov) / std_cov) < 5
    # Same key: same draws for every input, whatever else is in the batch.
    first = predictive.glm_mc_log_probs(post, x[:2], key=key, num_samples=50)
    both = predictive.glm_mc_log_probs(post, x, key=key, num_samples=50)
    np.testing.assert_allclose(first, both[:, :2], rtol=1e-12)


def test_mc_link_square_root_is_symmetric_and_continuous(x64):
    # Sigma(t) = diag(1 + t, 1 - t): eigh swaps its eigenvectors where the eigenvalues cross
    # (t = 0), so U sqrt(w) jumps there; the symmetric root diag(sqrt(1 + t), sqrt(1 - t)) does
    # not, so shared eps give draws that vary continuously with the input.
    from bnn_jax.predictive.linearised import _sqrt_psd

    ts = np.linspace(-0.1, 0.1, 41)
    covs = np.stack([np.diag([1 + t, 1 - t]) for t in ts])
    roots = np.asarray(_sqrt_psd(jnp.asarray(covs)))
    np.testing.assert_allclose(roots, np.swapaxes(roots, 1, 2), atol=1e-12)
    np.testing.assert_allclose(roots @ roots, covs, atol=1e-12)
    assert np.max(np.abs(np.diff(roots, axis=0))) < 0.01
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4, 2))
    psd = a @ np.swapaxes(a, 1, 2)  # rank 2 of 4: zero eigenvalues are clipped, not NaN
    root = np.asarray(_sqrt_psd(jnp.asarray(psd)))
    np.testing.assert_allclose(root @ root, psd, atol=1e-10)


def test_bad_inputs_raise_value_errors(x64):
    post, x = posterior("dense")
    with pytest.raises(ValueError, match="num_samples"):
        predictive.glm_mc_log_probs(post, x, key=make_key(0), num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        predictive.glm_probit_log_probs(post, x, chunk_size=0)
    with pytest.raises(ValueError, match="x"):
        predictive.glm_moments(post, x * np.inf)


def test_links_on_precomputed_moments_equal_the_one_call_predictives(x64):
    post, x = posterior("kfac")
    moments = predictive.glm_moments(post, x)
    for centred in (True, False):
        np.testing.assert_allclose(
            predictive.probit_link(moments, centred=centred),
            predictive.glm_probit_log_probs(post, x, centred=centred),
            rtol=1e-12,
        )
    key = make_key(2)
    np.testing.assert_allclose(
        predictive.mc_link(moments, key=key, num_samples=7),
        predictive.glm_mc_log_probs(post, x, key=key, num_samples=7),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="moments: expected a FunctionalMoments"):
        predictive.probit_link((moments.mean, moments.covariance))
    with pytest.raises(ValueError, match=r"moments: expected mean \[batch, C\]"):
        predictive.mc_link(moments._replace(covariance=moments.covariance[:, 0]), key=key,
                           num_samples=2)  # fmt: skip
