"""Calibration metrics against naive loops, netcal and scipy; temperature scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from bnn_jax import calibration

STATIC = ("num_bins", "equal_mass")


def log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def overconfident_problem(seed, n, num_classes, scale=5.0):
    """Labels sampled from softmax(z); the model predicts softmax(scale * z) (overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, num_classes))
    cumulative = np.cumsum(np.exp(log_softmax(z)), axis=-1)
    labels = np.minimum((rng.uniform(size=(n, 1)) > cumulative).sum(-1), num_classes - 1)
    return scale * z, labels


def loop_reliability(confidences, correct, edges):
    """Naive reference: bin b holds edges[b] <= c < edges[b + 1], the last bin also c == 1."""
    rows = []
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        inside = [
            i
            for i, c in enumerate(confidences)
            if edges[b] <= c and (c < edges[b + 1] or (last and c <= edges[b + 1]))
        ]
        if inside:
            acc = sum(correct[i] for i in inside) / len(inside)
            conf = sum(confidences[i] for i in inside) / len(inside)
        else:
            acc = conf = np.nan
        rows.append((edges[b], edges[b + 1], acc, conf, len(inside), conf - acc))
    return [np.array(col) for col in zip(*rows, strict=True)]


def loop_ece_mce(confidences, correct, edges):
    *_, count, gap = loop_reliability(confidences, correct, edges)
    occupied = count > 0
    ece = sum(count[occupied] * np.abs(gap[occupied])) / len(confidences)
    return ece, max(np.abs(gap[occupied]))


def loop_edges(confidences, num_bins, equal_mass):
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    if equal_mass:
        edges = np.quantile(confidences, edges)
        edges[0], edges[-1] = 0.0, 1.0
    return edges


@pytest.fixture
def predictions(x64):
    """Float64 predictions (every test using them runs in x64), overconfident at high confidence
    and underconfident at low confidence, so that the ECE depends on the binning (were every bin
    overconfident, any binning would give ECE = mean confidence - accuracy)."""
    logits, labels = overconfident_problem(0, 300, 4)
    scale = np.where(np.arange(300) % 2 == 0, 3.0 / 5.0, 0.3 / 5.0)[:, None]
    return jnp.asarray(log_softmax(logits * scale)), jnp.asarray(labels)


def test_accuracy_nll_brier_match_loops(predictions):
    log_probs, labels = predictions
    lp, y = np.asarray(log_probs), np.asarray(labels)
    n, num_classes = lp.shape
    acc = sum(int(np.argmax(lp[i]) == y[i]) for i in range(n)) / n
    nll = -sum(lp[i, y[i]] for i in range(n)) / n
    brier = (
        sum(
            sum((np.exp(lp[i, c]) - (c == y[i])) ** 2 for c in range(num_classes)) for i in range(n)
        )
        / n
    )
    np.testing.assert_allclose(calibration.accuracy(log_probs, labels), acc, rtol=1e-14)
    np.testing.assert_allclose(calibration.nll(log_probs, labels), nll, rtol=1e-12)
    np.testing.assert_allclose(calibration.brier(log_probs, labels), brier, rtol=1e-12)


def test_nll_is_inf_when_the_label_has_probability_zero():
    log_probs = jnp.log(jnp.array([[1.0, 0.0], [0.5, 0.5]]))
    assert float(calibration.nll(log_probs, jnp.array([1, 0]))) == np.inf
    np.testing.assert_allclose(calibration.brier(log_probs, jnp.array([1, 0])), (2 + 0.5) / 2)


