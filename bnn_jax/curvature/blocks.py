"""The layer layout: Dense/Conv layer blocks of the selected parameters and the "other" leaves.

The layer-wise structures (``kfac``, ``efb``, ``block_diagonal``, and ``diagonal`` for its
capability) split the selected parameters into

- blocks of captured ``nn.Dense``/``nn.Conv`` layers (``capture.find_layers``). A block's
  parameters form the matrix ``W [rows, cols]``, ``cols = d_out``: the kernel as
  ``kernel.reshape(d_in, d_out)`` and/or the bias as one row. How a layer's bias joins is a
  ``BiasLayout``: ``homogeneous_bias()`` (the default) gives one block ``W = [kernel; bias]``
  (``rows = d_in + 1``, the bias row is the homogeneous coordinate ``a = [a, 1]``, so a
  Kronecker block ``A ⊗ G`` keeps the kernel-bias cross terms); ``separate_bias()`` gives a
  kernel block (``rows = d_in``) and a bias block (``rows = 1``, ``a = 1``), as laplace-torch
  does. Vectors over a block are ``W`` raveled row-major, so a Kronecker product ``A ⊗ G``
  acts as ``V -> A V G``.
- "other" parameters (norm scales and offsets, embeddings, biases whose kernel is not
  selected in the homogeneous layout, grouped or masked convolutions): one diagonal block each.

Per example ``n`` and output factor ``m`` a block's pseudo-gradient is ``sum_t a_nt b_nmt^T``
(``t`` over positions: 1 for a Dense layer on ``[B, d_in]``, output locations for a Conv),
with ``a`` the block's inputs (``block_inputs``) and ``b`` the gradient at the layer's output.

Example (the block matrices of a parameter pytree and back):
  >>> structure = build_structure(apply_fn, params, subset.everything(), x[:1])
  >>> mats, others = to_blocks(structure, params)      # [rows, cols] per block, other leaves
  >>> params_again = from_blocks(structure, mats, others)
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import chunking
from bnn_jax.curvature import per_example
from bnn_jax.curvature.capture import Layer, capture, find_layers
from bnn_jax.curvature.fisher import Fisher, batch_factors
from bnn_jax.curvature.layout import Layout, Path
from bnn_jax.curvature.subset import Subset, where
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params

__all__ = [
    "BatchStatistics",
    "BiasLayout",
    "Block",
    "Structure",
    "assemble_dense",
    "batch_statistics",
    "bias_layout",
    "block_inputs",
    "build_structure",
    "dense_indices",
    "from_blocks",
    "homogeneous_bias",
    "other_diagonals",
    "separate_bias",
    "to_blocks",
]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Block:
    """A Dense/Conv layer's block (static): its ``kernel`` rows and/or its ``bias`` row."""

    layer: Layer
    kernel: bool
    bias: bool

    @property
    def rows(self) -> int:
        return self.layer.in_features * int(self.kernel) + int(self.bias)

    @property
    def cols(self) -> int:
        return self.layer.out_features


class BiasLayout(NamedTuple):
    """How a layer's kernel and bias form blocks.

    Attributes:
      blocks: ``(layer, kernel_selected, bias_selected) -> tuple[Block, ...]``.
      name: for display only.
    """

    blocks: Callable[[Layer, bool, bool], tuple[Block, ...]]
    name: str


def homogeneous_bias() -> BiasLayout:
    """One block ``[kernel; bias]`` per layer (the bias is the homogeneous coordinate of the
    inputs); a selected bias whose kernel is not selected is an "other" leaf."""

    def layer_blocks(layer, kernel, bias):
        return (Block(layer, True, bias),) if kernel else ()

    return BiasLayout(layer_blocks, "homogeneous")


def separate_bias() -> BiasLayout:
    """A kernel block and a bias block per layer, without the kernel-bias cross terms (the
    layout of laplace-torch's KFAC). A Kronecker structure gives the bias block ``1 ⊗ G``
    scaled to ``sum_ntm b b^T`` (for a Dense layer on ``[B, d_in]`` the exact bias block)."""

    def layer_blocks(layer, kernel, bias):
        kernel_block = (Block(layer, True, False),) if kernel else ()
        return kernel_block + ((Block(layer, False, True),) if bias else ())

    return BiasLayout(layer_blocks, "separate")


def bias_layout(bias: BiasLayout | None) -> BiasLayout:
    """``bias`` (default ``homogeneous_bias()``); ``ValueError`` for anything else."""
    if bias is None:
        return homogeneous_bias()
    if not isinstance(bias, BiasLayout):
        raise ValueError(
            f"bias: expected blocks.homogeneous_bias() or blocks.separate_bias(), got {bias!r}"
        )
    return bias


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Structure:
    """The selected parameters' layout, their layer blocks and the other leaves (static)."""

    layout: Layout
    blocks: tuple[Block, ...]
    other_paths: tuple[Path, ...]


