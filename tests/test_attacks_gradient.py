"""FGM, BIM, PGD and input gradients: closed forms, exact norms, loop references, compilation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import make_blobs

from bnn_jax import attacks

NUMPY_ORD = {"linf": np.inf, "l2": 2, "l1": 1}


def _norms(v, norm):
    return np.linalg.norm(np.asarray(v).reshape(len(v), -1), ord=NUMPY_ORD[norm], axis=1)


def _direction(g, norm):
    """Steepest-ascent direction of one gradient vector (no ties in random data)."""
    if norm == "linf":
        return np.sign(g)
    if norm == "l2":
        return g / np.linalg.norm(g)
    d = np.zeros_like(g)
    j = np.argmax(np.abs(g))
    d[j] = np.sign(g[j])
    return d


def _mlp(params, x):
    """A plain ReLU MLP on flattened inputs: ``params = [(w, b), ...]``."""
    h = x.reshape(x.shape[0], -1)
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def _init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


@pytest.fixture(scope="module")
def trained():
    """A 3-class 2D problem and a small MLP trained full batch for 300 Adam steps."""
    x, y = make_blobs(
        n_samples=90, centers=[[-2, 0], [2, 0], [0, 2.5]], cluster_std=0.6, random_state=0
    )
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    optimizer = optax.adam(1e-2)
    loss_fn = lambda p: attacks.cross_entropy(jax.nn.log_softmax(_mlp(p, x)), y).mean()

    def step(carry, _):
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    params = _init(jax.random.key(0), (2, 32, 32, 3))
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=300))(
        (params, optimizer.init(params))
    )
    return x, y, lambda x_: jax.nn.log_softmax(_mlp(params, x_))


def _jit(attack, log_prob_fn, **kwargs):
    """The attack as a jitted function of the inputs (one compilation per test case)."""
    return jax.jit(lambda x_: attack(log_prob_fn, x_, **kwargs))


def _mean_loss(log_prob_fn, x, y):
    return float(attacks.cross_entropy(log_prob_fn(x), y).mean())


def _linear_model(num_classes, dim, seed=0):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(dim, num_classes)), rng.normal(size=num_classes)
    x = rng.normal(size=(7, dim))
    return w, b, x


@pytest.mark.parametrize("norm", attacks.NORMS)
@pytest.mark.parametrize("mode", ["predicted", "labels", "targets"])
def test_fgm_of_softmax_regression_is_the_closed_form(x64, norm, mode):
    """For logits x W + b: grad_x CE(y) = W (softmax - onehot(y)); FGM = x +- eps d(grad)."""
    w, b, x = _linear_model(4, 5)
    log_prob_fn = lambda x_: jax.nn.log_softmax(x_ @ w + b)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = {"predicted": p.argmax(1), "labels": np.arange(7) % 4, "targets": (p.argmax(1) + 1) % 4}
    y = y[mode]
    sign = -1.0 if mode == "targets" else 1.0
    expected = [
        x[i] + sign * 0.3 * _direction((p[i] - np.eye(4)[y[i]]) @ w.T, norm) for i in range(7)
    ]
    kwargs = {"predicted": {}, "labels": {"labels": y}, "targets": {"targets": y}}[mode]
    x_adv = attacks.fgm(log_prob_fn, x, eps=0.3, norm=norm, **kwargs)
    np.testing.assert_allclose(x_adv, np.stack(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_fgm_of_logistic_regression_is_the_closed_form(x64, norm):
    """Binary logistic model p = sigmoid(w.x + b): grad_x CE(y) = (p - y) w."""
    w, b, x = _linear_model(1, 3, seed=1)
    w, b = w[:, 0], b[0]
    log_prob_fn = lambda x_: jnp.stack(
        [jax.nn.log_sigmoid(-(x_ @ w + b)), jax.nn.log_sigmoid(x_ @ w + b)], axis=-1
    )
    y = np.arange(7) % 2
    p = 1 / (1 + np.exp(-(x @ w + b)))
    expected = np.stack([x[i] + 0.5 * _direction((p[i] - y[i]) * w, norm) for i in range(7)])
    x_adv = attacks.fgm(log_prob_fn, x, eps=0.5, norm=norm, labels=y)
    np.testing.assert_allclose(x_adv, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_fgm_moves_every_example_by_exactly_eps(x64, norm):
    """Image-shaped inputs: ||x_adv - x|| = eps per example before clipping; with clipping
    the result is the clipped unclipped attack."""
    params = _init(jax.random.key(0), (24, 8, 5))
    log_prob_fn = lambda x_: jax.nn.log_softmax(_mlp(params, x_))
    x = jax.random.uniform(jax.random.key(1), (6, 3, 4, 2), jnp.float64)
    x_adv, clipped = jax.jit(
        lambda x_: [
            attacks.fgm(log_prob_fn, x_, eps=0.25, norm=norm, clip_min=low, clip_max=high)
            for low, high in [(None, None), (0.0, 1.0)]
        ]
    )(x)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    np.testing.assert_allclose(_norms(x_adv - x, norm), 0.25, rtol=1e-10)
    np.testing.assert_array_equal(clipped, jnp.clip(x_adv, 0.0, 1.0))


def _project(delta, eps, norm):
    if norm == "linf":
        return np.clip(delta, -eps, eps)
    if norm == "l2":
        return delta * min(1.0, eps / np.linalg.norm(delta))
    return np.asarray(attacks.norm_ops("l1").project(delta[None], eps))[0]


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_bim_equals_a_python_loop_of_fgm_steps(x64, trained, norm):
    """The fori_loop (jitted, and un-jitted for L-infinity) equals the textbook loop: step, project,
    repeat, with the predicted class of the clean input attacked throughout."""
    x, _, log_prob_fn = trained
    x = np.asarray(x[:8], np.float64)
    y0 = np.argmax(log_prob_fn(x), axis=1)
    grad = jax.jit(jax.grad(lambda x_: attacks.cross_entropy(log_prob_fn(x_), y0).sum()))
    x_k = x.copy()
    for _ in range(4):
        g = np.asarray(grad(x_k))
        for i in range(8):
            step = x_k[i] + 0.2 * _direction(g[i], norm)
            x_k[i] = x[i] + _project(step - x[i], 0.5, norm)
    run = lambda x_: attacks.bim(log_prob_fn, x_, eps=0.5, eps_iter=0.2, steps=4, norm=norm)
    np.testing.assert_allclose(jax.jit(run)(x), x_k, rtol=1e-10, atol=1e-10)
    if norm == "linf":
        np.testing.assert_allclose(run(x), x_k, rtol=1e-10, atol=1e-10)


def test_jitted_pgd_traces_once_is_not_unrolled_and_starts_from_its_key(trained):
    """100 iterations: the model is traced a constant number of times, one compilation serves
    new inputs, keys, eps and step sizes, and the program does not grow with the step count.
    With step size 0 PGD stays at its random start, a function of the key alone."""
    x, _, log_prob_fn = trained
    traces = []

    def counted(x_):
        traces.append(1)
        return log_prob_fn(x_)

    def run(x_, key, eps, eps_iter, steps):
        x_adv = attacks.pgd(
            counted, x_, key=key, eps=eps, eps_iter=eps_iter, steps=steps, norm="l2"
        )
        return x_adv, attacks.norm_ops("l2").random(key, x_.shape, eps, x_.dtype)

    jitted = jax.jit(functools.partial(run, steps=100))
    key = jax.random.key(5)
    x_adv, start = jitted(x, key, 0.3, 0.0)
    first = len(traces)
    np.testing.assert_allclose(x_adv, x + start, rtol=1e-6, atol=1e-7)
    moved = jitted(x + 0.1, key, 0.5, 0.05)[0]
    np.testing.assert_array_equal(moved, jitted(x + 0.1, jax.random.key(5), 0.5, 0.05)[0])
    assert not np.allclose(moved, jitted(x + 0.1, jax.random.key(6), 0.5, 0.05)[0])
    assert len(traces) == first <= 4
    assert jitted._cache_size() == 1
    jaxprs = [jax.make_jaxpr(functools.partial(run, steps=s))(x, key, 0.3, 0.03) for s in (2, 100)]
    assert len(jaxprs[0].eqns) == len(jaxprs[1].eqns)
    assert any(e.primitive.name in ("scan", "while") for e in jaxprs[1].eqns)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_attacks_raise_the_loss_and_pgd_stays_in_the_ball_and_the_data_range(trained, norm):
    """FGM on the predicted class (notebook); PGD on the true label (blog), clipped to the
    data's bounding box."""
    x, y, log_prob_fn = trained
    eps = {"linf": 0.3, "l2": 0.4, "l1": 0.5}[norm]
    low, high = x.min(axis=0), x.max(axis=0)
    clean = _mean_loss(log_prob_fn, x, y)
    fgm = _jit(attacks.fgm, log_prob_fn, eps=eps, norm=norm)(x)
    pgd = _jit(
        attacks.pgd,
        log_prob_fn,
        key=jax.random.key(0),
        eps=eps,
        eps_iter=eps / 4,
        steps=8,
        norm=norm,
        labels=y,
        clip_min=low,
        clip_max=high,
    )(x)
    assert _mean_loss(log_prob_fn, fgm, y) > clean * 1.5
    assert _mean_loss(log_prob_fn, pgd, y) > clean * 1.5
    assert np.all(_norms(pgd - x, norm) <= eps * (1 + 1e-5))
    assert np.all((pgd >= low) & (pgd <= high))
    assert np.mean(_norms(pgd - x, norm)) > eps / 2  # it did move


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_targeted_attacks_move_towards_the_target(trained, norm):
    """FGM for every norm, PGD (same code path: the sign of the objective) for L-infinity."""
    x, y, log_prob_fn = trained
    targets = (y + 1) % 3
    eps = {"linf": 2.0, "l2": 3.0, "l1": 3.0}[norm]
    clean = np.asarray(log_prob_fn(x))
    hits_before = np.mean(clean.argmax(1) == targets)
    results = [(_jit(attacks.fgm, log_prob_fn, eps=eps, norm=norm, targets=targets)(x), 0.1)]
    if norm == "linf":
        pgd = _jit(
            attacks.pgd,
            log_prob_fn,
            key=jax.random.key(1),
            eps=eps,
            eps_iter=eps / 4,
            steps=8,
            norm=norm,
            targets=targets,
        )
        results.append((pgd(x), 0.5))
    for x_adv, min_gain in results:
        log_probs = np.asarray(log_prob_fn(x_adv))
        rows = np.arange(len(y))
        assert np.mean(log_probs[rows, targets] > clean[rows, targets]) > 0.8
        assert np.mean(log_probs.argmax(1) == targets) > hits_before + min_gain


