"""The family studies' recipes (experiments/recipes.py): the GLM links of one evaluation share
their moments, and FGSM follows its definition and refuses a non-finite gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_laplace_problems import key as make_key
from test_laplace_problems import posterior

from bnn_jax import predictive, uncertainty
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
    assert found["probit"].val_log_probs is None  # no "val" set given


def test_fgsm_sweep_against_a_hand_computed_step(x64):
    post, x = posterior("kfac")
    eps = [0.0, 0.05, 0.2]
    attacked = recipes.probit_log_probs
    y = jnp.argmax(attacked((post,), x), axis=-1)
    sweep = recipes.fgsm_sweep(attacked, (post,), x, y, eps)
    nll = lambda z: -jnp.sum(jnp.take_along_axis(attacked((post,), z), y[:, None], axis=1))
    lp = attacked((post,), x + 0.2 * jnp.sign(jax.grad(nll)(x)))
    np.testing.assert_allclose(sweep["entropy"][2], np.mean(-np.sum(np.exp(lp) * lp, -1)))
    assert sweep["accuracy"][0] == 1.0  # eps = 0: the labels are the clean predictions
    assert sweep["accuracy"][2] == pytest.approx(float(jnp.mean(jnp.argmax(lp, -1) == y)))
    assert sweep["slope"] == pytest.approx(np.polyfit(eps, sweep["entropy"], 1)[0])


def test_fgsm_sweep_refuses_a_non_finite_gradient():
    broken = lambda args, x: jax.nn.log_softmax(jnp.sqrt(x - 2.0), axis=-1)
    x, y = jnp.ones((3, 2)), jnp.zeros(3, int)
    with pytest.raises(FloatingPointError, match=r"fgsm_sweep: the input gradient of .* finite"):
        recipes.fgsm_sweep(broken, (), x, y, [0.0, 0.1])