def build_structure(
    apply_fn: ApplyFn,
    params: Params,
    subset: Subset,
    x: jax.Array | jax.ShapeDtypeStruct,
    *,
    bias: BiasLayout | None = None,
) -> Structure:
    """Find the Dense/Conv layers of ``apply_fn`` on inputs like ``x`` among the selected
    parameters (a kernel is matched by its path and shape) and form their blocks with the
    ``bias`` layout (default ``homogeneous_bias()``)."""
    bias = bias_layout(bias)
    layout = Layout.of(subset.select(params))
    shapes = dict(zip(layout.paths, layout.shapes, strict=True))
    found = []
    for layer in find_layers(apply_fn, params, x):
        kernel_shape = shapes.get(layer.kernel_path)
        has_kernel = kernel_shape is not None and (
            math.prod(kernel_shape[:-1]),
            kernel_shape[-1],
        ) == (layer.in_features, layer.out_features)
        has_bias = shapes.get(layer.bias_path) == (layer.out_features,)
        found.extend(bias.blocks(layer, has_kernel, has_bias))
    covered = {b.layer.kernel_path for b in found if b.kernel}
    covered |= {b.layer.bias_path for b in found if b.bias}
    others = tuple(p for p in layout.paths if p not in covered)
    return Structure(layout, tuple(found), others)


def require_blocks(structure: Structure, name: str) -> None:
    """``ValueError`` when a layer-wise structure ``name`` finds no Dense/Conv block."""
    if not structure.blocks:
        raise ValueError(
            f"apply_fn: {name} needs at least one selected nn.Dense/nn.Conv layer; the model "
            "(or the subset) has none"
        )


def _block_matrix(block: Block, leaves: dict, concatenate) -> jax.Array:
    rows = []
    if block.kernel:
        rows.append(leaves[block.layer.kernel_path].reshape(block.layer.in_features, -1))
    if block.bias:
        rows.append(leaves[block.layer.bias_path][None])
    return rows[0] if len(rows) == 1 else concatenate(rows, axis=0)


def to_blocks(structure: Structure, v: Params) -> tuple[list[jax.Array], list[jax.Array]]:
    """Split a selected-parameter pytree into block matrices ``[rows, cols]`` and other leaves."""
    leaves = structure.layout.leaves_by_path(v)
    mats = [_block_matrix(b, leaves, jnp.concatenate) for b in structure.blocks]
    return mats, [leaves[p] for p in structure.other_paths]


def from_blocks(
    structure: Structure, mats: Sequence[jax.Array], others: Sequence[jax.Array]
) -> Params:
    """Inverse of ``to_blocks``."""
    layout = structure.layout
    shapes = dict(zip(layout.paths, layout.shapes, strict=True))
    leaves = dict(zip(structure.other_paths, others, strict=True))
    for block, mat in zip(structure.blocks, mats, strict=True):
        if block.kernel:
            kernel = mat[: block.layer.in_features]
            leaves[block.layer.kernel_path] = kernel.reshape(shapes[block.layer.kernel_path])
        if block.bias:
            leaves[block.layer.bias_path] = mat[-1]
    dtypes = dict(zip(layout.paths, layout.dtypes, strict=True))
    return layout.from_leaves({p: x.astype(dtypes[p]) for p, x in leaves.items()})


def dense_indices(structure: Structure) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Flat (``tree.ravel``) indices of each block's raveled matrix and of each other leaf."""
    index = structure.layout.leaves_by_path(structure.layout.index_tree())
    mats = [_block_matrix(b, index, np.concatenate).ravel() for b in structure.blocks]
    return mats, [index[p].ravel() for p in structure.other_paths]


def block_inputs(block: Block, a: jax.Array) -> jax.Array:
    """The block's inputs ``[..., rows]`` from the layer's captured inputs ``a [..., d_in]``:
    ``[a, 1]`` (kernel and bias), ``a`` (kernel) or ``1`` (bias)."""
    ones = jnp.ones_like(a[..., :1])
    if block.kernel and block.bias:
        return jnp.concatenate([a, ones], axis=-1)
    return a if block.kernel else ones


class BatchStatistics(NamedTuple):
    """Per block: inputs ``a [B, T, rows]`` (with the homogeneous coordinate) and output
    gradients ``b [M, B, T, cols]``; the factors ``[B, K, M]`` for the other parameters."""

    inputs: list[jax.Array]
    output_grads: list[jax.Array]
    factors: jax.Array


