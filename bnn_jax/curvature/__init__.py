"""Curvature approximations of the GGN/Fisher for Laplace approximations.

Each structure is a factory ``factory(apply_fn, likelihood, *, fisher, subset=None, ...)``
returning a ``Curvature`` NamedTuple of pure functions (see ``base``):

- ``dense``: the full matrix (tiny networks, last layers, tests);
- ``diagonal``: its diagonal (the post's DIAG);
- ``kfac``: Kronecker factors per Dense/Conv layer (KFAC/KFC), diagonal for other parameters;
- ``efb``: eigenvalue-corrected KFAC (two passes);
- ``block_diagonal``: a dense block per Dense/Conv layer;
- ``low_rank``: top-k eigenpairs plus an exact diagonal.

Fisher types are built by ``mc_fisher``, ``exact_fisher`` and ``empirical_fisher``;
parameter subsets by the ``subset`` module (``subset.last_layer``, ``subset.where``,
``subset.modules``). ``capture`` records Dense/Conv inputs and output gradients of any
flax.linen or flax.nnx model (used by the Kronecker structures and the linearised predictive);
``intercept_layers`` is the hook underneath.

Example:
  >>> from bnn_jax import curvature, losses
  >>> curv = curvature.kfac(apply_fn, losses.categorical(),
  ...                       fisher=curvature.mc_fisher(num_samples=1), input_shape=(784,))
  >>> state = curv.init(params)
  >>> for step, batch in enumerate(batches):
  ...     state = curv.update(state, params, batch, jax.random.fold_in(key, step))
  >>> state = curv.finalize(state)
  >>> z = curv.sample(state, key, 1.0, prior_prec)     # N(0, (C + tau I)^-1)
"""

from bnn_jax.curvature import subset
from bnn_jax.curvature.base import Curvature, check_finite, check_hyperparameters
from bnn_jax.curvature.block_diagonal import BlockDiagonalState, block_diagonal
from bnn_jax.curvature.capture import Capture, Layer, capture, find_layers, intercept_layers
from bnn_jax.curvature.dense import DenseState, dense
from bnn_jax.curvature.diagonal import DiagonalState, diagonal
from bnn_jax.curvature.efb import EfbState, efb
from bnn_jax.curvature.fisher import Fisher, empirical_fisher, exact_fisher, mc_fisher
from bnn_jax.curvature.kfac import KfacState, kfac
from bnn_jax.curvature.kron import KronFactor
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.low_rank import LowRankState, low_rank

__all__ = [
    "BlockDiagonalState",
    "Capture",
    "Curvature",
    "DenseState",
    "DiagonalState",
    "EfbState",
    "Fisher",
    "KfacState",
    "KronFactor",
    "Layer",
    "Layout",
    "LowRankState",
    "block_diagonal",
    "capture",
    "check_finite",
    "check_hyperparameters",
    "dense",
    "diagonal",
    "efb",
    "empirical_fisher",
    "exact_fisher",
    "find_layers",
    "intercept_layers",
    "kfac",
    "low_rank",
    "mc_fisher",
    "subset",
]
