"""Adversarial attacks against (Bayesian) predictives, and what uncertainty says about them.

- :mod:`~bnn_jax.attacks.gradient`: :func:`fgm` (L-infinity = FGSM, L2, L1), :func:`bim`,
  :func:`pgd` and :func:`input_gradient` for any ``log_prob_fn(x) -> [batch, classes]``.
- :mod:`~bnn_jax.attacks.predictives`: the MC-averaged predictive over fixed posterior samples
  (EOT) and single posterior samples as attack targets; :class:`Method` for sweeps.
- :mod:`~bnn_jax.attacks.evaluation`: :func:`sweep` over eps (accuracy, NLL, ECE, entropy,
  BALD per method) and :func:`detection` of attacked inputs by entropy and BALD.
- :mod:`~bnn_jax.attacks.norms`: steepest-ascent directions, eps-ball projections and random
  starts per norm.

Example:
  >>> logits_fn = dropout.make_mask_logits_fn(model, variables)       # (key, x) -> logits
  >>> f = attacks.mc_log_prob_fn(logits_fn, jax.random.split(key, 50))
  >>> x_adv = attacks.bim(f, x, eps=0.3, eps_iter=0.1, steps=10, norm="l2")
"""

from bnn_jax.attacks.evaluation import (
    AttackFn,
    Detection,
    SweepResult,
    attack_success,
    detection,
    sweep,
)
from bnn_jax.attacks.gradient import (
    LogProbFn,
    LossFn,
    bim,
    cross_entropy,
    fgm,
    input_gradient,
    pgd,
)
from bnn_jax.attacks.norms import NORMS, NormOps, norm_ops
from bnn_jax.attacks.predictives import (
    LogitsFn,
    Method,
    mc_log_prob_fn,
    mc_method,
    single_sample_log_prob_fn,
)

__all__ = [
    "NORMS",
    "AttackFn",
    "Detection",
    "LogProbFn",
    "LogitsFn",
    "LossFn",
    "Method",
    "NormOps",
    "SweepResult",
    "attack_success",
    "bim",
    "cross_entropy",
    "detection",
    "fgm",
    "input_gradient",
    "mc_log_prob_fn",
    "mc_method",
    "norm_ops",
    "pgd",
    "single_sample_log_prob_fn",
    "sweep",
]
