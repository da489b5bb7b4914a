"""The family studies' recipes (experiments/recipes.py): the attacked predictive is the reported
one, the GLM links of one evaluation share their moments, and FGSM refuses a non-finite
gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_laplace_problems import key as make_key
from test_laplace_problems import posterior

from bnn_jax import calibration, predictive, uncertainty
from experiments import recipes

CONFIG = {"glm_mc_samples": 64, "num_samples": 5, "chunk_size": None}


def test_evaluate_shares_the_glm_moments_and_gives_each_links_predictive(x64):
    post, x = posterior("kfac")
    key = make_key(0)
    found = recipes.evaluate(post, ["mclink", "probit"], {"test": x, "ood": x[:4]}, key, CONFIG)
    exact = uncertainty.mean_log_probs(
        predictive.glm_mc_log_probs(post, x, key=key, num_samples=CONFIG["glm_mc_samples"])
    )
    np.testing.assert_allclose(found["mclink"].test_log_probs, exact, rtol=1e-10)
    np.testing.assert_allclose(
        found["probit"].test_log_probs, predictive.glm_probit_log_probs(post, x), rtol=1e-10
    )
    assert found["probit"].entropy["ood"].shape == (4,)
    # The attack's predictive is the evaluated one (same draws), and so is the search's NLL.
    attacked = recipes.mclink_log_probs(CONFIG["glm_mc_samples"])
    np.testing.assert_allclose(attacked((post, key), x), exact, rtol=1e-10)
    y = jnp.argmax(exact, axis=-1)
    objective = recipes.mclink_nll_objective(CONFIG["glm_mc_samples"])
    np.testing.assert_allclose(objective(post, x, y, key), calibration.nll(exact, y), rtol=1e-10)


def test_fgsm_sweep_through_the_mc_link_against_a_hand_computed_step(x64):
    post, x = posterior("kfac")
    key, eps = make_key(1), [0.0, 0.05, 0.2]
    attacked = recipes.mclink_log_probs(16)
    y = jnp.argmax(attacked((post, key), x), axis=-1)
    sweep = recipes.fgsm_sweep(attacked, (post, key), x, y, eps)
    nll = lambda z: -jnp.sum(jnp.take_along_axis(attacked((post, key), z), y[:, None], axis=1))
    step = x + 0.2 * jnp.sign(jax.grad(nll)(x))
    lp = attacked((post, key), step)
    np.testing.assert_allclose(sweep["entropy"][2], np.mean(-np.sum(np.exp(lp) * lp, -1)))
    assert sweep["accuracy"][0] == 1.0  # eps = 0: the labels are the clean predictions
    assert sweep["accuracy"][2] == pytest.approx(float(jnp.mean(jnp.argmax(lp, -1) == y)))
    assert sweep["slope"] == pytest.approx(np.polyfit(eps, sweep["entropy"], 1)[0])


def test_fgsm_sweep_refuses_a_non_finite_gradient():
    broken = lambda args, x: jax.nn.log_softmax(jnp.sqrt(x - 2.0), axis=-1)
    x, y = jnp.ones((3, 2)), jnp.zeros(3, int)
    with pytest.raises(FloatingPointError, match=r"fgsm_sweep: the input gradient of .* finite"):
        recipes.fgsm_sweep(broken, (), x, y, [0.0, 0.1])
