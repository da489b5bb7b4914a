"""Every curvature structure against brute-force dense references on tiny networks (float64):
what each structure approximates (the interface contract of every structure is checked by
``bnn_jax.testing.check_curvature`` in ``test_curvature_conformance.py``).

The reference GGN/Fisher is built from ``jax.jacobian`` of the raveled parameters:
exact GGN ``sum_n J_n^T H_n J_n`` with the likelihood's Hessian; MC Fisher from per-example
``jax.grad`` of the NLL at labels drawn with the same key; empirical Fisher at the true labels.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from bnn_jax import curvature as cv
from bnn_jax import losses, models
from bnn_jax.curvature import blocks, kron
from bnn_jax.types import Batch

KEY = jax.random.key(7)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(2, (3, 3), padding="SAME")(x))
        h = nn.Conv(2, (2, 2), strides=2, use_bias=False)(h)
        return nn.Dense(3)(h.reshape(h.shape[0], -1))


class TinyNorm(nn.Module):
    """Conv -> BatchNorm (running averages) -> LayerNorm -> Dense: norm params are "other"."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.BatchNorm(use_running_average=True)(nn.Conv(2, (3, 3))(x)))
        return nn.Dense(3)(nn.LayerNorm()(h.reshape(h.shape[0], -1)))


@functools.cache
def problem(name):
    """(apply_fn, params, batch, likelihood, input_shape) of a tiny float64 problem."""
    with jax.enable_x64(True):
        model, shape, lik = {
            "mlp": (models.MLP((4,), 3, activation=jnp.tanh), (3,), losses.categorical()),
            "cnn": (TinyCNN(), (4, 4, 1), losses.categorical()),
            "regression": (
                models.MLP((4,), 2, activation=jnp.tanh),
                (3,),
                losses.gaussian(sigma=0.5),
            ),
            "norm": (TinyNorm(), (4, 4, 1), losses.categorical()),
        }[name]
        x = jax.random.normal(jax.random.key(1), (6, *shape), jnp.float64)
        variables = jax.jit(model.init)(KEY, x)
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        if "batch_stats" in variables:  # non-trivial running statistics
            variables["batch_stats"] = jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])
        out = model.apply(variables, x)
        if name == "regression":
            y = out + jax.random.normal(jax.random.key(2), out.shape, jnp.float64)
        else:
            y = jnp.array([0, 1, 2, 2, 1, 0])
        apply_fn = lambda p, inputs: model.apply({**variables, "params": p}, inputs)
        return apply_fn, variables["params"], Batch(x, y), lik, shape


FISHERS = {
    "exact": cv.exact_fisher,
    "mc2": lambda: cv.mc_fisher(num_samples=2),
    "empirical": cv.empirical_fisher,
}


def module_mask(name):
    """``mask[i, j]``: both parameters belong to the same Dense/Conv module (a layer block),
    or ``i == j``; from the parameter paths alone."""
    params = problem(name)[1]
    paths = cv.Layout.of(params).paths
    sizes = cv.Layout.of(params).sizes
    modules = sorted({p[:-1] for p in paths})
    is_layer = [p[-2][:4] in ("Dens", "Conv") for p in paths]
    owner = np.concatenate(
        [
            np.full(n, modules.index(p[:-1]) if layer else -1)
            for p, n, layer in zip(paths, sizes, is_layer, strict=True)
        ]
    )
    owner = np.where(owner < 0, -1 - np.arange(owner.size), owner)  # "other": one per scalar
    return (owner[:, None] == owner[None, :]) | np.eye(owner.size, dtype=bool)


