"""Fuzzing the public entry points' numeric arguments: no silent NaN.

Each example draws every argument from a sane range except at most one, which is drawn from
arbitrary values (NaN, inf, huge, tiny, negative, zero; floats and ``None`` where an integer
belongs), so each bad value meets otherwise valid calls. The result must be finite, or the
documented non-finite value (NaN marks an empty reliability bin; an NLL is inf exactly when a
label has probability 0), or a ``ValueError``. Shapes are fixed so each jitted core compiles
once; the examples are derandomised (reproducible in CI) and few (the file runs in seconds).
"""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_jax import attacks, calibration, data, gp, ood, uncertainty

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
)
EXTREMES = st.sampled_from([0.0, -0.0, 1e-38, -1e-38, 1e30, -1e30, 3e38, np.inf, -np.inf, np.nan])
NUMBERS = st.floats(allow_nan=True, allow_infinity=True, width=32) | EXTREMES
COUNTS = st.integers(-2, 6) | st.floats(-1.0, 6.0) | st.none() | st.booleans()


def _arrays(shape, elements=NUMBERS):
    return hnp.arrays(np.float32, shape, elements=elements)


def _floats(low, high):
    return st.floats(float(np.float32(low)), float(np.float32(high)), width=32)


def draw_arguments(draw, **arguments):
    """Keyword arguments, each ``name=(sane, weird)`` drawn from ``sane`` except at most one
    (hypothesis chooses which, or none) drawn from ``weird``."""
    bad = draw(st.sampled_from([None, *arguments]), label="bad argument")
    return {
        name: draw(weird if name == bad else sane, label=name)
        for name, (sane, weird) in arguments.items()
    }


def _finite(*values) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in jax.tree.leaves(values))


def finite_or_value_error(call):
    """``call()``'s result if it is finite; ``None`` if it raised ``ValueError``."""
    try:
        result = call()
    except ValueError:
        return None
    assert _finite(result), f"silent non-finite result {result}"
    return result


def _log_softmax(raw: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(jax.nn.log_softmax(jnp.asarray(raw)))


LOG_PROBS = (
    _arrays((6, 3), _floats(-10, 10)).map(_log_softmax),
    _arrays((6, 3)).map(_log_softmax) | _arrays((6, 3)),  # -inf entries, or not normalised
)
LABELS = (
    hnp.arrays(np.int32, (6,), elements=st.integers(0, 2)),
    hnp.arrays(np.int32, (6,), elements=st.integers(-1, 3)) | _arrays((6,), _floats(0, 2)),
)


@FUZZ
@given(st.data())
def test_calibration_metrics(data_):
    args = draw_arguments(
        data_.draw, lp=LOG_PROBS, labels=LABELS, num_bins=(st.integers(1, 12), COUNTS)
    )
    lp, labels, num_bins = args["lp"], args["labels"], args["num_bins"]
    finite_or_value_error(lambda: uncertainty.max_probability(lp))
    finite_or_value_error(lambda: calibration.accuracy(lp, labels))
    finite_or_value_error(lambda: calibration.brier(lp, labels))
    finite_or_value_error(lambda: calibration.ece(lp, labels, num_bins=num_bins))
    finite_or_value_error(lambda: calibration.mce(lp, labels, num_bins=num_bins, equal_mass=True))
    try:
        nll = calibration.nll(lp, labels)
        assert np.isfinite(nll) or np.any(np.take_along_axis(lp, labels[:, None], 1) == -np.inf)
    except ValueError:
        pass
    try:
        rel = calibration.reliability(lp, labels, num_bins=num_bins)
    except ValueError:
        return
    occupied = np.asarray(rel.count) > 0
    for field in (rel.accuracy, rel.confidence, rel.gap):
        assert np.all(np.isfinite(np.asarray(field)[occupied]))
        assert np.all(np.isnan(np.asarray(field)[~occupied]))  # documented: empty bins


@FUZZ
@given(
    samples=_arrays((4, 5, 3), _floats(-10, 10)).map(_log_softmax)
    | _arrays((4, 5, 3)).map(_log_softmax)
    | _arrays((4, 5, 3))
)
def test_uncertainty_measures(samples):
    finite_or_value_error(lambda: uncertainty.entropy(samples))
    for measure in (
        uncertainty.predictive_entropy,
        uncertainty.expected_entropy,
        uncertainty.bald,
        uncertainty.variation_ratio,
    ):
        finite_or_value_error(lambda m=measure: m(samples))
        finite_or_value_error(lambda m=measure: m(samples[0]))  # [n, C]: refused, never [T, C]


@FUZZ
@given(st.data())
def test_temperature_scaling(data_):
    args = draw_arguments(
        data_.draw,
        logits=(_arrays((6, 3), _floats(-10, 10)), _arrays((6, 3))),
        labels=LABELS,
        steps=(st.sampled_from([1, 20]), COUNTS),
        init_temperature=(_floats(0.1, 10), NUMBERS),
    )
    logits, labels = args["logits"], args["labels"]
    if labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 2:
        # favour the label a little, so the sane examples mostly have a finite optimum
        args["logits"] = logits + 4 * np.eye(3, dtype=np.float32)[labels]
    temperature = finite_or_value_error(lambda: calibration.fit_temperature(**args))
    assert temperature is None or temperature > 0


@FUZZ
@given(st.data())
def test_ood_scores(data_):
    args = draw_arguments(
        data_.draw,
        scores_in=(_arrays((7,), _floats(-10, 10)), _arrays((7,))),
        scores_out=(_arrays((5,), _floats(-10, 10)), _arrays((5,))),
        tpr=(_floats(0.01, 1.0), NUMBERS),
    )
    scores_in, scores_out = args["scores_in"], args["scores_out"]
    finite_or_value_error(lambda: ood.auroc(scores_in, scores_out))
    finite_or_value_error(lambda: ood.aupr(scores_in, scores_out, positive="in"))
    finite_or_value_error(lambda: ood.aupr(scores_in, scores_out))
    finite_or_value_error(lambda: ood.fpr_at_tpr(scores_in, scores_out, args["tpr"]))
    curve = finite_or_value_error(lambda: ood.inverse_ecdf(scores_in).fraction)
    assert curve is None or np.all((curve >= 0) & (curve <= 1))


W = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0]])


