"""Eigenvalue-corrected KFAC (EKFAC, George et al. 2018; "EFB" in Lee, Humt et al. 2020).

Two passes over the same data (``num_passes = 2``):

1. KFAC: factors ``A``, ``G`` of every Dense/Conv block (see ``kron``) and the diagonal of
   the other parameters; ``finalize`` computes the eigenbases ``Q_A``, ``Q_G``.
2. Re-fit the eigenvalues in the basis ``Q = Q_A ⊗ Q_G`` from projected per-example
   pseudo-gradients: ``S = sum_nm (Q_A^T (sum_t a_nt b_nmt^T) Q_G)^2`` (elementwise), i.e.
   ``S = diag(Q^T C_block Q)``, the best diagonal in that basis (Frobenius norm). Dense layers
   on ``[B, d_in]`` need no per-example gradients, ``S = ((a Q_A)^2)^T ((b Q_G)^2)``; Conv
   layers form per-example gradients of the projected patches in chunks.

The block curvature is ``Q diag(S) Q^T``. Precision eigenvalues in the basis ``Q`` by the
factory's ``prior`` (``kron``): ``kron.eigen_prior()``: ``scale S + tau``;
``kron.per_factor_prior()``: ``scale S + sqrt(scale tau) (lam_A ⊕ lam_G) + tau``, i.e.
``scale C + sqrt(scale tau) (A ⊕ G) + tau I`` with ``A ⊕ G = A ⊗ I + I ⊗ G``, the cross term
of the post's per-factor damping of KFAC (it equals KFAC's per-factor precision when ``S =
lam_A lam_G^T``). Other parameters: ``scale d + tau``. ``update`` with only one pass leaves
``S = 0``: run both passes. Declares the ``layer_precisions`` capability, like ``kfac``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks
from bnn_jax.curvature import blocks, kron, layerwise
from bnn_jax.curvature.base import Curvature, with_checks
from bnn_jax.curvature.blocks import BiasLayout, Structure
from bnn_jax.curvature.fisher import Fisher
from bnn_jax.curvature.kfac import accumulate, init_state
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn

__all__ = ["EfbState", "efb"]


class EfbState(NamedTuple):
    """KFAC's fields (``factors``, ``others``, ``num_data``, ``structure``) plus ``corrected``
    (``S`` per block, ``[rows, cols]``) and ``passes`` (passes finalized so far)."""

    factors: tuple[kron.KronFactor, ...]
    others: tuple[jax.Array, ...]
    corrected: tuple[jax.Array, ...]
    passes: jax.Array
    num_data: jax.Array
    structure: Structure


def efb(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    subset: Subset | None = None,
    prior: kron.KronPrior = kron.eigen_prior(),
    bias: BiasLayout = blocks.homogeneous_bias(),
    chunk_size: int | None = 32,
) -> Curvature:
    """Eigenvalue-corrected KFAC over the selected parameters (two passes).

    Args: as for ``kfac``; ``chunk_size`` also bounds the per-example projected gradients of
    Conv layers in the second pass.

    Example:
      >>> curv = efb(apply_fn, losses.categorical(), fisher=exact_fisher())
      >>> curv.num_passes
      2
    """
    prior, bias = kron.prior_of(prior), blocks.bias_layout(bias)
    checks.chunk_size("chunk_size", chunk_size)
    subset = everything() if subset is None else subset

    def init(params, x):
        base = init_state(apply_fn, subset, bias, params, x, "efb")
        dtype = base.structure.layout.dtype
        corrected = tuple(jnp.zeros((b.rows, b.cols), dtype) for b in base.structure.blocks)
        return EfbState(
            base.factors,
            base.others,
            corrected,
            jnp.zeros((), jnp.int32),
            base.num_data,
            base.structure,
        )

    def update(state, params, batch, key):
        stats = blocks.batch_statistics(
            apply_fn, likelihood, fisher, state.structure, params, batch, key
        )

        def first_pass(st):
            return accumulate(apply_fn, st, params, batch, stats, chunk_size)

        def second_pass(st):
            corrected = tuple(
                s
                + blocks.block_diagonal_sum(
                    a @ f.a_eigenvectors, b @ f.g_eigenvectors, chunk_size=chunk_size
                ).astype(s.dtype)
                for s, f, a, b in zip(
                    st.corrected, st.factors, stats.inputs, stats.output_grads, strict=True
                )
            )
            return st._replace(corrected=corrected)

        return jax.lax.cond(state.passes == 0, first_pass, second_pass, state)

    def finalize(state):
        def decompose(st):
            return st._replace(factors=tuple(kron.decompose(f, st.num_data) for f in st.factors))

        state = jax.lax.cond(state.passes == 0, decompose, lambda st: st, state)
        return state._replace(passes=state.passes + 1)

    def layer_precisions(state, scale, prior_prec):
        taus, other_taus = layerwise.prior_parts(state.structure, prior_prec)
        d = tuple(
            prior.precision(s, f.a_eigenvalues, f.g_eigenvalues, scale, t)
            for s, f, t in zip(state.corrected, state.factors, taus, strict=True)
        )
        bases = tuple(kron.basis(f) for f in state.factors)
        others = layerwise.other_precisions(state.others, scale, other_taus)
        return layerwise.LayerPrecisions(state.structure, bases, d, others)

    precision_mvp, solve, sample, log_det = layerwise.operations(layer_precisions)

    def to_dense(state):
        mats = []
        for f, s in zip(state.factors, state.corrected, strict=True):
            q = kron.basis(f).dense()
            mats.append((q * s.ravel()) @ q.T)
        return blocks.assemble_dense(state.structure, mats, state.others)

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset, 2, layer_precisions,
        )
    )  # fmt: skip
