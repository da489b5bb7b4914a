"""Functional covariance ``J Sigma J^T`` through layer-structured posteriors (KFAC, EFB, diagonal).

For these structures the posterior precision of a Dense/Conv layer block ``W [rows, cols]``
(kernel rows plus the bias row) is diagonal in the basis ``Q_A ⊗ Q_G`` of the Kronecker
factors' eigenvectors (``Q = I`` for the diagonal structure): ``Sigma_block = Q diag(1 / D) Q^T``
with ``D [rows, cols]``. The Jacobian of output ``c`` for one input is
``J_c = sum_t a_t b_ct^T`` (captured layer inputs ``a_t`` with the homogeneous coordinate and
output gradients ``b_ct`` at positions ``t``; rank one, ``a ⊗ b_c``, for a Dense layer), so in
the eigenbasis, with ``ã = Q_A^T a`` and ``b~_c = Q_G^T b_c``,

    Sigma_f[c, c'] = sum_ij M_c[i, j] M_c'[i, j] / D[i, j],   M_c = sum_t ã_t b~_ct^T,

and for ``T = 1`` simply ``sum_j b~_cj b~_c'j w_j`` with ``w = (ã^2)^T (1 / D)``: per input
``O(rows cols + C^2 cols)``, never a parameter-sized Jacobian. The other parameters
(diagonal blocks: norm scales, ...) add ``sum_p J_cp J_c'p / d_p`` from their (small)
Jacobian rows.

``1 / D`` is read off the structure itself with one ``solve`` of the block vector
``Q_A 1 1^T Q_G^T`` (``Q_A^T solve(.) Q_G = 1 / D``), so both prior forms and EFB's corrected
eigenvalues are handled without knowing their formulas; the two basis rotations add an
absolute rounding error of about ``eps max(1 / D) <= eps / prior_prec`` per entry (exact for
the diagonal structure).
"""

import jax
import jax.numpy as jnp

from bnn_jax.curvature import blocks
from bnn_jax.curvature.capture import capture
from bnn_jax.curvature.diagonal import DiagonalState
from bnn_jax.curvature.efb import EfbState
from bnn_jax.curvature.kfac import KfacState
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import where

__all__ = [
    "functional_covariance",
    "inverse_precisions",
    "layer_bases",
    "layer_structure",
    "supports",
]

_STRUCTURED = (KfacState, EfbState, DiagonalState)


def supports(posterior) -> bool:
    """Whether :func:`functional_covariance` applies (KFAC, EFB or diagonal state)."""
    return isinstance(posterior.state, _STRUCTURED)


def layer_structure(posterior, x) -> blocks.Structure:
    """The posterior's Dense/Conv blocks and other leaves (traced on inputs like ``x``)."""
    if isinstance(posterior.state, DiagonalState):
        shape = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
        return blocks.build_structure(posterior.apply_fn, posterior.mean, posterior.subset, shape)
    return posterior.state.structure


def layer_bases(posterior, structure):
    """``(Q_A, Q_G)`` per block, or ``None`` for the identity (diagonal structure)."""
    if isinstance(posterior.state, DiagonalState):
        return [None] * len(structure.blocks)
    return [(f.a_eigenvectors, f.g_eigenvectors) for f in posterior.state.factors]


def inverse_precisions(posterior, structure, bases):
    """``1 / D`` per block (in its eigenbasis) and ``1 / d`` per other leaf, from one solve."""
    dtype = structure.layout.dtype
    ones = [jnp.ones((b.rows, b.cols), dtype) for b in structure.blocks]
    probe = [w if q is None else q[0] @ w @ q[1].T for w, q in zip(ones, bases, strict=True)]
    shapes = dict(zip(structure.layout.paths, structure.layout.shapes, strict=True))
    other_ones = [jnp.ones(shapes[p], dtype) for p in structure.other_paths]
    v = blocks.from_blocks(structure, probe, other_ones)
    solved = posterior.curvature.solve(posterior.state, v, posterior.scale, posterior.prior_prec)
    mats, others = blocks.to_blocks(structure, solved)
    inv_d = [m if q is None else q[0].T @ m @ q[1] for m, q in zip(mats, bases, strict=True)]
    return inv_d, others


def _block_covariance(a, b, inv_d):
    """``Sigma_f`` contribution ``[B, C, C]`` of one block from ``a [B, T, rows]`` and
    ``b [C, B, T, cols]`` in the eigenbasis."""
    if a.shape[1] == 1:
        w = (a[:, 0] ** 2) @ inv_d  # [B, cols]
        return jnp.einsum("kbj,lbj,bj->bkl", b[:, :, 0], b[:, :, 0], w)
    m = jnp.einsum("btr,kbtc->kbrc", a, b)
    return jnp.einsum("kbrc,lbrc->bkl", m, m * inv_d)


def _chunk_covariance(posterior, x, structure, bases, inv_d, inv_others):
    paths = [block.layer.path for block in structure.blocks]
    cap = capture(posterior.apply_fn, posterior.mean, x, paths=paths)
    batch, num_outputs = cap.outputs.shape
    eye = jnp.eye(num_outputs, dtype=cap.outputs.dtype)
    unit_cotangents = jnp.broadcast_to(eye, (batch, num_outputs, num_outputs))  # [..., k] = e_k
    grads = blocks.backward_per_factor(cap.backward, unit_cotangents)
    cov = jnp.zeros((batch, num_outputs, num_outputs), cap.outputs.dtype)
    for block, q, d in zip(structure.blocks, bases, inv_d, strict=True):
        a = cap.inputs[block.layer.path]
        if block.with_bias:
            a = jnp.concatenate([a, jnp.ones_like(a[..., :1])], axis=-1)
        b = grads[block.layer.path]
        if q is not None:
            a, b = a @ q[0], b @ q[1]
        cov = cov + _block_covariance(a, b, d.astype(a.dtype))
    if structure.other_paths:
        wanted = set(structure.other_paths)
        others = where(lambda path: path in wanted, description="the other parameters")
        theta = others.select(posterior.mean)

        def outputs(selected, xi):
            return posterior.apply_fn(others.merge(posterior.mean, selected), xi[None])[0]

        rows = jax.vmap(jax.jacrev(outputs), (None, 0))(theta, x)
        by_path = dict(zip(Layout.of(theta).paths, jax.tree.leaves(rows), strict=True))
        for path, d in zip(structure.other_paths, inv_others, strict=True):
            j = by_path[path].reshape(batch, num_outputs, -1)
            cov = cov + jnp.einsum("bkp,blp,p->bkl", j, j, d.ravel().astype(j.dtype))
    return cov


def functional_covariance(posterior, x: jax.Array, *, chunk_size=None) -> jax.Array:
    """``J Sigma J^T`` ``[batch, C, C]`` through the layer structure (module docstring),
    ``chunk_size`` inputs at a time (``None``: all at once)."""
    structure = layer_structure(posterior, x)
    bases = layer_bases(posterior, structure)
    inv_d, inv_others = inverse_precisions(posterior, structure, bases)

    def run(chunk):
        return _chunk_covariance(posterior, chunk, structure, bases, inv_d, inv_others)

    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return run(x)
    num_chunks = -(-n // chunk_size)
    padded = jnp.concatenate([x, jnp.zeros((num_chunks * chunk_size - n, *x.shape[1:]), x.dtype)])
    covs = jax.lax.map(run, padded.reshape(num_chunks, chunk_size, *x.shape[1:]))
    return covs.reshape(num_chunks * chunk_size, *covs.shape[2:])[:n]