def factory(structure, name, fisher):
    apply_fn, params, _, lik, _ = problem(name)
    size = ravel_pytree(params)[0].size
    per_factor = kron.per_factor_prior()
    return {
        "dense": lambda: cv.dense(apply_fn, lik, fisher=fisher, chunk_size=4),
        "diagonal": lambda: cv.diagonal(apply_fn, lik, fisher=fisher, chunk_size=4),
        "kfac": lambda: cv.kfac(apply_fn, lik, fisher=fisher),
        "kfac_per_factor": lambda: cv.kfac(apply_fn, lik, fisher=fisher, prior=per_factor),
        "kfac_separate_bias": lambda: cv.kfac(
            apply_fn, lik, fisher=fisher, bias=cv.blocks.separate_bias()
        ),
        "efb": lambda: cv.efb(apply_fn, lik, fisher=fisher, chunk_size=4),
        "efb_per_factor": lambda: cv.efb(apply_fn, lik, fisher=fisher, prior=per_factor),
        "block_diagonal": lambda: cv.block_diagonal(apply_fn, lik, fisher=fisher, chunk_size=4),
        "low_rank": lambda: cv.low_rank(apply_fn, lik, fisher=fisher, rank=size, key=KEY),
    }[structure]()


def fit(curv, name, batches=None, key=KEY, jit=True):
    """init, then per pass: update on each batch and finalize (jitted by default)."""
    _, params, batch, _, _ = problem(name)
    batches = [batch] if batches is None else batches
    update = jax.jit(curv.update) if jit else curv.update
    finalize = jax.jit(curv.finalize) if jit else curv.finalize
    state = curv.init(params, batches[0].x)
    for _ in range(curv.num_passes):
        for b in batches:
            state = update(state, params, b, key)
        state = finalize(state)
    cv.check_finite(state)
    return state


def dense_of(curv, state):
    """``curv.to_dense(state)``, jitted (eager dispatch of its many small ops is slower)."""
    return jax.jit(curv.to_dense)(state)


@functools.cache
def fitted(structure, name, fisher_name="exact"):
    with jax.enable_x64(True):
        curv = factory(structure, name, FISHERS[fisher_name]())
        return curv, fit(curv, name)


@functools.cache
def reference(name, fisher_name, num_examples=6, key=KEY):
    """Brute-force ``C`` in ``ravel_pytree`` order for the first examples of the batch."""
    with jax.enable_x64(True):
        apply_fn, params, batch, lik, _ = problem(name)
        batch = jax.tree.map(lambda a: a[:num_examples], batch)
        flat, unravel = ravel_pytree(params)

        @jax.jit
        def build(flat):
            outputs = apply_fn(params, batch.x)
            nll = lambda w, y: lik.nll(apply_fn(unravel(w), batch.x), y)  # per example
            if fisher_name == "exact":
                jac = jax.jacobian(lambda w: apply_fn(unravel(w), batch.x))(flat)  # [B, K, P]
                return jnp.einsum("bkp,bkl,blq->pq", jac, lik.hessian(outputs), jac)
            if fisher_name == "mc2":
                labels = lik.sample(key, outputs, 2)  # the draws mc_fisher makes with this key
                grads = jax.vmap(jax.jacobian(nll), (None, 0))(flat, labels)
                return jnp.einsum("mbp,mbq->pq", grads, grads) / 2
            grads = jax.jacobian(nll)(flat, batch.y)
            return grads.T @ grads

        return build(flat)


STRUCTURES = [
    "dense",
    "diagonal",
    "kfac",
    "kfac_per_factor",
    "efb",
    "efb_per_factor",
    "block_diagonal",
    "low_rank",
]
SCALE, TAU = 3.0, 0.5


