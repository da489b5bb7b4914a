"""Saved posteriors: a round trip in a fresh process gives identical predictions; a file, a
curvature or parameters that do not match are refused, naming what differs."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import curvature, data, io, laplace, losses, models, predictive

SETUP = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from bnn_jax import curvature, data, io, laplace, losses, models, predictive

    model = models.MLP((6,), 3)
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 3
    lik, fisher = losses.categorical(), curvature.mc_fisher()
    params = models.init(model, jax.random.key(0), (5,))["params"]
    apply_fn = models.make_apply_fn(model, {"params": params})
    taus = {"Dense_0": 0.5, "Dense_1": 3.0}

    def structures():
        last = curvature.subset.last_layer(apply_fn, params, x[:1])
        return {
            "kfac": curvature.kfac(apply_fn, lik, fisher=fisher),
            "partition": curvature.partition([
                curvature.dense(apply_fn, lik, fisher=fisher, subset=last),
                curvature.diagonal(
                    apply_fn, lik, fisher=fisher, subset=curvature.subset.complement(last)
                ),
            ]),
        }

    def predictions(post):
        key = jax.random.key(3)
        return {
            "mc": predictive.laplace_log_probs(post, x, key=key, num_samples=4),
            "glm": predictive.glm_probit_log_probs(post, x),
            "log_det": laplace.log_det(post),
        }
    """
)

FIT = SETUP + textwrap.dedent(
    """
    import sys
    out = sys.argv[1]
    params = io.load_checkpoint(out + "/params.msgpack", params)
    for name, curv in structures().items():
        prior = laplace.layerwise_prior(curv, params, lambda path: taus[path[0]])
        post = laplace.fit(curv, params, data.Batches(x, y, 16), key=jax.random.key(1),
                           prior_prec=1.0 if name == "kfac" else prior, progress=False)
        laplace.save(f"{out}/{name}.msgpack", post)
        io.save_checkpoint(f"{out}/{name}-predictions.msgpack", predictions(post))
    """
)

LOAD = SETUP + textwrap.dedent(
    """
    import sys
    out = sys.argv[1]
    params = io.load_checkpoint(out + "/params.msgpack", params)
    for name, curv in structures().items():
        post = laplace.load(f"{out}/{name}.msgpack", curv, params)
        expected = io.load_checkpoint(f"{out}/{name}-predictions.msgpack", predictions(post))
        for key, value in predictions(post).items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[key]), key)
    print("OK")
    """
)


def _run(script, out):
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_round_trip_in_a_fresh_process_gives_identical_predictions(tmp_path):
    """Fit and save in one process, load and predict in another: MC draws (same key), the
    GLM predictive and the log-determinant are bit for bit the same (KFAC with a scalar prior;
    a partition, dense last layer + diagonal rest, with one prior precision per layer)."""
    trained = models.init(models.MLP((6,), 3), jax.random.key(7), (5,))["params"]
    io.save_checkpoint(tmp_path / "params.msgpack", trained)
    _run(FIT, tmp_path)
    assert "OK" in _run(LOAD, tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("posterior")
    model = models.MLP((6,), 3)
    params = models.init(model, jax.random.key(0), (5,))["params"]
    apply_fn = models.make_apply_fn(model, {"params": params})
    x = np.random.default_rng(0).normal(size=(24, 5)).astype(np.float32)
    y = np.arange(24) % 3
    lik, fisher = losses.categorical(), curvature.exact_fisher()
    curv = curvature.kfac(apply_fn, lik, fisher=fisher)
    post = laplace.fit(
        curv, params, data.Batches(x, y, 8), key=jax.random.key(1), prior_prec=2.0, progress=False
    )
    path = laplace.save(out / "kfac.msgpack", post)
    return path, post, model, params, x, lik, fisher


def test_load_refuses_what_does_not_match(saved, tmp_path):
    path, post, _, params, x, lik, fisher = saved
    apply_fn = post.apply_fn
    same = laplace.load(path, curvature.kfac(apply_fn, lik, fisher=fisher), params)
    np.testing.assert_array_equal(
        predictive.glm_probit_log_probs(same, x), predictive.glm_probit_log_probs(post, x)
    )
    assert float(same.prior_prec) == 2.0 and same.inputs == post.inputs
    with pytest.raises(FileExistsError, match="exists"):
        laplace.save(path, post)
    laplace.save(path, post, overwrite=True)

    moved = jax.tree.map(lambda a: a + 1e-3, params)
    with pytest.raises(ValueError, match="params: their values differ"):
        laplace.load(path, curvature.kfac(apply_fn, lik, fisher=fisher), moved)
    other = models.init(models.MLP((7,), 3), jax.random.key(0), (5,))["params"]
    with pytest.raises(ValueError, match=r"params: not the parameters .* leaves differ"):
        laplace.load(path, curvature.kfac(apply_fn, lik, fisher=fisher), other)
    with pytest.raises(ValueError, match=r"curvature: .* holds a KfacState posterior; this"):
        laplace.load(path, curvature.diagonal(apply_fn, lik, fisher=fisher), params)
    separate = curvature.kfac(apply_fn, lik, fisher=fisher, bias=curvature.blocks.separate_bias())
    with pytest.raises(ValueError, match=r"curvature: the state in .* does not fit"):
        laplace.load(path, separate, params)
    per_factor = curvature.kfac(
        apply_fn, lik, fisher=fisher, prior=curvature.kron.per_factor_prior()
    )
    with pytest.raises(ValueError, match=r"curvature: .* other options"):
        laplace.load(path, per_factor, params)
    relu = models.make_apply_fn(models.MLP((6,), 3, activation=jnp.tanh), {"params": params})
    with pytest.raises(ValueError, match="curvature: its apply_fn and likelihood give other"):
        laplace.load(path, curvature.kfac(relu, lik, fisher=fisher), params)
    gaussian = losses.gaussian(sigma=0.5)
    with pytest.raises(ValueError, match="apply_fn and likelihood give other hessian"):
        laplace.load(path, curvature.kfac(apply_fn, gaussian, fisher=fisher), params)

    data_ = path.read_bytes()
    for name, payload in {
        "truncated": data_[: len(data_) // 2],
        "empty": b"",
        "json": b'{"format": "x"}',
        "random": bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8)),
    }.items():
        bad = tmp_path / f"{name}.msgpack"
        bad.write_bytes(payload)
        with pytest.raises(ValueError, match=f"path: {bad} is not a saved posterior"):
            laplace.load(bad, curvature.kfac(apply_fn, lik, fisher=fisher), params)
    checkpoint = io.save_checkpoint(tmp_path / "params.msgpack", params)
    with pytest.raises(ValueError, match="is not a saved posterior"):
        laplace.load(checkpoint, curvature.kfac(apply_fn, lik, fisher=fisher), params)
    unfitted = post.replace(inputs=None)
    with pytest.raises(ValueError, match="posterior: it has no input shape"):
        laplace.save(tmp_path / "unfitted.msgpack", unfitted)
