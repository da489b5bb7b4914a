"""Every built-in curvature structure, a partition and a structure written here from public
names only, through the conformance kit ``bnn_jax.testing.check_curvature`` (float64 dense
references), and the kit itself on broken structures (it must report them)."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import curvature as cv
from bnn_jax import losses, models, testing
from bnn_jax.curvature import blocks, kron, layerwise
from bnn_jax.types import Batch


class TinyCNN(nn.Module):
    """Conv (SAME) -> LayerNorm -> Conv (stride 2, no bias) -> Dense: patches, an "other"
    leaf pair and a layer without bias."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.LayerNorm()(nn.Conv(2, (3, 3), padding="SAME")(x)))
        h = nn.Conv(2, (2, 2), strides=2, use_bias=False)(h)
        return nn.Dense(3)(h.reshape(h.shape[0], -1))


X = np.random.RandomState(0).randn(6, 4, 4, 1)
KEY = jax.random.key(5)
EXACT = cv.exact_fisher()


def _owners():
    """Per scalar of TinyCNN's parameters (``tree.ravel`` order): its module name, and
    whether it is a LayerNorm ("other") leaf."""
    params = TinyCNN().init(KEY, X[:1])["params"]
    layout = cv.Layout.of(params)
    owner = np.concatenate(
        [np.full(n, p[0]) for p, n in zip(layout.paths, layout.sizes, strict=True)]
    )
    return owner, np.char.startswith(owner, "LayerNorm")


def _layer_blocks(g):
    """Exact layer blocks; the LayerNorm leaves diagonal."""
    owner, other = _owners()
    same = (owner[:, None] == owner[None, :]) & ~(other[:, None] | other[None, :])
    return np.where(same, g, 0.0) + np.diag(np.where(other, np.diag(g), 0.0))


def _dense_head_diagonal_rest(g):
    """The partition's reference: the dense GGN with the off-block entries removed."""
    last = _owners()[0] == "Dense_0"
    return np.where(last[:, None] & last[None, :], g, 0.0) + np.diag(
        np.where(last, 0.0, np.diag(g))
    )


def _partition(f, lik):
    params = TinyCNN().init(KEY, X[:1])["params"]
    last = cv.subset.last_layer(f, params, X[:1])
    return cv.partition(
        [
            cv.dense(f, lik, fisher=EXACT, subset=last),
            cv.diagonal(f, lik, fisher=EXACT, subset=cv.subset.complement(last)),
        ]
    )


PER_FACTOR = kron.per_factor_prior()
CASES = {
    "dense": (lambda f, lik: cv.dense(f, lik, fisher=EXACT), lambda g: g),
    "diagonal": (lambda f, lik: cv.diagonal(f, lik, fisher=EXACT), lambda g: np.diag(np.diag(g))),
    "kfac": (lambda f, lik: cv.kfac(f, lik, fisher=EXACT), None),
    "kfac_separate_bias": (
        lambda f, lik: cv.kfac(f, lik, fisher=EXACT, bias=blocks.separate_bias()),
        None,
    ),
    "kfac_per_factor": (lambda f, lik: cv.kfac(f, lik, fisher=EXACT, prior=PER_FACTOR), None),
    "efb": (lambda f, lik: cv.efb(f, lik, fisher=EXACT, chunk_size=4), None),
    "efb_per_factor": (lambda f, lik: cv.efb(f, lik, fisher=EXACT, prior=PER_FACTOR), None),
    "block_diagonal": (
        lambda f, lik: cv.block_diagonal(f, lik, fisher=EXACT, chunk_size=4),
        _layer_blocks,
    ),
    "low_rank": (lambda f, lik: cv.low_rank(f, lik, fisher=EXACT, rank=67, key=KEY), lambda g: g),
    "partition": (_partition, _dense_head_diagonal_rest),
}
LAYERWISE = {"diagonal", "kfac", "kfac_separate_bias", "kfac_per_factor", "efb", "efb_per_factor"}
TAUS = {"Conv_0": 0.3, "Conv_1": 2.0, "Dense_0": 5.0, "LayerNorm_0": 0.7}


def per_layer(path):
    """One value per layer (a LayerNorm's two leaves differ: they are separate blocks)."""
    return TAUS[path[0]] * (3.0 if path == ("LayerNorm_0", "bias") else 1.0)


def per_leaf(path):
    """Different kernel and bias values: only structures with separate bias blocks take it."""
    return TAUS[path[0]] * (3.0 if path[-1] == "bias" else 1.0)


