"""Sweeps over eps and detection of attacked inputs, on the notebook's toy problem."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import average_precision_score

from bnn_jax import attacks, data
from bnn_jax.uncertainty import mean_log_probs

RATE = 0.2


def _logits(params, x, mask):
    """A ReLU MLP with dropout ``mask`` (1/(1-RATE) or 0) on the hidden units' outputs."""
    (w1, b1), (w2, b2), (w3, b3) = params
    h = jax.nn.relu(x @ w1 + b1) * mask[0]
    h = jax.nn.relu(h @ w2 + b2) * mask[1]
    return h @ w3 + b3


def _masks(rng, shape):
    """Dropout masks, drawn with NumPy so no PRNG kernel needs compiling in the tests."""
    return jnp.asarray((rng.random(shape) > RATE) / (1 - RATE), jnp.float32)


@pytest.fixture(scope="module")
def toy():
    """toy2d (2 classes) and an MLP with dropout, trained full batch for 300 Adam steps with
    independent masks per example. Returns test inputs and labels and two methods judged by
    the same MC-dropout predictive (posterior samples = masks shared by the batch, as in
    :mod:`bnn_jax.dropout`): attacked through the MC average (EOT) or through one mask."""
    ds = data.load("toy2d", seed=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    rng = np.random.default_rng(0)
    params = [
        (jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32), jnp.zeros(n))
        for m, n in [(2, 32), (32, 32), (32, 2)]
    ]
    optimizer = optax.adam(1e-2)

    def step(carry, mask):
        params, opt_state = carry
        loss_fn = lambda p: attacks.cross_entropy(jax.nn.log_softmax(_logits(p, x, mask)), y)
        updates, opt_state = optimizer.update(
            jax.grad(lambda p: loss_fn(p).mean())(params), opt_state
        )
        return (optax.apply_updates(params, updates), opt_state), None

    masks = _masks(rng, (300, 2, len(x), 32))
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, masks))(
        (params, optimizer.init(params))
    )
    logits_fn = lambda mask, x_: _logits(params, x_, mask)
    attack_masks = _masks(rng, (16, 2, 32))
    mc = attacks.mc_method(logits_fn, attack_masks, eval_samples=_masks(rng, (16, 2, 32)))
    one_mask = attacks.single_sample_log_prob_fn(logits_fn, attack_masks[0])
    methods = {"mc": mc, "one mask": attacks.Method(one_mask, mc.sample_log_probs_fn)}
    return jnp.asarray(ds.x_test[:60]), jnp.asarray(ds.y_test[:60]), methods


def test_sweep_structure_and_values(toy):
    x, y, methods = toy
    epsilons = [0.0, 1.0, 2.0]
    traces = []

    def attack(log_prob_fn, x_, *, eps, labels):
        traces.append(1)
        return attacks.fgm(log_prob_fn, x_, eps=eps, norm="l2", labels=labels)

    results = attacks.sweep(methods, attack, x, y, epsilons, progress=False)
    assert len(traces) == len(methods)  # one trace (and compilation) per method, not per eps
    assert set(results) == {"mc", "one mask"}
    for name, r in results.items():
        for field in r[:7] + r.detection + r.detection_successful:
            assert field.shape == (3,)
        np.testing.assert_array_equal(r.eps, epsilons)
        clean = mean_log_probs(methods[name].sample_log_probs_fn(x))
        np.testing.assert_allclose(r.accuracy[0], np.mean(np.argmax(clean, 1) == y))
        assert r.accuracy[0] > 0.85 and r.accuracy[-1] < r.accuracy[0] - 0.3
        assert r.nll[-1] > 10 * r.nll[0]
        assert np.all((r.ece >= 0) & (r.ece <= 1))
        assert np.all((r.entropy >= 0) & (r.entropy <= np.log(2) + 1e-6))
        assert r.success_rate[0] == 0 and r.success_rate[-1] > 0.3
        # eps = 0: attacked inputs are the clean ones, indistinguishable; no success at all.
        np.testing.assert_allclose(r.detection.auroc_entropy[0], 0.5)
        assert all(np.isnan(field[0]) for field in r.detection_successful)
        for field in r.detection + r.detection_successful:
            finite = field[np.isfinite(field)]
            assert np.all((finite >= 0) & (finite <= 1))
        assert np.all(np.isfinite(r.detection_successful.auroc_entropy[1:]))
        assert np.all(r.bald >= -1e-6) and r.bald[1] > 0
    assert not np.allclose(results["mc"].nll, results["one mask"].nll)

    # Chunks of 25 (the last one padded) give the same attacks and metrics as one batch.
    mc = {"mc": methods["mc"]}
    chunks = attacks.sweep(mc, attack, x, y, epsilons[1:2], batch_size=25, progress=False)
    whole = [field[1:2] for field in jax.tree.leaves(results["mc"])]
    for a, b in zip(whole, jax.tree.leaves(chunks["mc"]), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5)


