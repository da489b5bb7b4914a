"""Laplace posterior: fit, sampling, marginal likelihood and tuning against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_laplace_problems import NUM_CLASSES, fit, problem
from test_laplace_problems import key as make_key

from bnn_jax import curvature, laplace, losses
from bnn_jax.curvature import subset as subsets
from bnn_jax.data import Batches
from bnn_jax.types import Batch


def _brute_force(apply_fn, params, x, y, select):
    """Independent reference: summed NLL and the dense GGN ``sum_n J_n^T H_n J_n`` over the
    selected leaves (``select(params) -> (flat, rebuild)``), with ``jax.jacobian`` and
    ``jax.hessian`` of the per-example NLL in the logits."""
    flat, rebuild = select(params)

    def logits(theta, xi):
        return apply_fn(rebuild(theta), xi[None])[0]

    def nll(f, yi):
        return -jax.nn.log_softmax(f)[yi]

    @jax.jit
    def reference(flat, x, y):
        f = jax.vmap(logits, (None, 0))(flat, x)
        jac = jax.vmap(jax.jacobian(logits), (None, 0))(flat, x)
        hess = jax.vmap(jax.hessian(nll))(f, y)
        return jnp.sum(jax.vmap(nll)(f, y)), jnp.einsum("nkp,nkl,nlq->pq", jac, hess, jac)

    total_nll, ggn = reference(flat, x, jnp.asarray(y))
    return float(total_nll), np.asarray(flat), np.asarray(ggn)


def _select_all(params):
    return ravel_pytree(params)


def _select_last(params):
    flat, unravel = ravel_pytree(params["Dense_1"])
    return flat, lambda theta: {**params, "Dense_1": unravel(theta)}


def _reference_marglik(nll, theta, ggn, scale, prior_prec):
    precision = scale * ggn + prior_prec * np.eye(len(theta))
    sign, logdet = np.linalg.slogdet(precision)
    assert sign > 0
    return (
        -scale * nll
        - 0.5 * prior_prec * theta @ theta
        + 0.5 * len(theta) * np.log(prior_prec)
        - 0.5 * logdet
    )


CASES = {
    "dense": (lambda: curvature.dense, None, _select_all, lambda g: g),
    "diagonal": (lambda: curvature.diagonal, None, _select_all, lambda g: np.diag(np.diag(g))),
    "dense_last_layer": (lambda: curvature.dense, "last", _select_last, lambda g: g),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_marglik_equals_brute_force_dense_formula(x64, case):
    structure, subset_kind, select, reduce_ggn = CASES[case]
    apply_fn, params, x, y = problem("mlp")
    subset = subsets.last_layer(apply_fn, params, x[:1]) if subset_kind else None
    post = fit(structure(), apply_fn, params, x, y, subset=subset, prior_prec=0.7, scale=1.3)
    nll, theta, ggn = _brute_force(apply_fn, params, x, y, select)
    np.testing.assert_allclose(post.train_nll, nll, rtol=1e-10)
    for scale, prior_prec in [(1.3, 0.7), (0.2, 5.0), (20.0, 1e-2)]:
        expected = _reference_marglik(nll, theta, reduce_ggn(ggn), scale, prior_prec)
        got = laplace.log_marginal_likelihood(post, scale, prior_prec)
        np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_allclose(
        laplace.log_marginal_likelihood(post),
        _reference_marglik(nll, theta, reduce_ggn(ggn), 1.3, 0.7),
        rtol=1e-9,
    )
    jitted = jax.jit(laplace.log_marginal_likelihood)(post)
    np.testing.assert_allclose(jitted, laplace.log_marginal_likelihood(post), rtol=1e-12)


def test_marglik_gradient_in_log_hyperparameters_matches_finite_differences(x64):
    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.dense, apply_fn, params, x, y)

    def objective(log_scale, log_prior_prec):
        return laplace.log_marginal_likelihood(post, jnp.exp(log_scale), jnp.exp(log_prior_prec))

    point = (jnp.log(2.0), jnp.log(0.3))
    grads = jax.grad(objective, argnums=(0, 1))(*point)
    h = 1e-5
    for i in range(2):
        up = list(point)
        down = list(point)
        up[i] = up[i] + h
        down[i] = down[i] - h
        fd = (objective(*up) - objective(*down)) / (2 * h)
        np.testing.assert_allclose(grads[i], fd, rtol=1e-6)
        assert abs(float(grads[i])) > 1e-3  # a real gradient, not a trivially flat one


def test_optimize_marglik_increases_it_and_reaches_a_stationary_point(x64):
    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.dense, apply_fn, params, x, y, prior_prec=1e-2)
    start = laplace.log_marginal_likelihood(post)
    tuned, trace = laplace.optimize_marglik(post, steps=300, learning_rate=0.1)
    assert trace.log_marglik.shape == (300,)
    np.testing.assert_allclose(trace.log_marglik[0], start, rtol=1e-12)
    np.testing.assert_array_equal(trace.scale, post.scale)  # scale not tuned
    end = laplace.log_marginal_likelihood(tuned)
    assert end > start + 1.0
    grad = jax.grad(lambda t: laplace.log_marginal_likelihood(tuned, prior_prec=jnp.exp(t)))(
        jnp.log(tuned.prior_prec)
    )
    assert abs(float(grad)) < 1e-3

    both, trace = laplace.optimize_marglik(post, steps=300, learning_rate=0.1, tune_scale=True)
    assert float(both.scale) != float(post.scale)
    assert laplace.log_marginal_likelihood(both) > end


def test_fit_minibatches_equal_full_batch_and_record_hyperparameters(x64):
    apply_fn, params, x, y = problem("mlp")
    small = fit(curvature.dense, apply_fn, params, x, y, batch=5, prior_prec=2.0, scale=3.0)
    full = fit(curvature.dense, apply_fn, params, x, y, batch=len(x), prior_prec=2.0, scale=3.0)
    np.testing.assert_allclose(small.state.matrix, full.state.matrix, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(small.train_nll, full.train_nll, rtol=1e-12)
    assert int(small.state.num_data) == len(x)
    assert float(small.scale) == 3.0 and float(small.prior_prec) == 2.0
    assert small.scale.dtype == jnp.float64


def test_sample_is_map_plus_structure_draws_jitted_and_vmapped(x64):
    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.dense, apply_fn, params, x, y)
    key = jax.random.key(7)  # threefry: vmapped draws equal one-by-one draws
    draws = laplace.sample(post, key, 4)
    assert jax.tree.map(jnp.shape, draws)["Dense_0"]["kernel"] == (4, 3, 4)
    keys = jax.random.split(key, 4)
    for t in range(4):
        z = post.curvature.sample(post.state, keys[t], post.scale, post.prior_prec)
        expected = jax.tree.map(jnp.add, params, z)
        for a, b in zip(jax.tree.leaves(draws), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a[t], b, rtol=1e-12)
    # vmap over posteriors with different prior precisions: larger tau, smaller spread.
    taus = jnp.array([0.1, 10.0, 1000.0])
    spread = jax.vmap(
        lambda t: jnp.std(ravel_pytree(laplace.sample(post.replace(prior_prec=t), key, 64))[0])
    )(taus)
    assert spread[0] > spread[1] > spread[2]
    np.testing.assert_allclose(
        laplace.log_det(post), np.linalg.slogdet(post.state.matrix + np.eye(31))[1], rtol=1e-10
    )


def test_last_layer_samples_leave_other_layers_at_the_map(x64):
    apply_fn, params, x, y = problem("mlp")
    subset = subsets.last_layer(apply_fn, params, x[:1])
    post = fit(curvature.dense, apply_fn, params, x, y, subset=subset)
    draws = laplace.sample(post, make_key(0), 3)
    np.testing.assert_array_equal(draws["Dense_0"]["kernel"][1], params["Dense_0"]["kernel"])
    assert not np.allclose(draws["Dense_1"]["kernel"][1], params["Dense_1"]["kernel"])


def _counting(curv, counts):
    def update(*args):
        counts["update"] += 1
        return curv.update(*args)

    def finalize(state):
        counts["finalize"] += 1
        return curv.finalize(state)

    return curv._replace(update=update, finalize=finalize)


def test_search_reuses_the_curvature_and_finds_the_known_optimum(x64):
    apply_fn, params, x, y = problem("mlp")
    counts = {"update": 0, "finalize": 0}
    lik = losses.categorical()
    curv = _counting(curvature.dense(apply_fn, lik, fisher=curvature.exact_fisher()), counts)
    post = laplace.fit(
        curv, params, Batches(x, y, 12), key=make_key(0), prior_prec=1.0, progress=False
    )
    after_fit = dict(counts)
    assert after_fit["update"] >= 1 and after_fit["finalize"] == 1

    def objective(p):  # minimum at scale 0.5, prior_prec 3 (both on the grid)
        return (jnp.log(p.scale) - jnp.log(0.5)) ** 2 + (jnp.log(p.prior_prec) - jnp.log(3.0)) ** 2

    taus = jnp.array([0.3, 1.0, 3.0, 10.0, 30.0])
    scales = jnp.array([0.05, 0.5, 5.0])
    result = laplace.search(post, objective, prior_prec=taus, scale=scales, chunk_size=4)
    assert result.value.shape == (15,)
    np.testing.assert_allclose(result.posterior.scale, 0.5)
    np.testing.assert_allclose(result.posterior.prior_prec, 3.0)
    for s, t, v in zip(result.scale, result.prior_prec, result.value, strict=True):
        np.testing.assert_allclose(v, objective(post.replace(scale=s, prior_prec=t)), rtol=1e-12)
    assert {(float(s), float(t)) for s, t in zip(result.scale, result.prior_prec, strict=True)} == {
        (float(s), float(t)) for s in scales for t in taus
    }

    rand = laplace.search(
        post, objective, prior_prec=jnp.array([0.1, 100.0]), num_random=64, key=make_key(1)
    )
    assert np.all((rand.prior_prec >= 0.1) & (rand.prior_prec <= 100.0))
    np.testing.assert_array_equal(rand.scale, post.scale)
    assert int(rand.best) == int(np.argmin(rand.value))
    assert abs(np.log(float(rand.posterior.prior_prec) / 3.0)) < 0.3
    assert counts == after_fit  # the search never touched the curvature estimate


def test_search_warns_on_a_grid_edge_and_grows_until_interior(x64):
    """The optimum on an outer edge warns, naming the value and the edge; ``grow`` extends the
    grid by a decade (3 log points) on that side until the optimum is interior; an interior
    optimum (and an axis of one value) never warns."""
    import warnings

    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.diagonal, apply_fn, params, x, y)

    def objective(p):  # minimum at scale 0.5, prior_prec 3
        return (jnp.log(p.scale) - jnp.log(0.5)) ** 2 + (jnp.log(p.prior_prec) - jnp.log(3.0)) ** 2

    scales = jnp.array([0.05, 0.5, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = laplace.search(
            post, objective, prior_prec=jnp.array([1.0, 3.0, 10.0]), scale=scales
        )
        single = laplace.search(post, objective, prior_prec=jnp.array([0.5, 3.0, 30.0]))
    assert (inside.rounds, inside.scale_edge, inside.prior_prec_edge) == (0, "interior", "interior")
    assert not inside.on_edge and single.scale_edge == "interior"

    high = r"after 0 growth.*prior_prec = 1 on the high edge"
    with pytest.warns(laplace.GridEdgeWarning, match=high):
        edge = laplace.search(post, objective, prior_prec=jnp.array([0.3, 1.0]), scale=scales)
    assert edge.on_edge and edge.prior_prec_edge == "high" and edge.scale_edge == "interior"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grown = laplace.search(
            post, objective, prior_prec=jnp.array([0.3, 1.0]), scale=scales, grow=4
        )
    assert grown.rounds == 1 and not grown.on_edge
    np.testing.assert_allclose(grown.posterior.prior_prec, 10 ** (1 / 3), rtol=1e-12)
    assert grown.value.shape == (3 * 5,)  # 2 + 3 grown values of prior_prec, 3 scales
    for s, t, v in zip(grown.scale, grown.prior_prec, grown.value, strict=True):
        np.testing.assert_allclose(v, objective(post.replace(scale=s, prior_prec=t)), rtol=1e-12)

    far = lambda p: (jnp.log(p.scale) - jnp.log(1e-6)) ** 2 + jnp.log(p.prior_prec) ** 2
    with pytest.warns(laplace.GridEdgeWarning, match=r"after 2 growth.*scale = 0.0005 on the low"):
        capped = laplace.search(
            post, far, prior_prec=jnp.array([0.1, 1.0, 10.0]), scale=scales, grow=2
        )
    assert capped.rounds == 2 and capped.scale_edge == "low"
    centre = lambda p, c: (jnp.log(p.prior_prec) - c) ** 2  # data as traced arguments
    taus = jnp.array([1.0, 3.0, 10.0])
    for c, best in ((jnp.log(3.0), 3.0), (jnp.log(10.0), 10.0)):
        found = laplace.search(post, centre, prior_prec=taus, args=(c,), warn=False)
        np.testing.assert_allclose(found.posterior.prior_prec, best)
    with pytest.raises(ValueError, match="grow"):
        laplace.search(post, objective, prior_prec=jnp.ones(2), grow=-1)
    with pytest.raises(ValueError, match="grow: a random search"):
        laplace.search(
            post, objective, prior_prec=jnp.ones(2), num_random=3, key=make_key(0), grow=1
        )


def test_validation_objectives_evaluate_the_mc_predictive(x64):
    from bnn_jax import calibration, predictive, uncertainty

    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.dense, apply_fn, params, x, y)
    key = make_key(4)
    for metric in (calibration.nll, laplace.error_plus_ece):
        objective = laplace.validation_objective(metric, x, y, key=key, num_samples=8)
        lp = predictive.laplace_log_probs(post, x, key=key, num_samples=8)
        expected = metric(uncertainty.mean_log_probs(lp), jnp.asarray(y))
        np.testing.assert_allclose(objective(post), expected, rtol=1e-10)
    mean_lp = jnp.log(jnp.asarray([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    labels = jnp.array([0, 0, 0])
    acc, ece = 2 / 3, (abs(0.9 - 1) + abs(0.8 - 0) + abs(0.6 - 1)) / 3
    np.testing.assert_allclose(laplace.error_plus_ece(mean_lp, labels), 1 - acc + ece, rtol=1e-12)


def test_bad_inputs_raise_value_errors(x64):
    apply_fn, params, x, y = problem("mlp", train_steps=0)
    lik = losses.categorical()
    curv = curvature.dense(apply_fn, lik, fisher=curvature.exact_fisher())
    fit = lambda **kw: laplace.fit(
        kw.pop("curv", curv), kw.pop("params", params), kw.pop("batches", Batches(x, y, 8)),
        key=kw.pop("key", make_key(0)), prior_prec=kw.pop("prior_prec", 1.0), progress=False,
        **kw,
    )  # fmt: skip
    with pytest.raises(ValueError, match="prior_prec"):
        fit(prior_prec=-1.0)
    with pytest.raises(ValueError, match=r"prior_prec: .* > 0, got 0.0: directions .* infinite"):
        fit(prior_prec=0.0)
    for bad_key in (0, "abc", None):
        with pytest.raises(ValueError, match="key: expected a PRNG key"):
            fit(key=bad_key)
    with pytest.raises(ValueError, match=r"curvature: expected a curvature\.Curvature"):
        fit(curv="kfac")
    with pytest.raises(ValueError, match="scale"):
        fit(scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        fit(scale=jnp.ones(2))
    nan_params = jax.tree.map(lambda a: a * jnp.nan, params)
    with pytest.raises(ValueError, match="curvature"):
        fit(params=nan_params)
    with pytest.raises(ValueError, match="batches"):
        fit(batches=[Batch(np.where(np.arange(24)[:, None] == 3, np.nan, x), y)])
    with pytest.raises(ValueError, match="y"):
        fit(batches=Batches(x, y + NUM_CLASSES, 8))
    with pytest.raises(ValueError, match="batches"):
        fit(batches=[])

    post = fit()
    with pytest.raises(ValueError, match="num_samples"):
        laplace.sample(post, make_key(0), 0)
    with pytest.raises(ValueError, match="prior_prec"):
        laplace.log_marginal_likelihood(post, prior_prec=-1.0)
    with pytest.raises(ValueError, match="scale"):
        laplace.log_marginal_likelihood(post, scale=0.0)
    with pytest.raises(ValueError, match="steps"):
        laplace.optimize_marglik(post, steps=0, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        laplace.optimize_marglik(post, steps=3, learning_rate=0.0)
    with pytest.raises(ValueError, match="prior_prec"):
        laplace.optimize_marglik(post.replace(prior_prec=jnp.zeros(())), steps=3, learning_rate=0.1)
    objective = lambda p: p.prior_prec
    with pytest.raises(ValueError, match="prior_prec"):
        laplace.search(post, objective, prior_prec=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="scale"):
        laplace.search(post, objective, prior_prec=jnp.ones(2), scale=jnp.zeros((0,)))
    with pytest.raises(ValueError, match="key"):
        laplace.search(post, objective, prior_prec=jnp.ones(2), num_random=3)
    with pytest.raises(ValueError, match="num_random"):
        laplace.search(post, objective, prior_prec=jnp.ones(2), num_random=0, key=make_key(0))
    with pytest.raises(ValueError, match="chunk_size"):
        laplace.search(post, objective, prior_prec=jnp.ones(2), chunk_size=0)
    with pytest.raises(ValueError, match="num_samples"):
        laplace.validation_objective(laplace.error_plus_ece, x, y, key=make_key(0), num_samples=0)
    with pytest.raises(ValueError, match="y"):
        laplace.validation_objective(laplace.error_plus_ece, x, y[:3], key=make_key(0))


def test_invalid_hyperparameters_are_errors_not_nan(x64):
    """prior_prec <= 0 (e.g. ``post.replace(prior_prec=-1)``, also as a constant inside a
    caller's jit) is refused by every public function that inverts the precision; a diverging
    marginal-likelihood optimisation names ``learning_rate``; a search whose objective is
    NaN everywhere raises."""
    from bnn_jax import predictive

    apply_fn, params, x, y = problem("mlp")
    post = fit(curvature.diagonal, apply_fn, params, x, y)
    key = make_key(0)
    for bad in (-1.0, 0.0, jnp.nan):
        broken = post.replace(prior_prec=jnp.asarray(bad))
        for call in (
            lambda p: laplace.sample(p, key, 2),
            laplace.log_det,
            laplace.log_marginal_likelihood,
            lambda p: laplace.optimize_marglik(p, steps=2, learning_rate=0.1),
            lambda p: predictive.laplace_log_probs(p, x, key=key, num_samples=2),
            lambda p: predictive.glm_probit_log_probs(p, x),
            lambda p: predictive.local_log_probs(p, x, key=key, num_samples=2),
        ):
            with pytest.raises(ValueError, match="prior_prec"):
                call(broken)
    with pytest.raises(ValueError, match="prior_prec"):  # a constant inside the caller's jit
        jax.jit(lambda p: laplace.log_det(p.replace(prior_prec=-1.0)))(post)
    # traced values are the caller's responsibility (documented): no check, no error
    assert np.isnan(jax.jit(lambda t: laplace.log_det(post.replace(prior_prec=t)))(-1.0))

    with pytest.raises(ValueError, match="learning_rate: the optimisation diverged"):
        laplace.optimize_marglik(post, steps=20, learning_rate=1e3)
    with pytest.raises(ValueError, match="objective_fn: no candidate gave a finite value"):
        laplace.search(post, lambda p: jnp.nan * p.prior_prec, prior_prec=jnp.ones(3))
    partly = laplace.search(
        post, lambda p: jnp.where(p.prior_prec > 2, jnp.nan, -p.prior_prec),
        prior_prec=jnp.array([1.0, 2.0, 3.0]),
    )  # fmt: skip
    assert int(partly.best) == 1
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        laplace.sample(post, 0, 2)


def test_layerwise_prior_marginal_likelihood_and_its_optimisation(x64):
    """A per-leaf prior: the marginal likelihood equals the dense formula with diag(tau);
    optimize_marglik tunes one value per layer to a stationary point; priors a structure
    cannot represent, or of the wrong shape, are refused."""
    apply_fn, params, x, y = problem("mlp")
    lik, exact = losses.categorical(), curvature.exact_fisher()
    nll, theta, ggn = _brute_force(apply_fn, params, x, y, _select_all)
    taus = {"Dense_0": 0.5, "Dense_1": 4.0}
    per_leaf = lambda path: taus[path[0]] * (2.0 if path[-1] == "bias" else 1.0)
    fit_ = lambda curv, prior: laplace.fit(
        curv, params, Batches(x, y, 8), key=make_key(0), prior_prec=prior, scale=1.3,
        progress=False,
    )  # fmt: skip
    for factory in (curvature.dense, curvature.diagonal):
        curv = factory(apply_fn, lik, fisher=exact)
        prior = laplace.layerwise_prior(curv, params, per_leaf)
        post = fit_(curv, prior)
        full = jax.tree.map(lambda w, t: jnp.full(w.shape, t), params, prior)
        tau = np.asarray(ravel_pytree(full)[0])
        g = ggn if factory is curvature.dense else np.diag(np.diag(ggn))
        precision = 1.3 * g + np.diag(tau)
        expected = (
            -1.3 * nll
            - 0.5 * theta @ (tau * theta)
            + 0.5 * np.sum(np.log(tau))
            - 0.5 * np.linalg.slogdet(precision)[1]
        )
        np.testing.assert_allclose(laplace.log_marginal_likelihood(post), expected, rtol=1e-9)
        np.testing.assert_allclose(laplace.log_det(post), np.linalg.slogdet(precision)[1])

    curv = curvature.kfac(apply_fn, lik, fisher=exact)
    post = fit_(curv, laplace.layerwise_prior(curv, params, lambda path: taus[path[0]]))
    start = laplace.log_marginal_likelihood(post)
    tuned, trace = laplace.optimize_marglik(post, steps=300, learning_rate=0.1)
    assert trace.prior_prec["Dense_1"]["kernel"].shape == (300,)
    assert laplace.log_marginal_likelihood(tuned) > start
    for layer in taus:  # one value per layer: kernel and bias tied, gradient ~ 0
        prior = tuned.prior_prec[layer]
        np.testing.assert_array_equal(prior["kernel"], prior["bias"])

        def in_log(t, layer=layer):
            prior = {k: dict(p) for k, p in tuned.prior_prec.items()}
            prior[layer] = {"bias": jnp.exp(t), "kernel": jnp.exp(t)}
            return laplace.log_marginal_likelihood(tuned, prior_prec=prior)

        grad = jax.grad(in_log)(jnp.log(tuned.prior_prec[layer]["kernel"]))
        assert abs(float(grad)) < 1e-3
    assert not np.isclose(tuned.prior_prec["Dense_0"]["bias"], tuned.prior_prec["Dense_1"]["bias"])
    searched = laplace.search(tuned, lambda p: p.prior_prec, prior_prec=jnp.array([2.0, 0.5]))
    assert float(searched.posterior.prior_prec) == 0.5  # candidates replace a layer-wise prior

    leafwise = laplace.layerwise_prior(curv, params, per_leaf)
    with pytest.raises(ValueError, match=r"prior_prec: Dense_0 holds its kernel and bias .*"):
        fit_(curv, leafwise)
    separate = curvature.kfac(apply_fn, lik, fisher=exact, bias=curvature.blocks.separate_bias())
    post = fit_(separate, laplace.layerwise_prior(separate, params, per_leaf))
    with pytest.raises(ValueError, match="optimize_marglik tunes one value per layer"):
        laplace.optimize_marglik(post, steps=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="prior_prec: expected a scalar or one"):
        fit_(curv, jnp.ones(3))
    with pytest.raises(ValueError, match="prior_prec: expected a scalar or one scalar per"):
        fit_(curv, {"Dense_0": 1.0})
    with pytest.raises(ValueError, match="prior_prec"):
        fit_(curv, laplace.layerwise_prior(curv, params, lambda path: -1.0))
