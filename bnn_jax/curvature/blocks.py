"""Layer blocks of the selected parameters: Dense/Conv layers and the "other" parameters.

The layer-wise structures (``kfac``, ``efb``, ``block_diagonal``, and ``diagonal`` for speed)
split the selected parameters into

- one block per captured ``nn.Dense``/``nn.Conv`` layer whose kernel is selected. Its
  parameters form the matrix ``W = [kernel.reshape(d_in, d_out); bias]`` of shape
  ``[rows, cols] = [d_in (+1), d_out]`` (the bias row is present when the bias is selected:
  the homogeneous coordinate ``a = [a, 1]``). Vectors over a block are ``W`` raveled
  row-major, so a Kronecker product ``A ⊗ G`` acts as ``V -> A V G``.
- "other" parameters (norm scales and offsets, embeddings, biases whose kernel is not
  selected, grouped or masked convolutions): one diagonal block each.

Per example ``n`` and factor ``m`` the block's pseudo-gradient is ``sum_t a_nt b_nmt^T``
(``t`` over positions: 1 for a Dense layer on ``[B, d_in]``, output locations for a Conv).
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax.curvature import per_example
from bnn_jax.curvature.capture import Layer, capture, find_layers
from bnn_jax.curvature.fisher import Fisher, batch_factors
from bnn_jax.curvature.layout import Layout, Path
from bnn_jax.curvature.subset import Subset, where
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Block:
    """A Dense/Conv layer of the selected parameters (static)."""

    layer: Layer
    with_bias: bool

    @property
    def rows(self) -> int:
        return self.layer.in_features + int(self.with_bias)

    @property
    def cols(self) -> int:
        return self.layer.out_features


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Structure:
    """The selected parameters' layout, their layer blocks and the other leaves (static)."""

    layout: Layout
    blocks: tuple[Block, ...]
    other_paths: tuple[Path, ...]


def build_structure(
    apply_fn: ApplyFn, params: Params, subset: Subset, x: jax.Array | jax.ShapeDtypeStruct
) -> Structure:
    """Find the Dense/Conv layers of ``apply_fn`` on inputs like ``x`` among the selected
    parameters (a kernel is matched by its exact path and shape)."""
    layout = Layout.of(subset.select(params))
    shapes = dict(zip(layout.paths, layout.shapes, strict=True))
    blocks = []
    for layer in find_layers(apply_fn, params, x):
        if shapes.get(layer.kernel_path) == layer.kernel_shape:
            with_bias = layer.use_bias and layer.bias_path in shapes
            blocks.append(Block(layer, with_bias))
    covered = {b.layer.kernel_path for b in blocks} | {
        b.layer.bias_path for b in blocks if b.with_bias
    }
    others = tuple(p for p in layout.paths if p not in covered)
    return Structure(layout, tuple(blocks), others)


def require_blocks(structure: Structure, name: str) -> None:
    if not structure.blocks:
        raise ValueError(
            f"apply_fn: {name} needs at least one selected nn.Dense/nn.Conv layer; the model "
            "(or the subset) has none"
        )


def to_blocks(structure: Structure, v: Params) -> tuple[list[jax.Array], list[jax.Array]]:
    """Split a selected-parameter pytree into block matrices ``[rows, cols]`` and other leaves."""
    leaves = structure.layout.leaves_by_path(v)
    mats = []
    for block in structure.blocks:
        mat = leaves[block.layer.kernel_path].reshape(block.layer.in_features, block.cols)
        if block.with_bias:
            mat = jnp.concatenate([mat, leaves[block.layer.bias_path][None]], axis=0)
        mats.append(mat)
    return mats, [leaves[p] for p in structure.other_paths]


def from_blocks(
    structure: Structure, mats: Sequence[jax.Array], others: Sequence[jax.Array]
) -> Params:
    """Inverse of ``to_blocks``."""
    leaves = dict(zip(structure.other_paths, others, strict=True))
    for block, mat in zip(structure.blocks, mats, strict=True):
        kernel = mat[: block.layer.in_features]
        leaves[block.layer.kernel_path] = kernel.reshape(block.layer.kernel_shape)
        if block.with_bias:
            leaves[block.layer.bias_path] = mat[-1]
    dtypes = dict(zip(structure.layout.paths, structure.layout.dtypes, strict=True))
    return structure.layout.from_leaves({p: x.astype(dtypes[p]) for p, x in leaves.items()})


def dense_indices(structure: Structure) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Flat (``tree.ravel``) indices of each block's raveled matrix and of each other leaf."""
    index = structure.layout.leaves_by_path(structure.layout.index_tree())
    block_idx = []
    for block in structure.blocks:
        rows = [index[block.layer.kernel_path].reshape(block.layer.in_features, block.cols)]
        if block.with_bias:
            rows.append(index[block.layer.bias_path][None])
        block_idx.append(np.concatenate(rows, axis=0).ravel())
    return block_idx, [index[p].ravel() for p in structure.other_paths]


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
    paths = [b.layer.path for b in structure.blocks]
    cap = capture(apply_fn, params, batch.x, paths=paths)
    _, factors = batch_factors(apply_fn, likelihood, fisher, params, batch, key, cap.outputs)
    missing = [p for p in paths if p not in cap.inputs]
    if missing:
        raise ValueError(f"batch.x: layers {missing} are not called on this batch")
    grads = backward_per_factor(cap.backward, factors) if paths else {}
    inputs, output_grads = [], []
    for block in structure.blocks:
        a = cap.inputs[block.layer.path]
        if block.with_bias:
            a = jnp.concatenate([a, jnp.ones_like(a[..., :1])], axis=-1)
        inputs.append(a)
        output_grads.append(grads[block.layer.path])
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

    return per_example.chunked_sum(chunk, a, b, chunk_size=chunk_size)


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

    sums = per_example.chunked_sum(chunk, x, factors, chunk_size=chunk_size)
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


def check_input_shape(input_shape) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"input_shape: expected the shape of one example, positive integers, got {input_shape}"
        )
    return shape
