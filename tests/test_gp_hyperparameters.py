"""Type-II maximum likelihood on the notebook's toy problem."""

import jax
import numpy as np
import pytest

from bnn_jax import data, gp


@pytest.fixture(scope="module")
def toy2d():
    ds = data.load("toy2d", seed=0)
    return np.asarray(ds.x_train, np.float64), np.asarray(ds.y_train)


def test_lbfgs_increases_the_evidence_to_a_stationary_point(x64, toy2d):
    """The notebook's model: arc-sine kernel from GPy's defaults, probit likelihood."""
    x, y = toy2d
    kernel, lik = gp.arcsine_kernel(), gp.probit()
    result = gp.optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=lik, gtol=1e-5)
    assert float(result.final_objective) < float(result.initial_objective) - 1.0
    assert int(result.num_steps) < 100 and float(result.grad_norm) < 1e-5
    initial = gp.fit(kernel, kernel.init(), x, y, likelihood=lik)
    final = gp.fit(kernel, result.params, x, y, likelihood=lik)
    np.testing.assert_allclose(-initial.mode.log_marginal_likelihood, result.initial_objective)
    np.testing.assert_allclose(-final.mode.log_marginal_likelihood, result.final_objective)
    # a local minimum: no coordinate step of the log hyperparameters lowers the objective
    flat, unravel = jax.flatten_util.ravel_pytree(result.params)
    for step in np.concatenate([np.eye(flat.size), -np.eye(flat.size)]) * 0.05:
        moved = gp.fit(kernel, unravel(flat + step), x, y, likelihood=lik)
        assert -float(moved.mode.log_marginal_likelihood) >= float(result.final_objective)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"max_steps": 0}, "max_steps: expected an integer >= 1, got 0"),
        ({"memory_size": 2.5}, "memory_size: expected an integer >= 1"),
        ({"gtol": 0.0}, "gtol: expected a finite value > 0, got 0.0"),
    ],
)
def test_bad_settings_raise(toy2d, setting, match):
    x, y = toy2d
    kernel = gp.rbf_kernel()
    with pytest.raises(ValueError, match=match):
        gp.optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=gp.probit(), **setting)


def test_bad_data_and_failed_newton_raise(x64, toy2d):
    x, y = toy2d
    kernel = gp.arcsine_kernel()  # same compiled optimiser as the test above
    with pytest.raises(ValueError, match="y: expected binary labels"):
        gp.optimize_hyperparameters(kernel, kernel.init(), x, y + 1, likelihood=gp.probit())
    with pytest.raises(ValueError, match="max_iterations: expected an integer >= 1, got 0"):
        gp.optimize_hyperparameters(
            kernel, kernel.init(), x, y, likelihood=gp.probit(), max_iterations=0
        )
    params = gp.arcsine_kernel(variance=50.0).init()
    with pytest.raises(ValueError, match="params: the initial objective"):
        gp.optimize_hyperparameters(
            kernel, params, x, y, likelihood=gp.probit(), max_iterations=1, max_steps=1
        )
