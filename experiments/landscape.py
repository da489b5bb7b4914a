"""Loss landscapes, the blog post's sections 1.1-1.2, around the family's reference MAP network.

- The regularised mean training loss ``E(w) = mean_i nll_i(w) + tau0 / (2 n) ||w||^2`` (the
  negative log posterior per example; ``tau0`` the training prior) and the accuracy along random
  filter-normalised directions (Li et al. 2018): 1-D curves and a 2-D plane with loss and
  accuracy contours whose levels start at the minimum, as in the post.
- ``exp(-E)`` next to Gaussians on a plane where the curvature matters: the plane of the two
  largest eigenvalues of the exact GGN of ``E`` (subspace iteration with GGN-vector products),
  each axis spanning three standard deviations of the exact-GGN Laplace approximation along it.
  On it: the least-squares Gaussian fit of ``exp(-E)`` (the post's), the exact-GGN Laplace
  approximation, and the Gaussians the member's DIAG and KFAC posteriors imply there, each as the
  precision of the MEAN loss, ``(s C + tau I) / n`` with its own ``(s, tau)``.

Captions are computed from the numbers (local maxima, rank correlations, covariances and their
distances to the least-squares fit). Run ``python -m experiments.landscape [--quick]``.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.flatten_util import ravel_pytree

from bnn_jax import calibration, landscape, losses, plotting
from experiments import cli, common, family
from experiments.cache import Cache, fingerprint

STRUCTURES = {"diag_laplace": "DIAG", "kfac_laplace": "KFAC"}


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick) | {
        "landscape_points": 11 if quick else 25,
        "landscape_radius": 1.0,
        "landscape_directions": 3,
        "landscape_examples": 512,
        "landscape_iterations": 10 if quick else 30,
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def top_ggn_directions(apply_fn, params, x, *, num: int, iterations: int, key):
    """The ``num`` leading eigenpairs of the GGN ``sum_i J_i^T H_i J_i`` over the inputs ``x``
    (softmax NLL) by subspace iteration with ``num + 2`` vectors and a final Rayleigh-Ritz step:
    ``(eigenvalues [num], [unit-norm directions shaped like params])``."""
    flat, unravel = ravel_pytree(params)
    hessian = losses.categorical().hessian
    f = lambda w: apply_fn(unravel(w), x)
    logits, f_vjp = jax.vjp(f, flat)
    h = hessian(logits)

    @jax.jit
    def ggn(vectors):  # [P, k] -> [P, k]
        def one(v):
            jv = jax.jvp(f, (flat,), (v,))[1]
            return f_vjp(jnp.einsum("bkl,bl->bk", h, jv))[0]

        return jax.vmap(one, in_axes=1, out_axes=1)(vectors)

    basis = jnp.linalg.qr(jax.random.normal(key, (flat.size, num + 2), flat.dtype))[0]
    for _ in range(iterations):
        basis = jnp.linalg.qr(ggn(basis))[0]
    values, vectors = jnp.linalg.eigh(basis.T @ ggn(basis))
    order = jnp.argsort(values)[::-1][:num]
    directions = (basis @ vectors[:, order]).T
    return np.asarray(values[order]), [unravel(d) for d in directions]


def local_maxima(values: np.ndarray) -> int:
    """Strict local maxima of a 1-D or 2-D grid (interior points above all their neighbours)."""
    values = np.asarray(values, dtype=np.float64)
    inner = values[(slice(1, -1),) * values.ndim]
    above = np.ones(inner.shape, bool)
    for shift in np.ndindex(*(3,) * values.ndim):
        if all(s == 1 for s in shift):
            continue
        window = tuple(slice(s, s + n) for s, n in zip(shift, inner.shape, strict=True))
        above &= inner > values[window]
    return int(above.sum())


def _slices(member, ds, config) -> dict:
    """The loss and accuracy slices, the GGN plane and the Gaussian fit (the cached stage)."""
    params = member.variables["params"]
    apply_fn = lambda p, x: member.model.apply({**member.variables, "params": p}, x)
    tau0 = _training_prior(member)
    m = min(config["landscape_examples"], len(ds.x_train))
    x, y = jnp.asarray(ds.x_train[:m]), jnp.asarray(ds.y_train[:m])
    n = len(ds.x_train)
    size = lambda p: sum(jnp.sum(v**2) for v in jax.tree.leaves(p))
    nll = losses.categorical().nll
    loss_fn = lambda p: jnp.mean(nll(apply_fn(p, x), y)) + 0.5 * tau0 / n * size(p)
    accuracy_fn = lambda p: calibration.accuracy(jax.nn.log_softmax(apply_fn(p, x)), y)
    key = jax.random.key(config["seed"] + 17)
    keys = jax.random.split(key, config["landscape_directions"])
    directions = [landscape.random_direction(k, params) for k in keys]
    r, k = config["landscape_radius"], config["landscape_points"]
    grid = jnp.linspace(-r, r, k)
    d1, d2 = directions[:2]
    out = {
        "curves": jnp.stack(
            [landscape.slice_1d(loss_fn, params, d, grid, chunk_size=8) for d in directions]
        ),
        "acc_curves": jnp.stack(
            [landscape.slice_1d(accuracy_fn, params, d, grid, chunk_size=8) for d in directions]
        ),
        "surface": landscape.slice_2d(loss_fn, params, d1, d2, grid, grid, chunk_size=16),
        "acc_surface": landscape.slice_2d(accuracy_fn, params, d1, d2, grid, grid, chunk_size=16),
    }
    values, (e1, e2) = top_ggn_directions(
        apply_fn,
        params,
        x,
        num=2,
        iterations=config["landscape_iterations"],
        key=jax.random.fold_in(key, 1),
    )
    # exact-GGN Laplace of E on the plane: precision lam_k / m + tau0 / n along e_k
    sd = np.sqrt(1.0 / (values / m + tau0 / n))
    axes = [jnp.linspace(-3.0 * s, 3.0 * s, k) for s in sd]
    plane = landscape.slice_2d(loss_fn, params, e1, e2, *axes, chunk_size=16)
    fit, fitted_values = landscape.fit_gaussian_2d(*axes, jnp.exp(-plane))
    return out | {
        "ggn_eigenvalues": values,
        "plane_axes": jnp.stack(axes),
        "plane": plane,
        "fit_covariance": fit.covariance,
        "fit_mean": fit.mean,
        "fit_amplitude": fit.amplitude,
        "fitted_values": fitted_values,
        "peak_loss": loss_fn(params),
        "e1": ravel_pytree(e1)[0],
        "e2": ravel_pytree(e2)[0],
    }


def _training_prior(member) -> float:
    """``tau0``: the prior precision the member's posteriors were fitted at (the training
    prior, ``family.reference``'s contract)."""
    return float(next(iter(member.posteriors.values())).prior_prec)


