"""What uncertainty says about attacked inputs: eps sweeps and adversarial-input detection.

A sweep attacks every :class:`~bnn_jax.attacks.Method` at every eps and reports, per eps,
accuracy, NLL, ECE, mean predictive entropy and mean BALD of the attacked inputs (the blog's
entropy-against-step-size curve) and how well entropy and BALD tell the attacked inputs from
the clean ones (Smith & Gal 2018: which measure detects attacks), on all attacked inputs and on
the successful attacks only.
"""

from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration, checks, ood, uncertainty
from bnn_jax._tqdm import tqdm
from bnn_jax.attacks.gradient import LogProbFn
from bnn_jax.attacks.predictives import Method

_PROBE = 8
"""How many clean inputs :func:`sweep` passes eagerly through each ``log_prob_fn`` to check it."""

AttackFn = Callable[..., jax.Array]
"""``attack(log_prob_fn, x, *, eps, labels) -> x_adv``; a sweep passes the true labels of the
inputs (in the same batches), to use (the blog: ``functools.partial(fgm, norm="linf")``),
ignore (the notebook's predicted class: ``lambda f, x, *, eps, labels: fgm(f, x, eps=eps,
norm="l2")``) or turn into targets."""


class Detection(NamedTuple):
    """Detection of attacked inputs (positives) among clean inputs (negatives) by thresholding
    an uncertainty score: AUROC and average precision (AP, area under precision-recall)."""

    auroc_entropy: jax.Array
    ap_entropy: jax.Array
    auroc_bald: jax.Array
    ap_bald: jax.Array


class SweepResult(NamedTuple):
    """One method's sweep; every field has shape ``[num_eps]`` (NumPy arrays).

    Attributes:
      eps: the attack strengths.
      accuracy, nll, ece: of the MC predictive on the attacked inputs.
      entropy, bald: mean predictive entropy and mean BALD of the attacked inputs, in nats.
      success_rate: fraction of the correctly classified clean inputs misclassified after the
        attack (NaN if none was correct).
      detection: attacked vs clean inputs, all attacked inputs as positives.
      detection_successful: the same with only the successful attacks as positives (NaN where
        no attack succeeded).
    """

    eps: np.ndarray
    accuracy: np.ndarray
    nll: np.ndarray
    ece: np.ndarray
    entropy: np.ndarray
    bald: np.ndarray
    success_rate: np.ndarray
    detection: Detection
    detection_successful: Detection


def attack_success(
    clean_log_probs: jax.Array, adv_log_probs: jax.Array, labels: jax.Array
) -> jax.Array:
    """``[batch]`` booleans: the clean input was classified correctly and the attacked one is
    not, ``argmax p(x) == y != argmax p(x_adv)``, from predictive log-probabilities
    ``[batch, classes]``."""
    if jnp.shape(clean_log_probs) != jnp.shape(adv_log_probs) or jnp.ndim(adv_log_probs) != 2:
        raise ValueError(
            "adv_log_probs: expected the shape [batch, classes] of clean_log_probs "
            f"{jnp.shape(clean_log_probs)}, got {jnp.shape(adv_log_probs)}"
        )
    if jnp.shape(labels) != jnp.shape(adv_log_probs)[:1]:
        raise ValueError(
            f"labels: expected shape {jnp.shape(adv_log_probs)[:1]}, got {jnp.shape(labels)}"
        )
    correct = jnp.argmax(clean_log_probs, axis=-1) == labels
    return correct & (jnp.argmax(adv_log_probs, axis=-1) != labels)


def detection(
    clean_sample_log_probs: jax.Array,
    adv_sample_log_probs: jax.Array,
    *,
    mask: jax.Array | None = None,
) -> Detection:
    """How well predictive entropy and BALD flag attacked inputs among clean ones.

    Scores are per input (higher = more suspicious); the clean inputs are the negatives and the
    attacked inputs the positives, restricted to ``mask`` when given (e.g. the successful
    attacks of :func:`attack_success`). Metrics are :func:`bnn_jax.ood.auroc` and
    :func:`bnn_jax.ood.aupr` (average precision, positives = attacked).

    Args:
      clean_sample_log_probs: ``[T, n_clean, classes]`` posterior-sample log-probabilities.
      adv_sample_log_probs: ``[T, n_adv, classes]`` for the attacked inputs.
      mask: optional ``[n_adv]`` booleans selecting the positives (concrete, not traced). If it
        selects nothing, every metric is NaN.

    Returns:
      :class:`Detection` of scalars.

    Example:
      >>> success = attack_success(mean_log_probs(clean), mean_log_probs(adv), y)
      >>> detection(clean, adv, mask=success).auroc_bald
    """
    scores_in = _scores(clean_sample_log_probs, "clean_sample_log_probs")
    scores_out = _scores(adv_sample_log_probs, "adv_sample_log_probs")
    if mask is None:
        return _detect(scores_in, scores_out)
    mask = np.asarray(mask)
    if mask.shape != scores_out[0].shape or mask.dtype != bool:
        raise ValueError(
            f"mask: expected booleans of shape {scores_out[0].shape}, got {mask.dtype} {mask.shape}"
        )
    return _masked_detection(_detect, scores_in, scores_out, mask)


