"""Curvature approximations of the GGN/Fisher for Laplace approximations.

Each structure is a factory ``factory(apply_fn, likelihood, *, fisher, subset=None, ...)``
returning a ``Curvature`` NamedTuple of pure functions (see ``base``). Fisher types are
built by ``mc_fisher``, ``exact_fisher`` and ``empirical_fisher``; parameter subsets by the
``subset`` module (``subset.last_layer``, ``subset.where``, ``subset.modules``).
"""

from bnn_jax.curvature import subset
from bnn_jax.curvature.base import Curvature, check_finite, check_hyperparameters
from bnn_jax.curvature.capture import Capture, Layer, capture, find_layers
from bnn_jax.curvature.dense import DenseState, dense
from bnn_jax.curvature.fisher import Fisher, empirical_fisher, exact_fisher, mc_fisher
from bnn_jax.curvature.layout import Layout

__all__ = [
    "Capture",
    "Curvature",
    "DenseState",
    "Fisher",
    "Layer",
    "Layout",
    "capture",
    "check_finite",
    "check_hyperparameters",
    "dense",
    "empirical_fisher",
    "exact_fisher",
    "find_layers",
    "mc_fisher",
    "subset",
]