@pytest.mark.parametrize("layerwise", [False, True], ids=["scalar", "per_layer"])
@pytest.mark.parametrize("structure", ["kfac_per_factor", "efb_per_factor"])
def test_per_factor_prior_matches_kronecker_formula(x64, structure, layerwise):
    """KFAC: (sqrt(s) A + sqrt(tau) I) ⊗ (sqrt(s) G + sqrt(tau) I) built with jnp.kron; EFB:
    s C + sqrt(s tau)(A ⊗ I + I ⊗ G) + tau I on each layer block; with a per-layer prior,
    each layer's own tau."""
    name, scale = "cnn", SCALE
    curv, state = fitted(structure, name)
    params = problem(name)[1]
    taus = {"Conv_0": 0.3, "Conv_1": 2.0, "Dense_0": 5.0}
    prior = jax.tree.map(lambda a: jnp.asarray(TAU), params)
    if layerwise:
        prior = {m: jax.tree.map(lambda a, m=m: jnp.asarray(taus[m]), p) for m, p in params.items()}
    flat, unravel = ravel_pytree(params)
    column = lambda e: ravel_pytree(curv.precision_mvp(state, unravel(e), scale, prior))[0]
    precision = jax.jit(jax.vmap(column, out_axes=1))(jnp.eye(flat.size))
    dense = dense_of(curv, state)
    block_idx, other_idx = blocks.dense_indices(state.structure)
    assert len(block_idx) == 3 and not other_idx
    for f, idx, block in zip(state.factors, block_idx, state.structure.blocks, strict=True):
        tau = taus[block.layer.path[0]] if layerwise else TAU
        rs, rt = jnp.sqrt(scale), jnp.sqrt(tau)
        a, g = kron.normalised(f, state.num_data)
        ia, ig = jnp.eye(a.shape[0]), jnp.eye(g.shape[0])
        if structure == "kfac_per_factor":
            expected = jnp.kron(rs * a + rt * ia, rs * g + rt * ig)
        else:
            cross = rs * rt * (jnp.kron(a, ig) + jnp.kron(ia, g))
            expected = scale * dense[np.ix_(idx, idx)] + cross + tau * jnp.eye(idx.size)
        np.testing.assert_allclose(precision[np.ix_(idx, idx)], expected, atol=1e-10)


def flat_indices(name, module):
    """Flat indices of a module's parameters (kernel rows then bias: the block order)."""
    params = problem(name)[1]
    index = ravel_pytree(params)[1](np.arange(ravel_pytree(params)[0].size))[module]
    kernel = np.asarray(index["kernel"]).reshape(-1, index["kernel"].shape[-1])
    rows = [kernel, np.asarray(index["bias"])[None]] if "bias" in index else [kernel]
    return np.concatenate(rows).ravel()


DENSE_CASES = [("mlp", f) for f in FISHERS] + [("cnn", "exact"), ("regression", "mc2")]


@pytest.mark.parametrize(("name", "fisher_name"), DENSE_CASES)
def test_dense_equals_brute_force(x64, name, fisher_name):
    curv, state = fitted("dense", name, fisher_name)
    np.testing.assert_allclose(dense_of(curv, state), reference(name, fisher_name), atol=1e-12)


@pytest.mark.parametrize(
    ("name", "fisher_name"), [("cnn", "mc2"), ("cnn", "empirical"), ("norm", "mc2")]
)
def test_diagonal_equals_reference_diagonal(x64, name, fisher_name):
    curv, state = fitted("diagonal", name, fisher_name)
    ref = jnp.diag(reference(name, fisher_name))
    np.testing.assert_allclose(jnp.diag(dense_of(curv, state)), ref, atol=1e-12)


@pytest.mark.parametrize(("name", "fisher_name"), [("cnn", "mc2"), ("norm", "exact")])
def test_block_diagonal_equals_reference_layer_blocks(x64, name, fisher_name):
    """Exact per-layer blocks (conv too) for any batch; norm parameters diagonal."""
    curv, state = fitted("block_diagonal", name, fisher_name)
    expected = np.where(module_mask(name), reference(name, fisher_name), 0.0)
    np.testing.assert_allclose(dense_of(curv, state), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "fisher_name", "modules"),
    [("mlp", "mc2", ("Dense_0", "Dense_1")), ("cnn", "exact", ("Dense_0",))],
)
def test_kfac_on_one_example_equals_dense_layer_blocks(x64, name, fisher_name, modules):
    """One example: A = a a^T is rank one, so A ⊗ G is the exact block of a Dense layer
    (for a conv layer, with several positions, KFC is an approximation)."""
    curv = factory("kfac", name, FISHERS[fisher_name]())
    one = jax.tree.map(lambda a: a[:1], problem(name)[2])
    dense = dense_of(curv, fit(curv, name, batches=[one]))
    ref = reference(name, fisher_name, num_examples=1)
    for module in modules:
        idx = np.ix_(*[flat_indices(name, module)] * 2)
        np.testing.assert_allclose(dense[idx], ref[idx], atol=1e-12)
    if name == "mlp":  # nothing outside the layer blocks
        np.testing.assert_allclose(dense, np.where(module_mask(name), ref, 0.0), atol=1e-12)