HOMOGENEOUS = {"kfac", "kfac_per_factor", "efb", "efb_per_factor", "block_diagonal"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_built_in_structures_conform(name):
    factory, expected = CASES[name]
    report = testing.check_curvature(
        factory,
        TinyCNN(),
        x=X,
        key=KEY,
        expected=expected,
        isotropic_prior=not name.endswith("per_factor"),
        layer_prior=per_layer if name in HOMOGENEOUS else per_leaf,
    )
    names = {r.name for r in report.results}
    assert any("(layer-wise prior)" in r.message for r in report.results if r.name == "log_det")
    assert ("layer_precisions" in names) == (name in LAYERWISE)
    assert ("expected" in names) == (expected is not None)


class TraceKfacState(NamedTuple):
    factors: tuple
    traces: tuple  # exact trace of each block, sum_nm ||g_nm||^2
    others: tuple
    num_data: jax.Array
    structure: blocks.Structure


def trace_kfac(apply_fn, likelihood, *, fisher, subset=None):
    """KFAC with a per-layer correction, from public names only: block ``l`` is ``c_l A ⊗ G``
    with ``c_l = tr(C_l) / (tr A tr G)``, so each block has the exact trace; declares the
    ``layer_precisions`` capability (the fast predictives then work through it)."""
    subset = cv.subset.everything() if subset is None else subset

    def init(params, x):
        structure = layerwise.find_structure(
            apply_fn, params, subset, x, bias=blocks.homogeneous_bias(), name="trace_kfac"
        )
        dtype = structure.layout.dtype
        return TraceKfacState(
            tuple(kron.zeros(b.rows, b.cols, dtype) for b in structure.blocks),
            tuple(jnp.zeros((), dtype) for _ in structure.blocks),
            layerwise.zero_others(structure),
            jnp.zeros((), jnp.int32),
            structure,
        )

    def update(state, params, batch, key):
        stats = blocks.batch_statistics(
            apply_fn, likelihood, fisher, state.structure, params, batch, key
        )
        pairs = list(zip(stats.inputs, stats.output_grads, strict=True))
        return state._replace(
            factors=tuple(
                kron.accumulate(f, a, b) for f, (a, b) in zip(state.factors, pairs, strict=True)
            ),
            traces=tuple(
                t + jnp.sum(blocks.block_diagonal_sum(a, b, chunk_size=None))
                for t, (a, b) in zip(state.traces, pairs, strict=True)
            ),
            others=layerwise.add_others(
                apply_fn,
                state.structure,
                state.others,
                params,
                batch.x,
                stats.factors,
                chunk_size=None,
            ),
            num_data=state.num_data + batch.x.shape[0],
        )

    def finalize(state):
        return state._replace(
            factors=tuple(kron.decompose(f, state.num_data) for f in state.factors)
        )

    def correction(f, trace):
        return trace / jnp.maximum(jnp.sum(f.a_eigenvalues) * jnp.sum(f.g_eigenvalues), 1e-30)

    def layer_precisions(state, scale, prior_prec):
        taus, other_taus = layerwise.prior_parts(state.structure, prior_prec)
        d = tuple(
            scale * correction(f, t) * jnp.outer(f.a_eigenvalues, f.g_eigenvalues) + tau
            for f, t, tau in zip(state.factors, state.traces, taus, strict=True)
        )
        bases = tuple(kron.basis(f) for f in state.factors)
        others = layerwise.other_precisions(state.others, scale, other_taus)
        return layerwise.LayerPrecisions(state.structure, bases, d, others)

    precision_mvp, solve, sample, log_det = layerwise.operations(layer_precisions)

    def to_dense(state):
        mats = [
            correction(f, t) * jnp.kron(*kron.normalised(f, state.num_data))
            for f, t in zip(state.factors, state.traces, strict=True)
        ]
        return blocks.assemble_dense(state.structure, mats, state.others)

    return cv.with_checks(
        cv.Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset, layer_precisions=layer_precisions,
        )
    )  # fmt: skip


def test_a_structure_written_from_public_names_conforms_and_keeps_exact_traces(x64):
    factory = lambda f, lik: trace_kfac(f, lik, fisher=EXACT)
    report = testing.check_curvature(factory, TinyCNN(), x=X, key=KEY)
    assert {"layer_precisions", "sample", "batches", "jit"} <= {r.name for r in report.results}
    # the correction does what it says: every layer block has the exact GGN block's trace
    model, x, lik = TinyCNN(), jnp.asarray(X), losses.categorical()
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(KEY, x[:1])["params"])
    apply_fn = lambda p, inputs: model.apply({"params": p}, inputs)
    y = jnp.array([0, 1, 2, 2, 1, 0])
    curv = factory(apply_fn, lik)
    state = curv.finalize(curv.update(curv.init(params, x), params, Batch(x, y), KEY))
    dense = np.asarray(curv.to_dense(state))
    ggn = testing.exact_ggn(apply_fn, lik, params, Batch(x, y))
    owner = _owners()[0]
    for module in ("Conv_0", "Conv_1", "Dense_0"):
        idx = np.ix_(owner == module, owner == module)
        np.testing.assert_allclose(np.trace(dense[idx]), np.trace(ggn[idx]), rtol=1e-9)
        assert not np.allclose(dense[idx], ggn[idx], atol=1e-6)  # (it is not the exact block)


def _broken(kind):
    """KFAC with one operation broken."""

    def factory(f, lik):
        curv = cv.kfac(f, lik, fisher=EXACT)
        if kind == "sample":  # draws twice as wide as the precision says
            sample = curv.sample
            return curv._replace(sample=lambda *a: jax.tree.map(lambda z: 2 * z, sample(*a)))
        if kind == "log_det":
            log_det = curv.log_det
            return curv._replace(log_det=lambda *a: log_det(*a) + 1.0)
        return curv._replace(
            layer_precisions=lambda s, scale, tau: curv.layer_precisions(s, 2 * scale, tau)
        )

    return factory


@pytest.mark.parametrize("kind", ["sample", "log_det", "layer_precisions"])
def test_the_kit_reports_what_is_broken_in_words(kind):
    mlp, x = models.MLP((3,), 2), X[:4, 0, :2, 0]  # [4, 2] inputs
    report = testing.check_curvature(
        _broken(kind), mlp, x=x, key=KEY, num_samples=2000, raise_on_failure=False
    )
    failed = {r.name for r in report.results if not r.passed}
    assert failed == {kind}, str(report)
    assert all(line.startswith(f"{kind}: ") for line in report.failures), report.failures
    if kind == "log_det":  # by default a failure raises, listing what failed
        with pytest.raises(AssertionError, match="log_det: log_det"):
            testing.check_curvature(_broken(kind), mlp, x=x, key=KEY, num_samples=2000)
