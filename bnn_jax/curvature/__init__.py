"""Curvature approximations of the GGN/Fisher for Laplace approximations.

Each structure is a factory ``factory(apply_fn, likelihood, *, fisher, subset=None, ...)``
returning a ``Curvature`` NamedTuple of pure functions that carries what it was built for
(``apply_fn``, ``likelihood``, ``subset``; see ``base``):

- ``dense``: the full matrix (tiny networks, last layers, tests);
- ``diagonal``: its diagonal (the post's DIAG);
- ``kfac``: Kronecker factors per Dense/Conv layer (KFAC/KFC), diagonal for other parameters;
- ``efb``: eigenvalue-corrected KFAC (two passes);
- ``block_diagonal``: a dense block per Dense/Conv layer;
- ``low_rank``: top-k eigenpairs plus an exact diagonal;
- ``partition``: any of these over disjoint parameter subsets, block-diagonally combined.

Fisher types are built by ``mc_fisher``, ``exact_fisher`` and ``empirical_fisher``;
parameter subsets by the ``subset`` module (``subset.last_layer``, ``subset.where``,
``subset.modules``, ``subset.complement``); Kronecker priors by ``kron.eigen_prior`` and
``kron.per_factor_prior``; bias layouts by ``blocks.homogeneous_bias`` and
``blocks.separate_bias``.

Building blocks for new structures (each module documents its formulas): ``layout`` (paths,
shapes, ravel order), ``capture`` (Dense/Conv inputs and output gradients of any flax.linen
or flax.nnx model; ``intercept_layers`` is the hook underneath), ``blocks`` (the layer blocks
of the selected parameters and their batch statistics),
``kron`` (Kronecker factors, eigenbases, priors), ``layerwise`` (the skeleton of the
layer-wise structures and the ``layer_precisions`` capability the fast predictives use),
``fisher`` and ``per_example``. (``curvature.capture`` is the capture function; its module is
``bnn_jax.curvature.capture``.) ``bnn_jax.testing.check_curvature`` verifies a new structure
against dense float64 references.

Example:
  >>> from bnn_jax import curvature, losses
  >>> curv = curvature.kfac(apply_fn, losses.categorical(), fisher=curvature.mc_fisher())
  >>> state = curv.init(params, x)                     # input shape and dtype from a batch
  >>> for step, batch in enumerate(batches):
  ...     state = curv.update(state, params, batch, jax.random.fold_in(key, step))
  >>> state = curv.finalize(state)
  >>> z = curv.sample(state, key, 1.0, prior_prec)     # N(0, (C + tau I)^-1)
"""

from bnn_jax.curvature import blocks, kron, layerwise, layout, per_example, subset
from bnn_jax.curvature.base import (
    Curvature,
    check_finite,
    check_hyperparameters,
    example_inputs,
    with_checks,
)
from bnn_jax.curvature.block_diagonal import BlockDiagonalState, block_diagonal
from bnn_jax.curvature.blocks import BiasLayout, Block, Structure
from bnn_jax.curvature.capture import Capture, Layer, capture, find_layers, intercept_layers
from bnn_jax.curvature.dense import DenseState, dense
from bnn_jax.curvature.diagonal import DiagonalState, diagonal
from bnn_jax.curvature.efb import EfbState, efb
from bnn_jax.curvature.fisher import Fisher, empirical_fisher, exact_fisher, mc_fisher
from bnn_jax.curvature.kfac import KfacState, kfac
from bnn_jax.curvature.kron import KronBasis, KronFactor, KronPrior
from bnn_jax.curvature.layerwise import LayerPrecisions
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.low_rank import LowRankState, low_rank
from bnn_jax.curvature.partition import PartitionState, partition

__all__ = [
    "BiasLayout",
    "Block",
    "BlockDiagonalState",
    "Capture",
    "Curvature",
    "DenseState",
    "DiagonalState",
    "EfbState",
    "Fisher",
    "KfacState",
    "KronBasis",
    "KronFactor",
    "KronPrior",
    "Layer",
    "LayerPrecisions",
    "Layout",
    "LowRankState",
    "PartitionState",
    "Structure",
    "block_diagonal",
    "blocks",
    "capture",
    "check_finite",
    "check_hyperparameters",
    "dense",
    "diagonal",
    "efb",
    "empirical_fisher",
    "exact_fisher",
    "example_inputs",
    "find_layers",
    "intercept_layers",
    "kfac",
    "kron",
    "layerwise",
    "layout",
    "low_rank",
    "mc_fisher",
    "partition",
    "per_example",
    "subset",
    "with_checks",
]