def _summary(covariance) -> dict:
    covariance = np.asarray(covariance, dtype=np.float64)
    sd = np.sqrt(np.diag(covariance))
    return {"sd": sd.tolist(), "corr": float(covariance[0, 1] / (sd[0] * sd[1]))}


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """Slices of the reference MAP network's loss and the Gaussians on the GGN plane."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, member = fitted.dataset, family.reference(fitted, config)
    posteriors = {k: member.posteriors[k] for k in STRUCTURES if k in member.posteriors}
    if not posteriors:
        raise ValueError(
            "config['methods']: the landscape study needs diag_laplace or kfac_laplace"
        )
    params = member.variables["params"]
    tau0, n = _training_prior(member), len(ds.x_train)
    m = min(config["landscape_examples"], n)
    names = ("landscape_points", "landscape_radius", "landscape_directions")
    names += ("landscape_examples", "landscape_iterations", "seed")
    settings = {name: config[name] for name in names} | {
        "params": fingerprint(np.asarray(ravel_pytree(params)[0])),
        "data": fingerprint(np.asarray(ds.x_train[:m])),
        "prior_prec": tau0,
        "contents": 2,  # the stage's entries (2: with the least-squares fit's mean)
    }
    found = Cache(Path(out_dir) / "cache").stage(
        f"{member.name}-landscape", settings, lambda: _slices(member, ds, config)
    )
    r, k = config["landscape_radius"], config["landscape_points"]
    grid = np.linspace(-r, r, k)
    curves, surface = np.asarray(found["curves"]), np.asarray(found["surface"])
    acc_curves, acc_surface = np.asarray(found["acc_curves"]), np.asarray(found["acc_surface"])

    report.section(f"Loss landscape of {member.name} (blog sections 1.1-1.2)")
    report.text(
        f"E(w) = mean NLL on {m} training inputs + tau0 / (2 n) ||w||^2 (tau0 = {tau0:g}, "
        f"n = {n}), at w* + a d1 + b d2 for random filter-normalised directions (Li et al. "
        f"2018), a, b in [-{r:g}, {r:g}]."
    )
    hills = [local_maxima(c) for c in curves]
    with_hills = sum(h > 0 for h in hills)
    report.figure(
        "landscape_1d",
        plotting.loss_curves(grid, curves, accuracies=acc_curves),
        f"Loss (solid) and accuracy (dashed) along {len(curves)} random directions: the loss "
        f"rises from {float(found['peak_loss']):.3g} at w* to {curves.max():.3g}; "
        + (
            f"{with_hills} of the {len(curves)} curves have local maxima (hills) further out."
            if with_hills
            else "no curve has a local maximum within this range (no hills on these slices)."
        ),
    )
    maxima = local_maxima(surface)
    low = surface <= np.median(surface)
    rho_low = scipy.stats.spearmanr(surface[low], acc_surface[low]).statistic
    rho_high = scipy.stats.spearmanr(surface[~low], acc_surface[~low]).statistic
    report.figure(
        "landscape_2d",
        plotting.loss_surface(grid, grid, surface, accuracy=acc_surface),
        "Loss on a random plane with loss (white) and accuracy (orange, dashed) contours whose "
        "levels start at the minimum (w* at the red cross). On the half of the grid with the "
        f"lower loss, loss and accuracy have rank correlation {rho_low:+.2f}"
        f" ({rho_high:+.2f} on the other half): "
        + ("low loss follows accuracy. " if rho_low < -0.5 else "no close alignment here. ")
        + (
            f"The slice has {maxima} local maxima of the loss (hills)."
            if maxima
            else "The slice has no local maximum of the loss (no hills)."
        ),
    )
    metrics = {
        "hills_1d": hills,
        "hills_2d": maxima,
        "rank_correlation_low_loss": float(rho_low),
        "rank_correlation_high_loss": float(rho_high),
    }
    metrics |= _gaussians(report, member, posteriors, found, tau0=tau0, n=n, m=m)
    return metrics


def _gaussians(report, member, posteriors, found, *, tau0: float, n: int, m: int) -> dict:
    """The Gaussians figure and table on the GGN plane; returns their covariances and
    distances."""
    params = member.variables["params"]
    unravel = ravel_pytree(params)[1]
    e1, e2 = unravel(jnp.asarray(found["e1"])), unravel(jnp.asarray(found["e2"]))
    a_axis, b_axis = (np.asarray(v) for v in found["plane_axes"])
    plane = np.asarray(found["plane"])
    values = np.asarray(found["ggn_eigenvalues"])
    peak = float(np.exp(-found["peak_loss"]))
    exact = np.linalg.inv(np.diag(values / m + tau0 / n))
    covariances = {"least-squares fit": np.asarray(found["fit_covariance"])}
    panels = {"exp(-E)": np.exp(-plane), "least-squares fit": np.asarray(found["fitted_values"])}
    covariances["exact-GGN Laplace"] = exact
    gaussian = lambda cov: landscape.Gaussian2D(jnp.asarray(peak), jnp.zeros(2), jnp.asarray(cov))
    panels["exact-GGN Laplace"] = np.asarray(
        landscape.gaussian_on_grid(gaussian(exact), a_axis, b_axis)
    )
    hyper = {}
    for key, post in posteriors.items():
        scale, prior = float(post.scale), np.asarray(jax.tree.leaves(post.prior_prec))
        tau = f"{float(prior[0]):g}" if prior.size == 1 else "layer-wise"
        hyper[STRUCTURES[key]] = {"scale": scale, "prior_prec": prior.ravel().tolist()}
        label = f"{STRUCTURES[key]} (s = {scale:g}, tau = {tau})"
        mvp = lambda v, post=post: post.curvature.precision_mvp(
            post.state, v, post.scale / n, jax.tree.map(lambda t: t / n, post.prior_prec)
        )
        select = post.subset.select
        implied = landscape.plane_gaussian(mvp, select(e1), select(e2), amplitude=peak)
        covariances[label] = np.asarray(implied.covariance, dtype=np.float64)
        panels[label] = np.asarray(landscape.gaussian_on_grid(implied, a_axis, b_axis))
    fit = covariances["least-squares fit"]
    distance = lambda c: float(np.linalg.norm(c - fit) / np.linalg.norm(fit))
    target = panels["exp(-E)"]
    rms = lambda v: float(np.sqrt(np.mean((v - target) ** 2)))
    rows = [
        [name, *_summary(c)["sd"], _summary(c)["corr"], distance(c), rms(panels[name])]
        for name, c in covariances.items()
    ]
    structures = [n_ for n_ in covariances if n_.startswith(("DIAG", "KFAC"))]
    report.text(
        "The Gaussians live on the plane of the two largest eigenvalues of the exact GGN of E "
        f"on the {m} inputs (lam1 = {values[0]:.3g}, lam2 = {values[1]:.3g}; unit-norm "
        "eigenvectors v1, v2 from subspace iteration), where the loss is most curved and the "
        "structures' approximations of that curvature are put to the test; each axis spans "
        "three standard deviations of the exact-GGN Laplace approximation along it."
    )
    caption = (
        "exp(-E) on the GGN plane next to its least-squares Gaussian fit, the exact-GGN Laplace "
        "approximation and the Gaussians the DIAG and KFAC posteriors imply there (precision "
        "(s C + tau I) / n of the mean loss), on one colour scale; white lines are exp(-E)'s "
        "contours, red dashed ellipses each Gaussian's one standard deviation. Standard "
        "deviations along v1, v2 and their correlation: "
        + "; ".join(f"{row[0]} {row[1]:.3g}, {row[2]:.3g}, {row[3]:+.2f}" for row in rows)
        + ". Relative Frobenius distance of each covariance to the least-squares fit: "
        + ", ".join(f"{row[0]} {row[4]:.3g}" for row in rows[1:])
        + ". "
        + _shape_sentence(covariances["least-squares fit"], exact)
    )
    kept = {}
    for name in structures:
        kept[name] = np.diag(np.linalg.inv(covariances[name])) / np.diag(np.linalg.inv(exact))
    if kept:
        caption += (
            " Precision along v1, v2 relative to the exact-GGN Laplace's: "
            + "; ".join(f"{name} {r[0]:.3g}, {r[1]:.3g}" for name, r in kept.items())
            + "."
        )
    if len(structures) == 2:
        a, b = (covariances[s] for s in structures)
        gap = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        caption += f" DIAG and KFAC differ by {gap:.3g} (relative Frobenius) on this plane."
    report.figure(
        "landscape_gaussians",
        plotting.gaussian_comparison(
            a_axis,
            b_axis,
            panels,
            ncols=3,
            xlabel="step along v1",
            ylabel="step along v2",
            title="exp(-E) and Gaussians on the plane of the top two GGN eigenvectors",
            covariances=covariances,
            means={"least-squares fit": np.asarray(found["fit_mean"])},
        ),
        caption,
    )
    report.table(
        ["Gaussian", "sd v1", "sd v2", "corr", "rel. distance to LS fit", "RMS to exp(-E)"],
        rows,
    )
    return {
        "ggn_eigenvalues": values.tolist(),
        "covariances": {name: c.tolist() for name, c in covariances.items()},
        "distance_to_fit": {row[0]: row[4] for row in rows},
        "rms_to_exp_neg_loss": {row[0]: row[5] for row in rows},
        "posterior_hyperparameters": hyper,
        "precision_relative_to_exact": {name: r.tolist() for name, r in kept.items()},
    }


def _shape_sentence(fit: np.ndarray, exact: np.ndarray) -> str:
    """Whether exp(-E) is narrower or wider than its Laplace approximation on the plane, from
    the ratio of the least-squares fit's standard deviations to the exact-GGN Laplace's."""
    ratio = np.sqrt(np.diag(fit) / np.diag(exact))
    numbers = f"(least-squares sd / Laplace sd {ratio[0]:.2f}, {ratio[1]:.2f})"
    if np.all(ratio < 0.9):
        return (
            f"exp(-E) is narrower than its Laplace approximation {numbers}: the loss rises "
            "faster than quadratically away from w*."
        )
    if np.all(ratio > 1.1):
        return (
            f"exp(-E) is wider than its Laplace approximation {numbers}: the loss rises slower "
            "than quadratically away from w*."
        )
    return f"exp(-E) and its Laplace approximation have similar widths {numbers}."


main = common.alone_main("bnn_jax: loss landscape study", "landscape", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d")