def _linear_log_probs(x):
    return jax.nn.log_softmax(x @ W)


@settings(FUZZ, max_examples=12)  # eager attacks compile their loops on every call
@given(st.data())
def test_attacks(data_):
    args = draw_arguments(
        data_.draw,
        x=(_arrays((3, 2), _floats(-3, 3)), _arrays((3, 2))),
        eps=(_floats(0, 2), NUMBERS),
        eps_iter=(_floats(0, 0.5), NUMBERS),
        steps=(st.just(2), COUNTS),
        clip_min=(st.none() | _floats(-5, -3), NUMBERS),
        clip_max=(st.none() | _floats(3, 5), NUMBERS),
    )
    norm = data_.draw(st.sampled_from(attacks.NORMS), label="norm")
    x, f = args.pop("x"), _linear_log_probs
    one_step = {k: v for k, v in args.items() if k not in ("eps_iter", "steps")}
    finite_or_value_error(lambda: attacks.fgm(f, x, norm=norm, **one_step))
    finite_or_value_error(lambda: attacks.bim(f, x, norm=norm, **args))
    finite_or_value_error(lambda: attacks.pgd(f, x, key=jax.random.key(0), norm=norm, **args))
    finite_or_value_error(lambda: attacks.input_gradient(f, x))


@settings(FUZZ, max_examples=20)
@given(st.data())
def test_gp_classifier(data_):
    args = draw_arguments(
        data_.draw,
        variance=(_floats(1e-2, 1e2), NUMBERS),
        lengthscale=(_floats(1e-2, 1e2), NUMBERS),
        x=(_arrays((6, 2), _floats(-3, 3)), _arrays((6, 2))),
        x_new=(_arrays((3, 2), _floats(-10, 10)), _arrays((3, 2))),
        num_samples=(st.just(4), COUNTS),
    )
    y = np.array([0, 1, 0, 1, 1, 0])
    try:
        kernel = gp.rbf_kernel(variance=args["variance"], lengthscale=args["lengthscale"])
        posterior = gp.fit(kernel, kernel.init(), args["x"], y, likelihood=gp.probit())
    except ValueError:
        return
    moments = finite_or_value_error(lambda: gp.latent_predictive(kernel, posterior, args["x_new"]))
    if moments is None:
        return
    mean, var = moments
    assert np.all(np.asarray(var) >= 0)
    finite_or_value_error(lambda: gp.predictive_log_probs(gp.probit(), mean, var))
    finite_or_value_error(lambda: gp.houlsby_bald(mean, var))
    key, num_samples = jax.random.key(0), args["num_samples"]
    finite_or_value_error(
        lambda: gp.monte_carlo_bald(gp.logistic(), mean, var, key, num_samples=num_samples)
    )


@FUZZ
@given(st.data())
def test_gp_latent_moments(data_):
    args = draw_arguments(
        data_.draw,
        mean=(_arrays((4,), _floats(-10, 10)), _arrays((4,))),
        var=(_arrays((4,), _floats(0, 10)), _arrays((4,))),
    )
    finite_or_value_error(lambda: gp.predictive_entropy(gp.probit(), **args))
    finite_or_value_error(lambda: gp.predictive_log_probs(gp.logistic(), **args))
    finite_or_value_error(lambda: gp.houlsby_bald(**args))


@FUZZ
@given(st.data())
def test_batches(data_):
    args = draw_arguments(
        data_.draw,
        x=(_arrays((5, 2), _floats(-3, 3)), _arrays((5, 2))),
        batch_size=(st.integers(1, 6), COUNTS),
        key=(st.just(jax.random.key(0)), st.sampled_from([None, 0, "abc"])),
    )
    try:
        batches = data.Batches(args["x"], np.arange(5), args["batch_size"], key=args["key"])
    except ValueError:
        return
    assert isinstance(args["batch_size"], int) and sum(len(b.x) for b in batches) == 5
    assert _finite([b.x for b in batches])


@FUZZ
@given(seed=COUNTS | st.integers(2**32 - 1, 2**32), num_train=COUNTS)
def test_toy_data(seed, num_train):
    def arrays():
        ds = data.load("toy2d", seed=seed, num_train=num_train)
        return ds.x_train, ds.x_val, ds.x_test

    x = finite_or_value_error(arrays)
    assert x is None or (isinstance(seed, int) and len(x[0]) == (num_train or 100))