def test_input_gradient_is_the_predicted_class_gradient(x64):
    w, b, x = _linear_model(3, 2, seed=2)
    log_prob_fn = lambda x_: jax.nn.log_softmax(x_ @ w + b)
    logits = x @ w + b
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = (p - np.eye(3)[p.argmax(1)]) @ w.T
    np.testing.assert_allclose(attacks.input_gradient(log_prob_fn, x), expected, rtol=1e-12)
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_allclose(
        jax.jit(lambda x_: attacks.input_gradient(log_prob_fn, x_, labels=labels))(x),
        (p - np.eye(3)[labels]) @ w.T,
        rtol=1e-12,
    )


def _bad_calls():
    f = lambda x_: jax.nn.log_softmax(x_ @ jnp.ones((2, 3)))
    x = jnp.zeros((4, 2))
    it = {"eps_iter": 0.1, "steps": 3}
    return [
        (lambda: attacks.fgm(f, x, eps=-0.1, norm="l2"), "eps: expected a finite number >= 0"),
        (lambda: attacks.fgm(f, x, eps=jnp.ones(4), norm="l2"), "eps: expected a scalar"),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l3"), "norm: expected one of"),
        (
            lambda: attacks.bim(f, x, eps=0.1, norm="l2", eps_iter=0.2, steps=3),
            "eps_iter: .*<= eps",
        ),
        (lambda: attacks.bim(f, x, eps=0.1, norm="l2", eps_iter=-1.0, steps=3), "eps_iter: .*>= 0"),
        (lambda: attacks.bim(f, x, eps=0.3, norm="l2", eps_iter=0.1, steps=0), "steps: .*>= 1"),
        (
            lambda: attacks.bim(f, x, eps=0.3, norm="l2", eps_iter=0.1, steps=2.5),
            "steps: .*integer",
        ),
        (
            lambda: attacks.pgd(f, x, key=jax.random.key(0), eps=-1.0, norm="linf", **it),
            "eps: expected a finite number >= 0",
        ),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l2", labels=jnp.zeros(3, int)), "labels: .*(4,)"),
        (
            lambda: attacks.fgm(f, x, eps=0.1, norm="l2", labels=jnp.zeros(4)),
            "labels: expected integer",
        ),
        (
            lambda: attacks.fgm(f, x, eps=0.1, norm="l2", labels=jnp.full(4, 3)),
            r"labels: .*\[0, 3\)",
        ),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l2", targets=-jnp.ones(4, int)), "targets: "),
        (
            lambda: attacks.fgm(
                f, x, eps=0.1, norm="l2", labels=jnp.zeros(4, int), targets=jnp.ones(4, int)
            ),
            "labels, targets: ",
        ),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l2", clip_min=1.0, clip_max=0.0), "clip_min: "),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l2", clip_min=0.5), "x: .*inside"),
        (lambda: attacks.fgm(f, x.at[0, 0].set(jnp.nan), eps=0.1, norm="l2"), "x: expected finite"),
        (
            lambda: attacks.fgm(f, jnp.zeros((4, 2), int), eps=0.1, norm="l2"),
            "x: expected floating",
        ),
        (lambda: attacks.fgm(lambda x_: f(x_)[0], x, eps=0.1, norm="l2"), "log_prob_fn: "),
        (
            lambda: attacks.fgm(f, x, eps=0.1, norm="l2", loss_fn=lambda lp, y: lp.sum()),
            "loss_fn: ",
        ),
        (lambda: attacks.input_gradient(f, x, labels=jnp.zeros(5, int)), "labels: "),
        (
            lambda: attacks.fgm(f, x, eps=0.1, norm="l2", clip_min=jnp.nan),
            "clip_min: expected a number",
        ),
        (lambda: attacks.fgm(f, x, eps=0.1, norm="l2", clip_max="1"), "clip_max: expected"),
        *[
            (lambda k=k: attacks.pgd(f, x, key=k, eps=0.3, norm="l2", **it), "key: expected a PRNG")
            for k in (0, "abc", None)
        ],
        # a log_prob_fn returning probabilities or logits would be attacked with the wrong loss
        *[
            (
                lambda wrong=wrong, attack=attack: attack(wrong, x + 1.0),
                r"log_prob_fn\(x\): expected log-probabilities",
            )
            for wrong in (lambda x_: jnp.exp(f(x_)), lambda x_: x_ @ jnp.eye(2, 3))
            for attack in (
                lambda g, x_: attacks.fgm(g, x_, eps=0.1, norm="l2"),
                lambda g, x_: attacks.bim(g, x_, eps=0.3, norm="l2", **it),
                lambda g, x_: attacks.pgd(g, x_, key=jax.random.key(0), eps=0.3, norm="l2", **it),
                lambda g, x_: attacks.input_gradient(g, x_),
            )
        ],
        (lambda: attacks.fgm(lambda x_: f(x_) * jnp.nan, x, eps=0.1, norm="l2"), "log_prob_fn"),
        # a step into overflow: the attacked inputs would be inf (fgm) or NaN (pgd's gradients)
        (
            lambda: attacks.fgm(
                lambda x_: jax.nn.log_softmax(x_ @ jnp.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])),
                x + 1e38,  # finite log-probabilities, gradient (2, 0): a step to 4e38 = inf
                eps=3e38,
                norm="linf",
                labels=jnp.ones(4, int),
            ),
            "eps: the attacked inputs are not finite",
        ),
        (
            lambda: attacks.pgd(f, x, key=jax.random.key(0), eps=3e38, norm="linf", **it),
            "eps: the attacked inputs are not finite",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_raises_value_error_naming_the_argument(index):
    call, match = _bad_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()