def _entropy(p):
    return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)


def _naive_auroc(neg, pos):
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def test_detection_matches_loops_and_sklearn(x64):
    rng = np.random.default_rng(0)
    clean = jax.nn.log_softmax(3 * rng.normal(size=(5, 30, 3)))
    adv = jax.nn.log_softmax(rng.normal(size=(5, 40, 3)))
    mask = rng.random(40) < 0.4

    def scores(lp):
        p = np.exp(np.asarray(lp))
        entropy = _entropy(p.mean(0))
        return entropy, entropy - _entropy(p).mean(0)

    for chosen, result in [
        (np.ones(40, bool), attacks.detection(clean, adv)),
        (mask, attacks.detection(clean, adv, mask=mask)),
    ]:
        expected = []
        for neg, pos in zip(scores(clean), scores(adv), strict=True):
            pos = pos[chosen]
            truth = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
            expected += [_naive_auroc(neg, pos), average_precision_score(truth, np.r_[neg, pos])]
        np.testing.assert_allclose(result, expected, rtol=1e-10)
    assert np.all(np.isnan(attacks.detection(clean, adv, mask=np.zeros(40, bool))))


def test_attack_success_is_correct_then_wrong():
    clean = jnp.log(jnp.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]))
    adv = jnp.log(jnp.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3], [0.3, 0.7]]))
    labels = jnp.array([0, 0, 0, 1])
    np.testing.assert_array_equal(
        attacks.attack_success(clean, adv, labels), [True, False, False, False]
    )


def _bad_calls():
    f = lambda x_: jax.nn.log_softmax(x_ @ jnp.ones((2, 3)))
    method = attacks.Method(f, lambda x_: f(x_)[None])
    fgm = functools.partial(attacks.fgm, norm="l2")
    x, y = jnp.zeros((4, 2)), jnp.zeros(4, int)
    sweep = lambda **kw: attacks.sweep(
        kw.pop("methods", {"m": method}),
        fgm,
        kw.pop("x", x),
        kw.pop("y", y),
        kw.pop("epsilons", [0.1]),
        progress=False,
        **kw,
    )
    lp = jnp.full((2, 4, 3), -jnp.log(3.0))
    return [
        (lambda: sweep(methods={}), "methods: expected a non-empty mapping"),
        (lambda: sweep(methods={"m": f}), "methods: expected attacks.Method"),
        (lambda: sweep(epsilons=[]), "epsilons: expected a non-empty"),
        (lambda: sweep(epsilons=[0.1, -0.1]), "epsilons: expected finite values >= 0"),
        (lambda: sweep(y=jnp.zeros(3, int)), r"labels: .*\(4,\)"),
        (lambda: sweep(y=jnp.full(4, 3)), r"labels: expected values in \[0, 3\)"),
        (lambda: sweep(x=x.at[0, 0].set(jnp.inf)), "x: expected finite"),
        (lambda: sweep(num_bins=0), "num_bins: expected an integer >= 1"),
        (lambda: sweep(batch_size=0), "batch_size: expected an integer >= 1"),
        (lambda: sweep(batch_size=2.5), "batch_size: expected an integer >= 1"),
        (
            lambda: sweep(methods={"p": attacks.Method(lambda x_: jnp.exp(f(x_)), method[1])}),
            r"methods\['p'\].log_prob_fn\(x\): expected log-probabilities",
        ),
        (
            lambda: sweep(methods={"p": attacks.Method(f, lambda x_: jnp.exp(f(x_))[None])}),
            r"methods\['p'\].sample_log_probs_fn\(x\): expected log-probabilities",
        ),
        (
            lambda: sweep(methods={"p": attacks.Method(f, f)}),
            r"methods\['p'\].sample_log_probs_fn\(x\): expected posterior samples",
        ),
        (lambda: attacks.detection(lp, lp, mask=jnp.ones(3, bool)), r"mask: .*\(4,\)"),
        (lambda: attacks.detection(lp[0], lp), "clean_sample_log_probs: expected"),
        (lambda: attacks.detection(lp, lp[0]), "adv_sample_log_probs: expected"),
        (lambda: attacks.attack_success(lp[0], lp[0, :3], y), "adv_log_probs: "),
        (lambda: attacks.attack_success(lp[0], lp[0], y[:3]), "labels: "),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_raises_value_error_naming_the_argument(index):
    call, match = _bad_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()