def _detect(scores_in, scores_out) -> Detection:
    """Detection from ``[entropy, bald]`` score lists of the negatives and positives."""
    (entropy_in, bald_in), (entropy_out, bald_out) = scores_in, scores_out
    return Detection(
        auroc_entropy=ood.auroc(entropy_in, entropy_out),
        ap_entropy=ood.aupr(entropy_in, entropy_out),
        auroc_bald=ood.auroc(bald_in, bald_out),
        ap_bald=ood.aupr(bald_in, bald_out),
    )


def _masked_detection(detect, scores_in, scores_out, mask: np.ndarray) -> Detection:
    """``detect`` with only the positives selected by ``mask``; NaNs if it selects none."""
    if not mask.any():
        return Detection(*(np.float32(np.nan) for _ in Detection._fields))
    return detect(scores_in, [np.asarray(s)[mask] for s in scores_out])


def _scores(sample_log_probs: jax.Array, name: str) -> list[jax.Array]:
    if jnp.ndim(sample_log_probs) != 3:
        raise ValueError(
            f"{name}: expected [num_samples, batch, classes], got {jnp.shape(sample_log_probs)}"
        )
    return [uncertainty.predictive_entropy(sample_log_probs), uncertainty.bald(sample_log_probs)]


def _in_batches(fn: Callable[..., jax.Array], arrays: tuple, batch_size: int, axis: int):
    """``fn(*chunks)`` over equal chunks of ``arrays`` along their first axis (the last chunk
    padded by repeating the final entries, so ``fn`` compiles once), outputs concatenated
    along ``axis``."""
    n = arrays[0].shape[0]
    if batch_size == n:
        return fn(*arrays)
    padded = -n % batch_size
    if padded:
        arrays = [jnp.concatenate([a, jnp.repeat(a[-1:], padded, axis=0)]) for a in arrays]
    outputs = [
        fn(*(a[i : i + batch_size] for a in arrays)) for i in range(0, n + padded, batch_size)
    ]
    return jax.lax.slice_in_dim(jnp.concatenate(outputs, axis=axis), 0, n, axis=axis)


def _check_sweep(methods, x, labels, epsilons, num_bins, batch_size):
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("methods: expected a non-empty mapping of names to attacks.Method")
    for name, method in methods.items():
        if not isinstance(method, Method):
            raise ValueError(
                f"methods: expected attacks.Method values, got {type(method)} at {name!r}"
            )
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    if x.ndim < 1 or x.shape[0] < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected floating inputs [batch, ...], got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError("x: expected finite inputs, got NaN or inf")
    if labels.shape != x.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels: expected integer labels of shape {x.shape[:1]}, got {labels.dtype} "
            f"{labels.shape}"
        )
    epsilons = np.asarray(epsilons, np.float64)
    if epsilons.ndim != 1 or epsilons.size == 0:
        raise ValueError(f"epsilons: expected a non-empty 1-D list, got shape {epsilons.shape}")
    if not np.all(np.isfinite(epsilons)) or np.any(epsilons < 0):
        raise ValueError(f"epsilons: expected finite values >= 0, got {epsilons}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins: expected an integer >= 1, got {num_bins!r}")
    batch_size = checks.chunk_size("batch_size", batch_size)
    return x, labels, epsilons, batch_size


def _check_label_range(labels: jax.Array, num_classes: int) -> None:
    low, high = int(jnp.min(labels)), int(jnp.max(labels))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got values in [{low}, {high}]"
        )