@pytest.mark.parametrize(
    ("num_bins", "equal_mass"), [(1, False), (10, False), (10, True), (15, True)]
)
def test_ece_mce_reliability_match_loop(predictions, num_bins, equal_mass):
    log_probs, labels = predictions
    confidences = np.exp(np.max(np.asarray(log_probs), axis=-1))
    correct = np.argmax(np.asarray(log_probs), axis=-1) == np.asarray(labels)
    edges = loop_edges(confidences, num_bins, equal_mass)
    options = dict(num_bins=num_bins, equal_mass=equal_mass)
    expected_ece, expected_mce = loop_ece_mce(confidences, correct, edges)
    np.testing.assert_allclose(
        calibration.ece(log_probs, labels, **options), expected_ece, rtol=1e-12
    )
    np.testing.assert_allclose(
        calibration.mce(log_probs, labels, **options), expected_mce, rtol=1e-12
    )
    rel = calibration.reliability(log_probs, labels, **options)
    for field, expected in zip(rel, loop_reliability(confidences, correct, edges), strict=True):
        np.testing.assert_allclose(field, expected, rtol=1e-12, atol=1e-15)
    assert rel.count.sum() == len(confidences)


@pytest.mark.parametrize(
    ("num_bins", "equal_mass", "dtype"),
    [(10, False, np.float64), (15, False, np.float32), (10, True, np.float64)],
)
def test_ece_mce_match_netcal(num_bins, equal_mass, dtype, predictions):
    metrics = pytest.importorskip("netcal.metrics")
    log_probs, labels = predictions
    probs = np.exp(np.asarray(log_probs, np.float64)).astype(dtype)
    log_probs = jnp.log(jnp.asarray(probs))
    options = dict(bins=num_bins, equal_intervals=not equal_mass)
    expected_ece = metrics.ECE(**options).measure(probs, np.asarray(labels))
    expected_mce = metrics.MCE(**options).measure(probs, np.asarray(labels))
    ours = dict(num_bins=num_bins, equal_mass=equal_mass)
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(calibration.ece(log_probs, labels, **ours), expected_ece, **tol)
    np.testing.assert_allclose(calibration.mce(log_probs, labels, **ours), expected_mce, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confidences_on_bin_edges_go_to_the_bin_above(dtype):
    # Every edge np.linspace(0, 1, B + 1) rounded to the dtype, its dtype neighbours, and
    # literals near edges: bin b = [e_b, e_{b+1}), the last bin closed (np.histogram's rule).
    num_bins = 10
    edges = np.linspace(0.0, 1.0, num_bins + 1).astype(dtype)
    up, down = np.nextafter(edges, dtype(2)), np.nextafter(edges, dtype(-1))
    literals = np.array([0.3, 0.6, 0.7], dtype)
    confidences = np.clip(np.concatenate([edges, up, down, literals]), 0, 1).astype(dtype)
    correct = np.arange(len(confidences)) % 3 == 0
    with jax.enable_x64(dtype == np.float64):
        rel = calibration.reliability_from_confidences(
            jnp.asarray(confidences), jnp.asarray(correct), num_bins=num_bins
        )
        np.testing.assert_array_equal(rel.count, np.histogram(confidences, bins=edges)[0])
        occupied = np.asarray(rel.count) > 0
        ece = np.sum(np.asarray(rel.count)[occupied] * np.abs(np.asarray(rel.gap)[occupied]))
    if dtype == np.float64:
        # netcal clips confidences to [eps, 1 - eps] before binning, which moves no value
        # across an edge here. (In float32 netcal is not self-consistent on edges: its counts
        # use float64 edges and its means float32 ones.)
        metrics = pytest.importorskip("netcal.metrics")
        expected = metrics.ECE(bins=num_bins).measure(confidences, correct.astype(np.int64))
        np.testing.assert_allclose(ece / len(confidences), expected, rtol=1e-12)


def test_reliability_gap_sign_and_empty_bins(predictions):
    log_probs, labels = predictions
    rel = calibration.reliability(log_probs, labels, num_bins=10)
    occupied = np.asarray(rel.count) > 0
    # 4 classes: no confidence below 1/4, so the first two bins are empty.
    assert not occupied[:2].any()
    assert np.all(np.isnan(np.asarray(rel.accuracy)[~occupied]))
    # Overconfident at the top (positive gap), underconfident at the bottom (negative gap).
    assert float(rel.gap[-1]) > 0.1
    assert float(rel.gap[2]) < -0.1
    np.testing.assert_allclose(rel.gap, rel.confidence - rel.accuracy)


def test_calibration_curve_defaults_to_twenty_equal_mass_bins(predictions):
    log_probs, labels = predictions
    curve = calibration.calibration_curve(log_probs, labels)
    rel = calibration.reliability(log_probs, labels, num_bins=20, equal_mass=True)
    np.testing.assert_array_equal(curve.confidence, rel.confidence)
    np.testing.assert_array_equal(curve.gap, rel.gap)
    np.testing.assert_array_equal(curve.count, np.full(20, 15))  # 300 distinct confidences
    assert np.all(np.diff(np.asarray(curve.confidence)) > 0)


@pytest.mark.parametrize(
    ("fn", "equal_mass"),
    [
        (calibration.ece, False),
        (calibration.mce, True),
        (calibration.reliability, True),
        (calibration.calibration_curve, False),
    ],
)
def test_jit_matches_eager(fn, equal_mass, predictions):
    log_probs, labels = predictions
    eager = fn(log_probs, labels, num_bins=10, equal_mass=equal_mass)
    staged = jax.jit(fn, static_argnames=STATIC)(
        log_probs, labels, num_bins=10, equal_mass=equal_mass
    )
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(staged), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_jit_matches_eager_simple_metrics(predictions):
    log_probs, labels = predictions
    for fn in (calibration.accuracy, calibration.nll, calibration.brier):
        np.testing.assert_allclose(
            jax.jit(fn)(log_probs, labels), fn(log_probs, labels), rtol=1e-14
        )


def test_temperature_scaling_recovers_the_scale_and_lowers_nll(x64):
    logits, labels = overconfident_problem(1, 3000, 5, scale=5.0)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    temperature = calibration.fit_temperature(logits, labels)

    def nll_at(t):
        return float(calibration.nll(jax.nn.log_softmax(logits / t), labels))

    # The fitted T is the minimiser of the NLL (checked against a bounded 1-D scipy search) ...
    reference = scipy.optimize.minimize_scalar(
        lambda log_t: nll_at(np.exp(log_t)),
        bounds=(-3, 3),
        method="bounded",
        options=dict(xatol=1e-10),
    )
    np.testing.assert_allclose(temperature, np.exp(reference.x), rtol=1e-6)
    # ... it recovers the overconfidence factor within sampling error ...
    np.testing.assert_allclose(temperature, 5.0, rtol=0.1)
    # ... and it lowers NLL and ECE of the overconfident model.
    assert nll_at(temperature) < nll_at(1.0) - 0.5
    scaled = jax.nn.log_softmax(logits / temperature)
    assert calibration.ece(scaled, labels) < 0.5 * calibration.ece(
        jax.nn.log_softmax(logits), labels
    )


def test_temperature_scaling_keeps_a_calibrated_model_and_traces():
    logits, labels = overconfident_problem(2, 2000, 3, scale=1.0)
    logits, labels = jnp.asarray(logits, jnp.float32), jnp.asarray(labels)
    temperature = calibration.fit_temperature(logits, labels, init_temperature=3.0)
    np.testing.assert_allclose(temperature, 1.0, rtol=0.15)
    # Under tracing the value checks step aside; the solver itself is a jitted core already.
    staged = jax.eval_shape(calibration.fit_temperature, logits, labels)
    assert staged.shape == () and staged.dtype == jnp.float32


GOOD_LP = jnp.log(jnp.array([[0.2, 0.8], [0.6, 0.4]]))
GOOD_Y = jnp.array([1, 0])


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "match"),
    [
        (
            calibration.ece,
            (jnp.array([[0.2, 0.8]]), GOOD_Y[:1]),
            {},
            "log_probs: expected log-prob",
        ),
        (calibration.ece, (jnp.zeros((0, 2)), GOOD_Y[:0]), {}, "log_probs: expected non-empty"),
        (
            calibration.ece,
            (GOOD_LP.at[0, 0].set(jnp.nan), GOOD_Y),
            {},
            "log_probs: expected no NaN",
        ),
        (calibration.ece, (GOOD_LP[None], GOOD_Y), {}, "log_probs: expected shape \\[batch"),
        (calibration.ece, (GOOD_LP, GOOD_Y[:1]), {}, "labels: expected shape \\(2,\\)"),
        (
            calibration.ece,
            (GOOD_LP, jnp.array([0, 2])),
            {},
            "labels: expected values in \\[0, 1\\]",
        ),
        (calibration.ece, (GOOD_LP, jnp.array([-1, 0])), {}, "labels: expected values in"),
        (calibration.nll, (GOOD_LP, jnp.array([0.0, 1.0])), {}, "labels: expected an integer"),
        (calibration.ece, (GOOD_LP, GOOD_Y), {"num_bins": 0}, "num_bins: expected an integer >= 1"),
        (calibration.mce, (GOOD_LP, GOOD_Y), {"num_bins": 2.0}, "num_bins: expected an integer"),
        (calibration.reliability, (GOOD_LP, GOOD_Y), {"num_bins": True}, "num_bins: expected"),
        (calibration.accuracy, (GOOD_LP, GOOD_Y[:1]), {}, "labels: expected shape"),
        (calibration.brier, (GOOD_LP + 1.0, GOOD_Y), {}, "log_probs: expected log-probabilities"),
        (
            calibration.reliability_from_confidences,
            (jnp.array([0.5, 1.5]), jnp.array([True, False])),
            {},
            "confidences: expected values in \\[0, 1\\]",
        ),
        (
            calibration.reliability_from_confidences,
            (jnp.array([0.5, 0.7]), jnp.array([True])),
            {},
            "correct: expected shape",
        ),
        (
            calibration.reliability_from_confidences,
            (jnp.array([0.5, 0.7]), jnp.array([2, 0])),
            {},
            "correct: expected booleans",
        ),
        (
            calibration.reliability_from_confidences,
            (jnp.zeros(0), jnp.zeros(0, bool)),
            {},
            "confidences: expected a non-empty 1-D",
        ),
        (
            calibration.fit_temperature,
            (GOOD_LP.at[0, 0].set(jnp.inf), GOOD_Y),
            {},
            "logits: expect",
        ),
        (calibration.fit_temperature, (GOOD_LP[0], GOOD_Y), {}, "logits: expected a non-empty"),
        (calibration.fit_temperature, (GOOD_LP, GOOD_Y), {"steps": 0}, "steps: expected an int"),
        (
            calibration.fit_temperature,
            (GOOD_LP, GOOD_Y),
            {"init_temperature": 0.0},
            "init_temperature: expected a finite value > 0",
        ),
        (
            calibration.fit_temperature,
            (GOOD_LP, GOOD_Y),
            {"init_temperature": float("inf")},
            "init_temperature: expected a finite value > 0",
        ),
        (calibration.fit_temperature, (GOOD_LP, jnp.array([0, 5])), {}, "labels: expected values"),
        (  # confidently wrong everywhere: the NLL falls all the way to T = inf
            calibration.fit_temperature,
            (jnp.array([[30.0, 0.0], [0.0, 30.0]]), jnp.array([1, 0])),
            {},
            r"logits: the NLL is minimised by T = inf",
        ),
        (  # constant logits: every T is as good, and T = inf among them
            calibration.fit_temperature,
            (jnp.full((2, 3), 1e30), jnp.array([1, 0])),
            {},
            r"logits: the NLL is minimised by T = inf",
        ),
        (  # no validation error: the NLL falls all the way to T = 0
            calibration.fit_temperature,
            (jnp.array([[3.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1])),
            {},
            r"logits: the NLL is minimised by T -> 0",
        ),
    ],
)
def test_bad_input_raises(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