@pytest.mark.parametrize("structure", [s for s in STRUCTURES if not s.endswith("per_factor")])
def test_batchnorm_model_fits_and_norm_parameters_get_their_exact_diagonal(x64, structure):
    """The BatchNorm/LayerNorm model fits with every structure; norm scales and offsets get
    diagonal blocks equal to diag(C) in the layer-wise structures (all of C in dense and in
    low_rank with rank = P); log_det and samples are finite."""
    curv, state = fitted(structure, "norm")
    dense, ref = dense_of(curv, state), reference("norm", "exact")
    is_other = np.sum(module_mask("norm"), axis=0) == 1
    assert is_other.sum() == 2 + 2 + 32 + 32
    np.testing.assert_allclose(np.diag(dense)[is_other], np.diag(ref)[is_other], atol=1e-12)
    if structure in ("dense", "low_rank"):
        np.testing.assert_allclose(dense, ref, atol=1e-12)
    else:
        assert not np.any((dense - np.diag(np.diag(dense)))[is_other])
    if hasattr(state, "structure"):
        others = [p for p in cv.Layout.of(problem("norm")[1]).paths if "Norm" in p[0]]
        assert set(state.structure.other_paths) == set(others) and len(others) == 4
    assert np.isfinite(curv.log_det(state, SCALE, TAU))
    z = curv.sample(state, jax.random.key(0), SCALE, TAU)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(z))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_efb_eigenvalues_are_the_block_diagonal_in_the_kfac_eigenbasis(x64, name):
    _, state = fitted("efb", name)
    ref = reference(name, "exact")
    modules = [b.layer.path[0] for b in state.structure.blocks]
    for f, s, module in zip(state.factors, state.corrected, modules, strict=True):
        q = jnp.kron(f.a_eigenvectors, f.g_eigenvectors)
        idx = flat_indices(name, module)
        block = ref[np.ix_(idx, idx)]
        np.testing.assert_allclose(s.ravel(), jnp.diag(q.T @ block @ q), atol=1e-12)


def test_exact_ggn_equals_hessian_for_linear_model_with_squared_loss(x64):
    model, lik = nn.Dense(2), losses.gaussian(sigma=0.5)
    x = jax.random.normal(jax.random.key(0), (5, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(1), (5, 2), jnp.float64)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(KEY, x))["params"]
    apply_fn = lambda p, inputs: model.apply({"params": p}, inputs)
    curv = cv.dense(apply_fn, lik, fisher=cv.exact_fisher())
    state = curv.finalize(jax.jit(curv.update)(curv.init(params, x), params, Batch(x, y), KEY))
    flat, unravel = ravel_pytree(params)
    total = lambda w: jnp.sum(lik.nll(apply_fn(unravel(w), x), y))
    hessian = jax.jit(jax.hessian(total))(flat)
    np.testing.assert_allclose(dense_of(curv, state), hessian, atol=1e-12)


def test_low_rank_top_eigenpairs_and_exact_diagonal(x64):
    name = "mlp"
    apply_fn, _, _, lik, _ = problem(name)
    curv = cv.low_rank(apply_fn, lik, fisher=cv.exact_fisher(), rank=4, key=KEY)
    state = fit(curv, name)
    ref = reference(name, "exact")
    np.testing.assert_allclose(jnp.diag(dense_of(curv, state)), jnp.diag(ref), atol=1e-12)
    top = jnp.linalg.eigvalsh(ref)[::-1][:4]
    np.testing.assert_allclose(state.eigenvalues, top, rtol=1e-6)
    full_curv, full = fitted("low_rank", "cnn")  # rank = P
    np.testing.assert_allclose(dense_of(full_curv, full), reference("cnn", "exact"), atol=1e-12)


