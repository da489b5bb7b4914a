"""Kronecker-factored curvature (KFAC; KFC for convolutions), the post's KFAC.

Each selected ``nn.Dense``/``nn.Conv`` layer gets a block ``A ⊗ G`` from its inputs (patches)
and output gradients (see ``kron`` for the factors and their scaling); the bias is the
homogeneous coordinate of ``A``. Other selected parameters (BatchNorm/LayerNorm scales and
offsets, embeddings, ...) get a diagonal block ``d``, so ResNets with BatchNorm work. One
``update`` is one forward pass plus one backward pass per output factor (one for the MC
Fisher with one sample), with the sampled-label cotangents; no per-example gradients except
for the other parameters (chunked).

Precision per layer block, by the factory's ``prior``:

- ``"eigen"`` (exact): ``scale (A ⊗ G) + tau I``, eigenvalues ``scale lam_A lam_G^T + tau``
  in the basis ``Q_A ⊗ Q_G``.
- ``"per_factor"`` (the post's): ``(sqrt(scale) A + sqrt(tau) I) ⊗ (sqrt(scale) G +
  sqrt(tau) I)``, eigenvalues ``(sqrt(scale) lam_A + sqrt(tau))(sqrt(scale) lam_G +
  sqrt(tau))``. It adds ``sqrt(scale tau) (A ⊕ G)`` to the exact form.

Other parameters: ``scale d + tau`` under both priors. ``to_dense`` returns ``C`` (the
blocks ``A ⊗ G`` and ``diag(d)``), without the prior.

Per-layer access (e.g. a linearised predictive through the Kronecker structure): block ``i``
is ``state.structure.blocks[i]`` (``.layer.path``, ``.with_bias``, ``.rows``, ``.cols``) with
eigenpairs ``state.factors[i].a_eigenvalues``, ``.a_eigenvectors``, ``.g_eigenvalues``,
``.g_eigenvectors``; ``blocks.to_blocks``/``blocks.from_blocks`` convert a parameter pytree to
the block matrices ``W = [kernel.reshape(d_in, d_out); bias]`` and back, and
``capture.capture`` gives the layer inputs ``a`` and output gradients ``b`` of new inputs
(the Jacobian of output ``k`` for block ``i`` is ``sum_t [a_t, 1] b_kt^T``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import tree
from bnn_jax.curvature import blocks, kron, per_example
from bnn_jax.curvature.base import Curvature, with_checks
from bnn_jax.curvature.blocks import Structure
from bnn_jax.curvature.fisher import Fisher
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn

__all__ = ["KfacState", "kfac"]


class KfacState(NamedTuple):
    """``factors``: one ``kron.KronFactor`` per layer block (``structure.blocks`` order);
    ``others``: diagonals of the other leaves (``structure.other_paths`` order); ``num_data``:
    examples seen; ``structure``: static description of the blocks."""

    factors: tuple[kron.KronFactor, ...]
    others: tuple[jax.Array, ...]
    num_data: jax.Array
    structure: Structure


def kron_init(apply_fn, subset, input_shape, input_dtype, params, name: str) -> KfacState:
    """Zero KFAC accumulators for the layers found on inputs of ``input_shape``."""
    x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
    structure = blocks.build_structure(apply_fn, params, subset, x)
    blocks.require_blocks(structure, name)
    dtype = structure.layout.dtype
    shapes = dict(zip(structure.layout.paths, structure.layout.shapes, strict=True))
    return KfacState(
        factors=tuple(kron.zeros(b, dtype) for b in structure.blocks),
        others=tuple(jnp.zeros(shapes[p], dtype) for p in structure.other_paths),
        num_data=jnp.zeros((), jnp.int32),
        structure=structure,
    )


def kron_accumulate(apply_fn, state: KfacState, params, batch, stats, chunk_size) -> KfacState:
    """Add a batch's statistics to the factors and the other parameters' diagonals."""
    factors = tuple(
        kron.accumulate(f, a, b)
        for f, a, b in zip(state.factors, stats.inputs, stats.output_grads, strict=True)
    )
    deltas = blocks.other_diagonals(
        apply_fn, state.structure, params, batch.x, stats.factors, chunk_size=chunk_size
    )
    others = tuple(o + d.astype(o.dtype) for o, d in zip(state.others, deltas, strict=True))
    return state._replace(
        factors=factors, others=others, num_data=state.num_data + batch.x.shape[0]
    )


def blockwise_ops(block_precisions, block_mvp):
    """``precision_mvp``, ``solve``, ``sample`` and ``log_det`` of a state with ``factors``
    (eigenbases), ``others`` and ``structure``, given
    ``block_precisions(state, scale, tau) -> [D per block]`` (eigenbasis diagonals) and
    ``block_mvp(state, factor, D, V, scale, tau) -> precision @ V`` for one block."""

    def other_precisions(state, scale, prior_prec):
        return [scale * d + prior_prec for d in state.others]

    def precision_mvp(state, v, scale, prior_prec):
        mats, others = blocks.to_blocks(state.structure, v)
        ds = block_precisions(state, scale, prior_prec)
        out = [
            block_mvp(state, f, d, m, scale, prior_prec)
            for f, d, m in zip(state.factors, ds, mats, strict=True)
        ]
        prec = other_precisions(state, scale, prior_prec)
        return blocks.from_blocks(
            state.structure, out, [p * o for p, o in zip(prec, others, strict=True)]
        )

    def solve(state, v, scale, prior_prec):
        mats, others = blocks.to_blocks(state.structure, v)
        ds = block_precisions(state, scale, prior_prec)
        out = [kron.solve(f, m, d) for f, d, m in zip(state.factors, ds, mats, strict=True)]
        prec = other_precisions(state, scale, prior_prec)
        return blocks.from_blocks(
            state.structure, out, [o / p for p, o in zip(prec, others, strict=True)]
        )

    def sample(state, key, scale, prior_prec):
        ds = block_precisions(state, scale, prior_prec)
        prec = other_precisions(state, scale, prior_prec)
        # one draw for every block (the cost of sampling is dominated by random bits and the
        # two basis rotations; one call needs the fewest threefry hashes)
        shapes = [p.shape for p in [*ds, *prec]]
        z = tree.standard_normals(key, shapes, jnp.result_type(*ds, *prec))
        out = [
            kron.from_eigenbasis(f, zi * jax.lax.rsqrt(d))
            for f, zi, d in zip(state.factors, z[: len(ds)], ds, strict=True)
        ]
        others = [zi * jax.lax.rsqrt(p) for zi, p in zip(z[len(ds) :], prec, strict=True)]
        return blocks.from_blocks(state.structure, out, others)

    def log_det(state, scale, prior_prec):
        ds = block_precisions(state, scale, prior_prec)
        prec = other_precisions(state, scale, prior_prec)
        return sum(jnp.sum(jnp.log(p)) for p in [*ds, *prec])

    return precision_mvp, solve, sample, log_det


def kfac(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    input_shape: tuple[int, ...],
    input_dtype=jnp.float32,
    subset: Subset | None = None,
    prior: str = "eigen",
    chunk_size: int | None = 32,
) -> Curvature:
    """KFAC/KFC curvature over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]`` of an unmodified flax.linen model.
      likelihood: from ``bnn_jax.losses``.
      fisher: a Fisher type (``mc_fisher``, ``exact_fisher``, ``empirical_fisher``).
      input_shape: shape of one example (no batch axis); ``init`` traces the model's shapes
        on it to find the Dense/Conv layers.
      input_dtype: dtype of the inputs for that trace.
      subset: parameters to cover (default: all).
      prior: ``"eigen"`` or ``"per_factor"`` (module docstring).
      chunk_size: examples per chunk of per-example gradients for the other parameters.

    Example:
      >>> curv = kfac(apply_fn, losses.categorical(), fisher=mc_fisher(num_samples=1),
      ...             input_shape=(28, 28, 1))
    """
    kron.check_prior(prior)
    per_example.check_chunk_size(chunk_size)
    input_shape = blocks.check_input_shape(input_shape)
    subset = everything() if subset is None else subset

    def init(params):
        return kron_init(apply_fn, subset, input_shape, input_dtype, params, "kfac")

    def update(state, params, batch, key):
        stats = blocks.batch_statistics(
            apply_fn, likelihood, fisher, state.structure, params, batch, key
        )
        return kron_accumulate(apply_fn, state, params, batch, stats, chunk_size)

    def finalize(state):
        factors = tuple(kron.decompose(f, state.num_data) for f in state.factors)
        return state._replace(factors=factors)

    def block_precisions(state, scale, prior_prec):
        return [kron.kron_eigenvalues(f, scale, prior_prec, prior) for f in state.factors]

    def block_mvp(state, factor, precision, v, scale, prior_prec):
        del precision
        a, g = kron.normalised(factor, state.num_data)
        if prior == "eigen":
            return scale * (a @ v @ g) + prior_prec * v
        rs, rt = jnp.sqrt(scale), jnp.sqrt(prior_prec)
        return (rs * a @ v + rt * v) @ (rs * g) + rt * (rs * a @ v + rt * v)

    precision_mvp, solve, sample, log_det = blockwise_ops(block_precisions, block_mvp)

    def to_dense(state):
        mats = [jnp.kron(*kron.normalised(f, state.num_data)) for f in state.factors]
        return blocks.assemble_dense(state.structure, mats, state.others)

    return with_checks(
        Curvature(init, update, finalize, precision_mvp, solve, sample, log_det, to_dense)
    )