def sweep(
    methods: Mapping[str, Method],
    attack: AttackFn,
    x: jax.Array,
    labels: jax.Array,
    epsilons,
    *,
    num_bins: int = 10,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, SweepResult]:
    """Attack each method at each eps; accuracy, NLL, ECE, entropy, BALD and detection.

    Each method's attack is jitted once with ``eps`` traced, so a sweep over any number of eps
    compiles once per method; the same holds for its ``sample_log_probs_fn``. The attacker
    differentiates ``method.log_prob_fn``; the metrics use ``method.sample_log_probs_fn``
    (ECE with ``num_bins`` equal-width bins; detection as in :func:`detection`, against the
    clean inputs' scores).

    Args:
      methods: name -> :class:`Method`.
      attack: ``attack(log_prob_fn, x, *, eps, labels) -> x_adv`` (norm, steps, keys closed
        over), called with batches of ``x`` and ``labels``: see :data:`AttackFn`.
      x: clean inputs ``[n, ...]``.
      labels: true labels ``[n]`` for the metrics.
      epsilons: attack strengths, e.g. the blog's ``np.linspace(0, 0.2, 11)``.
      num_bins: ECE bins.
      batch_size: attack and evaluate this many inputs at a time (``None``: all at once).
      progress: show a progress bar over methods and eps.

    Returns:
      ``{name: SweepResult}``.

    Example:
      >>> methods = {"map": Method(f_map, lambda x: f_map(x)[None]),
      ...            "dropout": mc_method(logits_fn, keys)}
      >>> results = sweep(methods, functools.partial(fgm, norm="linf"), x, y, [0, 0.1, 0.2])
      >>> results["dropout"].entropy                          # entropy against step size
    """
    x, labels, epsilons, batch_size = _check_sweep(
        methods, x, labels, epsilons, num_bins, batch_size
    )
    batch_size = batch_size or x.shape[0]
    results = {}
    bar = tqdm(total=len(methods) * len(epsilons), desc="sweep", disable=not progress, leave=False)
    for name, method in methods.items():
        run_attack = jax.jit(_attack_with(attack, method.log_prob_fn))
        evaluate = jax.jit(method.sample_log_probs_fn)
        clean = _in_batches(evaluate, (x,), batch_size, axis=1)
        uncertainty.check_samples(clean, name=f"methods[{name!r}].sample_log_probs_fn(x)")
        # the attack itself runs traced (unchecked): are its targets log-probabilities?
        attacked = method.log_prob_fn(x[:_PROBE])
        if jnp.shape(attacked) != (min(_PROBE, x.shape[0]), clean.shape[-1]):
            raise ValueError(
                f"methods[{name!r}].log_prob_fn: expected [batch, {clean.shape[-1]}] "
                f"log-probabilities, got shape {jnp.shape(attacked)}"
            )
        uncertainty.check_log_probs(attacked, name=f"methods[{name!r}].log_prob_fn(x)")
        _check_label_range(labels, clean.shape[-1])
        rows = []
        for eps in epsilons:
            eps_array = jnp.asarray(eps, x.dtype)
            x_adv = _in_batches(partial(run_attack, eps=eps_array), (x, labels), batch_size, axis=0)
            if x_adv.shape != x.shape:
                raise ValueError(f"attack: expected outputs shaped like x, got {x_adv.shape}")
            if not np.all(np.isfinite(np.asarray(x_adv))):
                raise ValueError(
                    f"attack: non-finite attacked inputs for method {name!r} at eps {eps:g} "
                    "(an overflowing step, or NaN/inf log-probabilities or gradients in the "
                    "eps-ball); expected a smaller eps or a data range"
                )
            adv = _in_batches(evaluate, (x_adv,), batch_size, axis=1)
            summary, success, scores_in, scores_out = _summarise(
                clean, adv, labels, num_bins=num_bins
            )
            successful = _masked_detection(_detect_jit, scores_in, scores_out, np.asarray(success))
            rows.append((*summary, successful))
            bar.update()
        results[name] = _stack(epsilons, rows)
    bar.close()
    return results


def _attack_with(attack: AttackFn, log_prob_fn: LogProbFn):
    return lambda x, labels, eps: attack(log_prob_fn, x, eps=eps, labels=labels)


def _summary(clean, adv, labels, *, num_bins):
    """Metrics of one attacked set with fixed shapes (jitted); the success mask; and the
    ``[entropy, bald]`` scores of the clean and the attacked inputs."""
    clean_predictive = uncertainty.mean_log_probs(clean)
    predictive = uncertainty.mean_log_probs(adv)
    success = attack_success(clean_predictive, predictive, labels)
    correct = jnp.argmax(clean_predictive, axis=-1) == labels
    scores_in, scores_out = _scores(clean, "clean"), _scores(adv, "adv")
    summary = (
        calibration.accuracy(predictive, labels),
        calibration.nll(predictive, labels),
        calibration.ece(predictive, labels, num_bins=num_bins),
        jnp.mean(scores_out[0]),
        jnp.mean(scores_out[1]),
        jnp.sum(success) / jnp.sum(correct),  # NaN (0 / 0) if no clean input is correct
        _detect(scores_in, scores_out),
    )
    return summary, success, scores_in, scores_out


_summarise = jax.jit(_summary, static_argnames="num_bins")
_detect_jit = jax.jit(_detect)  # compiles once per number of successful attacks


def _stack(epsilons, rows) -> SweepResult:
    columns = list(zip(*rows, strict=True))
    scalars = [np.asarray(column, np.float64) for column in columns[:6]]
    detections = [
        Detection(*(np.asarray(field, np.float64) for field in zip(*column, strict=True)))
        for column in columns[6:]
    ]
    return SweepResult(epsilons, *scalars, *detections)
