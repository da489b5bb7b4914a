"""KFAC and diagonal Laplace on real architectures, float32, end to end: LeNet-5 on digits
(train, fit, tune, predict) and a ResNet-8 with BatchNorm, whose scales and offsets get a
diagonal block (fit, and predict with KFAC). Compilation dominates the cost here, so the
ResNet is used at initialisation and the keys are ``rbg`` keys (any key implementation
works)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnn_jax import calibration, curvature, data, laplace, losses, models, predictive, training
from bnn_jax.uncertainty import mean_log_probs


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _fit(name, apply_fn, params, x, y, *, prior_prec=1.0):
    lik = losses.categorical()
    factory = {"kfac": curvature.kfac, "diagonal": curvature.diagonal}[name]
    curv = factory(apply_fn, lik, fisher=curvature.mc_fisher(num_samples=1))
    post = laplace.fit(
        curv, params, data.Batches(x, y, 128), key=_key(1), prior_prec=prior_prec, progress=False
    )
    assert int(post.state.num_data) == len(x)
    return post


def _check_log_probs(log_probs):
    assert np.all(np.isfinite(log_probs))
    np.testing.assert_allclose(jnp.exp(log_probs).sum(-1), 1.0, rtol=1e-4)


@pytest.fixture(scope="module")
def lenet_digits():
    ds = data.load("digits", seed=0)
    model = models.LeNet5(num_outputs=10, conv2_padding="SAME")
    result = training.train(
        model, ds.x_train[:512], ds.y_train[:512], key=jax.random.key(0), epochs=4,
        batch_size=64, optimizer=optax.adam(3e-3), prior_prec=1.0, progress=False,
    )  # fmt: skip
    apply_fn = models.make_apply_fn(model, result.variables)
    return apply_fn, result.variables["params"], ds


@pytest.mark.parametrize("name", ["kfac", "diagonal"])
def test_lenet_on_digits_fit_tune_predict(lenet_digits, name):
    apply_fn, params, ds = lenet_digits
    x_test, y_test = ds.x_test[:64], ds.y_test[:64]
    map_acc = float(calibration.accuracy(jax.nn.log_softmax(apply_fn(params, x_test)), y_test))
    assert map_acc > 0.5  # the MAP is trained
    post = _fit(name, apply_fn, params, ds.x_train[:256], ds.y_train[:256])
    if name == "kfac":
        # The evidence's tau (about 4 here) leaves the MC predictive of the full network near
        # chance (a known weakness); the post tunes (N, tau) on validation data instead.
        objective = laplace.validation_objective(
            laplace.error_plus_ece, ds.x_val[:64], ds.y_val[:64], key=_key(2), num_samples=4
        )
        grid = {"prior_prec": np.geomspace(1.0, 1e4, 5), "scale": [1.0, 100.0]}
        post = laplace.search(post, objective, **grid).posterior
    else:  # tau = 1e3 loses 10 points of accuracy on average over 6 samples; 1e4 about 2
        post = post.replace(prior_prec=jnp.asarray(1e4, jnp.float32))
    lp = predictive.laplace_log_probs(post, x_test, key=_key(3), num_samples=6, chunk_size=3)
    _check_log_probs(lp)
    acc = float(calibration.accuracy(mean_log_probs(lp), y_test))
    assert acc > map_acc - 0.15, (acc, map_acc)
    if name == "kfac":  # (the diagonal's GLM path is tested on small networks)
        _check_log_probs(predictive.glm_probit_log_probs(post, x_test[:16], chunk_size=8))


def test_resnet_with_batchnorm_kfac_and_diagonal():
    model = models.ResNet(depth=8, width=4, num_outputs=10)
    variables = models.init(model, jax.random.key(0), (8, 8, 1))
    apply_fn = models.make_apply_fn(model, variables)
    x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 1))
    y = jax.random.randint(jax.random.key(2), (64,), 0, 10)
    diagonal = _fit("diagonal", apply_fn, variables["params"], x, y)
    assert np.all(diagonal.state.diagonal["BatchNorm_0"]["scale"] > 0)
    kfac = _fit("kfac", apply_fn, variables["params"], x, y)
    paths, _ = jax.tree_util.tree_flatten_with_path(variables["params"])
    num_norm = sum("BatchNorm" in jax.tree_util.keystr(p) for p, _ in paths)  # scales, biases
    assert num_norm == len(kfac.state.others) == 18  # one diagonal block each
    assert all(np.all(d >= 0) and np.any(d > 0) for d in kfac.state.others)
    _check_log_probs(predictive.laplace_log_probs(kfac, x[:8], key=_key(3), num_samples=2))
