"""Functional covariance ``J Sigma J^T`` through a curvature's ``layer_precisions`` capability.

A structure that declares ``Curvature.layer_precisions`` (``kfac``, ``efb``, ``diagonal``, or
a user's own: see ``curvature.layerwise``) gives, for each Dense/Conv block ``W [rows, cols]``
(kernel rows and/or the bias row), a precision ``Q diag(D) Q^T`` in the basis ``Q = Q_A ⊗ Q_G``
of a ``kron.KronBasis`` (``Q = I`` for a basis ``None``), with ``D [rows, cols]``, and a
diagonal precision ``d`` for every other leaf. Then ``Sigma_block = Q diag(1 / D) Q^T``. The
Jacobian of output ``c`` for one input is ``J_c = sum_t a_t b_ct^T`` (the block's captured
inputs ``a_t``, ``blocks.block_inputs``, and output gradients ``b_ct`` at positions ``t``; rank
one, ``a ⊗ b_c``, for a Dense layer), so in the eigenbasis, with ``ã = Q_A^T a`` and
``b~_c = Q_G^T b_c``,

    Sigma_f[c, c'] = sum_ij M_c[i, j] M_c'[i, j] / D[i, j],   M_c = sum_t ã_t b~_ct^T,

and for ``T = 1`` simply ``sum_j b~_cj b~_c'j w_j`` with ``w = (ã^2)^T (1 / D)``: per input
``O(rows cols + C^2 cols)``, never a parameter-sized Jacobian. The other parameters
(diagonal blocks: norm scales, ...) add ``sum_p J_cp J_c'p / d_p`` from their (small)
Jacobian rows.
"""

import jax
import jax.numpy as jnp

from bnn_jax import chunking
from bnn_jax.curvature import blocks
from bnn_jax.curvature.capture import capture
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import where

__all__ = ["functional_covariance", "inverse_precisions", "supports"]


def supports(posterior) -> bool:
    """Whether the posterior's curvature declares the ``layer_precisions`` capability."""
    return posterior.curvature.layer_precisions is not None


def inverse_precisions(posterior):
    """``(structure, bases, 1 / D per block, 1 / d per other leaf)`` from the capability;
    a basis is ``(Q_A, Q_G)`` or ``None``."""
    p = posterior.curvature.layer_precisions(posterior.state, posterior.scale, posterior.prior_prec)
    bases = [None if q is None else (q.a, q.g) for q in p.bases]
    return p.structure, bases, [1.0 / d for d in p.blocks], [1.0 / d for d in p.others]


def _block_covariance(a, b, inv_d):
    """``Sigma_f`` contribution ``[B, C, C]`` of one block from ``a [B, T, rows]`` and
    ``b [C, B, T, cols]`` in the eigenbasis."""
    if a.shape[1] == 1:
        w = (a[:, 0] ** 2) @ inv_d  # [B, cols]
        return jnp.einsum("kbj,lbj,bj->bkl", b[:, :, 0], b[:, :, 0], w)
    m = jnp.einsum("btr,kbtc->kbrc", a, b)
    return jnp.einsum("kbrc,lbrc->bkl", m, m * inv_d)


def _chunk_covariance(posterior, x, structure, bases, inv_d, inv_others):
    paths = list(dict.fromkeys(block.layer.path for block in structure.blocks))
    cap = capture(posterior.apply_fn, posterior.mean, x, paths=paths)
    batch, num_outputs = cap.outputs.shape
    eye = jnp.eye(num_outputs, dtype=cap.outputs.dtype)
    unit_cotangents = jnp.broadcast_to(eye, (batch, num_outputs, num_outputs))  # [..., k] = e_k
    grads = blocks.backward_per_factor(cap.backward, unit_cotangents)
    cov = jnp.zeros((batch, num_outputs, num_outputs), cap.outputs.dtype)
    for block, q, d in zip(structure.blocks, bases, inv_d, strict=True):
        a = blocks.block_inputs(block, cap.inputs[block.layer.path])
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
    structure, bases, inv_d, inv_others = inverse_precisions(posterior)

    def run(chunk):
        return _chunk_covariance(posterior, chunk, structure, bases, inv_d, inv_others)

    return chunking.map_batches(run, x, chunk_size)