def test_mc_fisher_with_many_samples_approaches_exact(x64):
    """Relative Frobenius error of the 4000-sample MC Fisher; its standard error is about
    1/sqrt(4000) ~ 0.016 times a constant of order one, so 0.1 is loose."""
    name = "mlp"
    apply_fn, _, _, lik, _ = problem(name)
    curv = cv.dense(apply_fn, lik, fisher=cv.mc_fisher(num_samples=4000))
    mc = dense_of(curv, fit(curv, name))
    exact = reference(name, "exact")
    assert float(jnp.linalg.norm(mc - exact) / jnp.linalg.norm(exact)) < 0.1


def test_last_layer_subset_is_the_reference_sub_block(x64):
    name = "cnn"
    apply_fn, params, batch, lik, _ = problem(name)
    last = cv.subset.last_layer(apply_fn, params, batch.x[:1])
    idx = np.ix_(*[flat_indices(name, "Dense_0")] * 2)
    ref = reference(name, "exact")
    fisher = cv.exact_fisher()
    for curv in [
        cv.dense(apply_fn, lik, fisher=fisher, subset=last),
        cv.block_diagonal(apply_fn, lik, fisher=fisher, subset=last),
    ]:
        dense = dense_of(curv, fit(curv, name))
        # selected order: bias then kernel (tree order); reference block: kernel rows, bias
        order = np.r_[3:27, 0:3]
        np.testing.assert_allclose(dense[np.ix_(order, order)], ref[idx], atol=1e-12)
    norms = cv.subset.where(lambda p: p[-1] == "scale")  # no Dense/Conv kernel selected
    curv = cv.diagonal(*problem("norm")[:1], problem("norm")[3], fisher=fisher, subset=norms)
    diag = dense_of(curv, fit(curv, "norm"))
    assert diag.shape == (2 + 32, 2 + 32)


def test_separate_bias_layout_is_laplace_torchs_kfac(x64):
    """``blocks.separate_bias()``: per Dense layer a kernel block ``(sum a a^T) ⊗ (sum b b^T)
    / N`` and a bias block ``sum b b^T`` (b: gradients at the layer's output, here the bias
    gradients of a brute-force Jacobian; a: the layer inputs computed by hand), no
    kernel-bias cross terms; the homogeneous layout has the same diagonal blocks plus the
    cross terms."""
    name = "mlp"
    apply_fn, params, batch, lik, _ = problem(name)
    separate = dense_of(*fitted("kfac_separate_bias", name))
    homogeneous = dense_of(*fitted("kfac", name))
    x, n = batch.x, batch.x.shape[0]
    hidden = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    bias_jac = jax.jacobian(lambda p: apply_fn(p, x))(params)  # leaves [B, K, *shape]
    factors = lik.hessian_sqrt(apply_fn(params, x))  # [B, K, M], L L^T = H
    for module, a in (("Dense_0", x), ("Dense_1", hidden)):
        jb = jnp.einsum("bkd,bkm->bmd", bias_jac[module]["bias"], factors)  # b_nm
        gram = jnp.einsum("bmd,bme->de", jb, jb)
        kernel_ref = jnp.kron(a.T @ a, gram) / n
        idx = flat_indices(name, module)
        k_idx, b_idx = idx[: kernel_ref.shape[0]], idx[kernel_ref.shape[0] :]
        for dense in (separate, homogeneous):
            np.testing.assert_allclose(dense[np.ix_(k_idx, k_idx)], kernel_ref, atol=1e-12)
            np.testing.assert_allclose(dense[np.ix_(b_idx, b_idx)], gram, atol=1e-12)
        assert not np.any(separate[np.ix_(k_idx, b_idx)])
        assert np.abs(homogeneous[np.ix_(k_idx, b_idx)]).max() > 1e-3
    np.testing.assert_allclose(separate, np.where(module_mask(name), separate, 0.0), atol=0)