def batch_statistics(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    fisher: Fisher,
    structure: Structure,
    params: Params,
    batch: Batch,
    key: Key,
) -> BatchStatistics:
    """One forward pass (capturing the blocks' inputs) and one backward pass per factor."""
    paths = list(dict.fromkeys(b.layer.path for b in structure.blocks))
    cap = capture(apply_fn, params, batch.x, paths=paths)
    _, factors = batch_factors(apply_fn, likelihood, fisher, params, batch, key, cap.outputs)
    missing = [p for p in paths if p not in cap.inputs]
    if missing:
        raise ValueError(f"batch.x: layers {missing} are not called on this batch")
    grads = backward_per_factor(cap.backward, factors) if paths else {}
    inputs = [block_inputs(b, cap.inputs[b.layer.path]) for b in structure.blocks]
    output_grads = [grads[b.layer.path] for b in structure.blocks]
    return BatchStatistics(inputs, output_grads, factors)


# Up to this many factor columns get one backward pass each, unrolled in the trace; more are
# vmapped, which bounds the compiled program's size (e.g. the exact Fisher of 1000 classes).
UNROLLED_BACKWARD_PASSES = 16


def backward_per_factor(backward, factors: jax.Array) -> dict:
    """``backward(factors[..., m])`` for every column ``m``, stacked on a leading axis.

    Unrolled rather than vmapped for up to ``UNROLLED_BACKWARD_PASSES`` columns: vmapping a
    backward pass over cotangents batches max-pool gradients (``select_and_scatter_add``),
    which XLA:CPU runs 7.5x slower than one pass per cotangent (LeNet-5, 500 images, 10
    columns: 0.52 s vmapped, 0.25 s unrolled; MLP 784-500-300-10: 16 ms against 13 ms).
    """
    num = factors.shape[-1]
    if num > UNROLLED_BACKWARD_PASSES:
        return jax.vmap(backward, in_axes=-1)(factors)
    grads = [backward(factors[..., m]) for m in range(num)]
    return jax.tree.map(lambda *g: jnp.stack(g), *grads)


def per_example_grads(a: jax.Array, b: jax.Array) -> jax.Array:
    """Block pseudo-gradients ``sum_t a_nt b_nmt^T``: ``[B, M, rows, cols]``."""
    return jnp.einsum("btr,mbtc->bmrc", a, b)


def block_diagonal_sum(a: jax.Array, b: jax.Array, *, chunk_size: int | None) -> jax.Array:
    """``sum_nm (sum_t a_nt b_nmt^T)^2`` elementwise, ``[rows, cols]``. With one position this
    is ``(a^2)^T (b^2)`` without per-example gradients; otherwise chunks of examples."""
    if a.shape[1] == 1:
        return jnp.einsum("br,mbc->rc", a[:, 0] ** 2, b[:, :, 0] ** 2)
    b = jnp.moveaxis(b, 0, -1)  # [B, T, cols, M] so that chunks split examples

    def chunk(a_c, b_c):
        return jnp.sum(per_example_grads(a_c, jnp.moveaxis(b_c, -1, 0)) ** 2, axis=(0, 1))

    return chunking.sum_batches(chunk, a, b, chunk_size=chunk_size)


def other_diagonals(
    apply_fn: ApplyFn,
    structure: Structure,
    params: Params,
    x: jax.Array,
    factors: jax.Array,
    *,
    chunk_size: int | None,
) -> list[jax.Array]:
    """``sum_nm g_nm^2`` for each other leaf, from chunked per-example gradients."""
    if not structure.other_paths:
        return []
    wanted = set(structure.other_paths)
    others = where(lambda path: path in wanted, description="the other parameters")

    def chunk(x_c, s_c):
        grads = per_example.output_vjps(apply_fn, params, others, x_c, s_c)
        return [jnp.sum(g**2, axis=(0, 1)) for g in jax.tree.leaves(grads)]

    sums = chunking.sum_batches(chunk, x, factors, chunk_size=chunk_size)
    by_path = dict(zip(Layout.of(others.select(params)).paths, sums, strict=True))
    return [by_path[p] for p in structure.other_paths]


def assemble_dense(
    structure: Structure, block_matrices: Sequence[jax.Array], other_diagonals: Sequence[jax.Array]
) -> jax.Array:
    """A ``[P, P]`` matrix (``tree.ravel`` order) from dense blocks ``[rows*cols, rows*cols]``
    (raveled block order) and the other leaves' diagonals."""
    block_idx, other_idx = dense_indices(structure)
    size = structure.layout.size
    dtype = structure.layout.dtype
    out = jnp.zeros((size, size), dtype)
    for idx, mat in zip(block_idx, block_matrices, strict=True):
        out = out.at[np.ix_(idx, idx)].set(mat.astype(dtype))
    for idx, diag in zip(other_idx, other_diagonals, strict=True):
        out = out.at[idx, idx].set(diag.ravel().astype(dtype))
    return out
