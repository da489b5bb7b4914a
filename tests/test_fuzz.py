"""Fuzzing the public entry points' numeric arguments: no silent NaN.

Every call gets arbitrary floats (NaN, inf, huge, tiny, negative, zero) and integers in the
places a user types numbers; the result must be finite or the documented non-finite value
(NaN marks an empty reliability bin; an NLL is inf exactly when a label has probability 0),
or a ``ValueError``. Shapes are fixed so each jitted core compiles once; the example counts keep
the file to a few seconds.
"""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_jax import attacks, calibration, data, gp, ood, uncertainty

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
EXTREMES = st.sampled_from([0.0, -0.0, 1e-38, -1e-38, 1e30, -1e30, 3e38, np.inf, -np.inf, np.nan])
NUMBERS = ANY_FLOAT | EXTREMES
COUNTS = st.integers(-2, 6) | st.floats(-1.0, 6.0) | st.none() | st.booleans()


def _arrays(shape, elements=NUMBERS):
    return hnp.arrays(np.float32, shape, elements=elements)


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


def _log_probs(raw: np.ndarray, normalise: bool) -> np.ndarray:
    """``raw`` as given (mostly refused) or ``log_softmax`` of it (mostly valid, -inf allowed)."""
    if not normalise:
        return raw
    with np.errstate(all="ignore"):
        return np.asarray(jax.nn.log_softmax(jnp.asarray(raw)))


@FUZZ
@given(
    raw=_arrays((6, 3)),
    normalise=st.booleans(),
    labels=hnp.arrays(np.int32, (6,), elements=st.integers(-1, 3)),
    num_bins=COUNTS,
)
def test_calibration_metrics(raw, normalise, labels, num_bins):
    lp = _log_probs(raw, normalise)
    finite_or_value_error(lambda: uncertainty.max_probability(lp))
    for metric in (calibration.accuracy, calibration.brier):
        finite_or_value_error(lambda m=metric: m(lp, labels))
    for metric in (calibration.ece, calibration.mce):
        finite_or_value_error(lambda m=metric: m(lp, labels, num_bins=num_bins))
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
@given(raw=_arrays((4, 5, 3)), normalise=st.booleans())
def test_uncertainty_measures(raw, normalise):
    lp = _log_probs(raw, normalise)
    finite_or_value_error(lambda: uncertainty.entropy(lp))
    for measure in (
        uncertainty.predictive_entropy,
        uncertainty.expected_entropy,
        uncertainty.bald,
        uncertainty.variation_ratio,
    ):
        finite_or_value_error(lambda m=measure: m(lp))
        finite_or_value_error(lambda m=measure: m(lp[0]))  # [n, C] is refused, never read as [T, C]


@FUZZ
@given(
    logits=_arrays((6, 3)),
    labels=hnp.arrays(np.int32, (6,), elements=st.integers(0, 2)),
    steps=COUNTS,
    init_temperature=NUMBERS,
)
def test_temperature_scaling(logits, labels, steps, init_temperature):
    temperature = finite_or_value_error(
        lambda: calibration.fit_temperature(
            logits, labels, steps=steps, init_temperature=init_temperature
        )
    )
    assert temperature is None or temperature > 0


@FUZZ
@given(scores_in=_arrays((7,)), scores_out=_arrays((5,)), tpr=NUMBERS)
def test_ood_scores(scores_in, scores_out, tpr):
    finite_or_value_error(lambda: ood.auroc(scores_in, scores_out))
    finite_or_value_error(lambda: ood.aupr(scores_in, scores_out, positive="in"))
    finite_or_value_error(lambda: ood.aupr(scores_in, scores_out))
    finite_or_value_error(lambda: ood.fpr_at_tpr(scores_in, scores_out, tpr))
    curve = finite_or_value_error(lambda: ood.inverse_ecdf(scores_in).fraction)
    assert curve is None or np.all((curve >= 0) & (curve <= 1))


W = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0]])


def _linear_log_probs(x):
    return jax.nn.log_softmax(x @ W)


@FUZZ
@given(
    x=_arrays((3, 2)),
    eps=NUMBERS,
    eps_iter=NUMBERS,
    steps=COUNTS,
    clip_min=st.none() | NUMBERS,
    clip_max=st.none() | NUMBERS,
    norm=st.sampled_from(attacks.NORMS),
)
def test_attacks(x, eps, eps_iter, steps, clip_min, clip_max, norm):
    clip = dict(clip_min=clip_min, clip_max=clip_max)
    f = _linear_log_probs
    finite_or_value_error(lambda: attacks.fgm(f, x, eps=eps, norm=norm, **clip))
    iterate = dict(eps=eps, eps_iter=eps_iter, steps=steps, norm=norm, **clip)
    finite_or_value_error(lambda: attacks.bim(f, x, **iterate))
    finite_or_value_error(lambda: attacks.pgd(f, x, key=jax.random.key(0), **iterate))
    finite_or_value_error(lambda: attacks.input_gradient(f, x))


@FUZZ
@given(
    variance=NUMBERS,
    lengthscale=NUMBERS,
    x=_arrays((6, 2), st.floats(-1e3, 1e3, width=32) | EXTREMES),
    x_new=_arrays((3, 2)),
    num_samples=COUNTS,
)
def test_gp_classifier(variance, lengthscale, x, x_new, num_samples):
    y = np.array([0, 1, 0, 1, 1, 0])
    try:
        kernel = gp.rbf_kernel(variance=variance, lengthscale=lengthscale)
        posterior = gp.fit(kernel, kernel.init(), x, y, likelihood=gp.probit())
    except ValueError:
        return
    moments = finite_or_value_error(lambda: gp.latent_predictive(kernel, posterior, x_new))
    if moments is None:
        return
    mean, var = moments
    assert np.all(np.asarray(var) >= 0)
    finite_or_value_error(lambda: gp.predictive_log_probs(gp.probit(), mean, var))
    finite_or_value_error(lambda: gp.houlsby_bald(mean, var))
    finite_or_value_error(
        lambda: gp.monte_carlo_bald(
            gp.logistic(), mean, var, jax.random.key(0), num_samples=num_samples
        )
    )


@FUZZ
@given(mean=_arrays((4,)), var=_arrays((4,)))
def test_gp_latent_moments(mean, var):
    finite_or_value_error(lambda: gp.predictive_entropy(gp.probit(), mean, var))
    finite_or_value_error(lambda: gp.predictive_log_probs(gp.logistic(), mean, var))
    finite_or_value_error(lambda: gp.houlsby_bald(mean, var))


@FUZZ
@given(x=_arrays((5, 2)), batch_size=COUNTS, key=st.sampled_from([None, 0, "abc", "key"]))
def test_batches(x, batch_size, key):
    key = jax.random.key(0) if key == "key" else key
    try:
        batches = data.Batches(x, np.arange(5), batch_size, key=key)
    except ValueError:
        return
    assert isinstance(batch_size, int) and sum(len(b.x) for b in batches) == 5
    assert _finite([b.x for b in batches])


@FUZZ
@given(seed=COUNTS | st.integers(2**32 - 1, 2**32), num_train=COUNTS)
def test_toy_data(seed, num_train):
    def arrays():
        ds = data.load("toy2d", seed=seed, num_train=num_train)
        return ds.x_train, ds.x_val, ds.x_test

    x_train = finite_or_value_error(arrays)
    assert x_train is None or (isinstance(seed, int) and len(x_train[0]) == (num_train or 100))
