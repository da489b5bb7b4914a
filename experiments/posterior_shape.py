"""The post's N/tau figure (section 1.4) on a real posterior: how the data scale ``N`` and the prior
precision ``tau`` of ``N F + tau I`` shape one 2D slice of it.

The posterior is the last-layer Laplace approximation of the family's reference MAP network (the
exact GGN of its last Dense layer over the training set, a dense matrix ``C``, at the training
prior ``tau0``), and the plane is spanned by two of its weights, chosen so that the curvature
matters there: both weights are determined by the data (``C_aa >= tau0``: the data part of
their precision is at least the prior's) and, among such pairs of the most curved weights,
their curvature correlation ``C_ab / sqrt(C_aa C_bb)`` is the closest to
``shape_correlation`` (a clearly tilted ellipse). On that plane the posterior slice is
``N(0, (s C_2 + tau I)^-1)`` with ``C_2`` the 2x2 block of ``C`` and ``N = s n``: scaling ``N``
scales the ellipse by ``1 / sqrt(s)`` when ``tau`` is small against ``s C_2`` (its shape kept),
while raising ``tau`` past the curvature makes it round. How much of the whole posterior the
data determine is reported as ``gamma = sum_i s lam_i / (s lam_i + tau)`` over the eigenvalues
of ``C`` (exact for a dense curvature) and its fraction of the parameter count.

Run ``python -m experiments.posterior_shape [--quick] [--out results/posterior-shape]``.
"""

import itertools
from pathlib import Path

import jax
import jax.flatten_util
import numpy as np

from bnn_jax import curvature, data, laplace, losses, plotting
from experiments import cli, common, family, progress
from experiments.cache import Cache, fingerprint

_TOP_WEIGHTS = 200
"""Pairs are searched among this many most curved last-layer weights (a 200 x 200 search)."""


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick) | {
        "shape_scales": [0.25, 1.0, 4.0],
        "shape_num_priors": 4,
        "shape_correlation": 0.8,
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config before anything runs."""
    family.check_study(config, get_config())
    scales = config["shape_scales"]
    if not scales or any(not isinstance(s, int | float) or not s > 0 for s in scales):
        raise ValueError(f"config['shape_scales']: expected numbers > 0, got {scales!r}")
    count = config["shape_num_priors"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ValueError(f"config['shape_num_priors']: expected an integer >= 2, got {count!r}")
    if not 0.0 < config["shape_correlation"] < 1.0:
        raise ValueError(
            f"config['shape_correlation']: expected a value in (0, 1), "
            f"got {config['shape_correlation']!r}"
        )


def last_layer_curvature(member, ds, key) -> tuple[np.ndarray, list[str]]:
    """The exact GGN ``C`` (summed over the training set) of the member's last Dense layer and
    the names of its coordinates (``"<layer>/kernel[i, j]"``, ``tree.ravel`` order)."""
    params = member.variables["params"]
    apply_fn = lambda p, x: member.model.apply({**member.variables, "params": p}, x)
    subset = curvature.subset.last_layer(apply_fn, params, ds.x_train[:1])
    curv = curvature.dense(
        apply_fn, losses.categorical(), fisher=curvature.exact_fisher(), subset=subset
    )
    post = laplace.fit(
        curv,
        params,
        data.Batches(ds.x_train, ds.y_train, 500),
        key=key,
        prior_prec=1.0,
        progress=progress.current().bars,
    )
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(subset.select(params))[0]:
        label = "/".join(str(getattr(k, "key", k)) for k in path)
        names += [f"{label}{list(i)}" for i in np.ndindex(np.shape(leaf))]
    return np.asarray(curv.to_dense(post.state), dtype=np.float64), names


def choose_plane(matrix: np.ndarray, prior_prec: float, correlation: float) -> tuple[int, int]:
    """The pair ``(a, b)`` of data-determined coordinates (``C_aa >= tau0``) among the
    ``_TOP_WEIGHTS`` most curved whose correlation ``|C_ab| / sqrt(C_aa C_bb)`` is closest to
    ``correlation``; ``ValueError`` if fewer than two coordinates are data-determined."""
    diagonal = np.diag(matrix)
    top = np.argsort(diagonal)[::-1][:_TOP_WEIGHTS]
    top = top[diagonal[top] >= prior_prec]
    if len(top) < 2:
        raise ValueError(
            "the last-layer posterior is dominated by its prior: fewer than two weights have "
            f"curvature >= tau0 = {prior_prec:g}"
        )
    pairs = list(itertools.combinations(top, 2))
    corr = [abs(matrix[a, b]) / np.sqrt(diagonal[a] * diagonal[b]) for a, b in pairs]
    best = int(np.argmin(np.abs(np.asarray(corr) - correlation)))
    return int(pairs[best][0]), int(pairs[best][1])


def shape(covariance: np.ndarray) -> dict:
    """Area of the one-sigma ellipse ``pi sqrt(det S)``, its axis ratio and its semi-axes."""
    major, minor, angle = plotting.ellipse_axes(covariance)
    return {
        "area": float(np.pi * major * minor),
        "axis_ratio": major / minor,
        "major": major,
        "minor": minor,
        "angle": angle,
    }


def effective_parameters(eigenvalues: np.ndarray, scale: float, prior_prec: float) -> float:
    """``gamma = sum_i s lam_i / (s lam_i + tau)`` (eigenvalues clipped at 0)."""
    lam = scale * np.clip(eigenvalues, 0.0, None)
    return float(np.sum(lam / (lam + prior_prec)))


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """The N/tau figure on the reference member's last-layer posterior; returns its numbers."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, member = fitted.dataset, family.reference(fitted, config)
    tau0 = float(next(iter(member.posteriors.values())).prior_prec)
    params = member.variables["params"]
    settings = {  # what the plane depends on: the MAP, the training inputs, the key, tau0
        "params": fingerprint(jax.flatten_util.ravel_pytree(params)[0]),
        "x_train": fingerprint(ds.x_train),
        "seed": config["seed"],
        "prior_prec": tau0,
        "correlation": config["shape_correlation"],
    }

    def compute() -> dict:  # the [P, P] curvature is too large to cache: keep what is used
        matrix, names = last_layer_curvature(member, ds, jax.random.key(config["seed"]))
        a, b = choose_plane(matrix, tau0, config["shape_correlation"])
        return {
            "eigenvalues": np.linalg.eigvalsh(matrix),
            "block": matrix[np.ix_([a, b], [a, b])],
            "plane": [names[a], names[b]],
        }

    found = Cache(Path(out_dir) / "cache").json("posterior_shape-plane", settings, compute)
    eigenvalues, block = np.asarray(found["eigenvalues"]), np.asarray(found["block"])
    names, (a, b) = found["plane"], (0, 1)
    n, num_params = len(ds.x_train), len(eigenvalues)
    gamma = effective_parameters(eigenvalues, 1.0, tau0)
    corr = float(block[0, 1] / np.sqrt(block[0, 0] * block[1, 1]))
    lam_low, lam_high = np.linalg.eigvalsh(block)
    # tau from the training prior up to 10x the plane's largest curvature at N = n: round there
    top_prior = max(10.0 * lam_high, 10.0 * tau0)
    priors = np.geomspace(tau0, top_prior, config["shape_num_priors"])
    covariance = lambda s, tau: np.linalg.inv(s * block + tau * np.eye(2))
    by_scale = {float(s): shape(covariance(s, tau0)) for s in config["shape_scales"]}
    by_prior = {float(t): shape(covariance(1.0, t)) for t in priors}
    groups = {
        f"N varies (tau = {tau0:g})": {
            f"N = {s * n:g}": covariance(s, tau0) for s in config["shape_scales"]
        },
        f"tau varies (N = {n})": {f"tau = {t:.3g}": covariance(1.0, t) for t in priors},
    }
    same_area = {  # the shapes alone: every ellipse scaled to the largest one's area
        f"{name}\nshapes only (equal areas)": {
            label: cov * np.sqrt(np.linalg.det(first) / np.linalg.det(cov))
            for first in [next(iter(group.values()))]
            for label, cov in group.items()
        }
        for name, group in groups.items()
    }
    fig = plotting.posterior_ellipses(groups | same_area, xlabel=names[a], ylabel=names[b])
    scales = sorted(by_scale)
    low_s, high_s = scales[0], scales[-1]
    report.section(f"How N and tau shape the posterior (blog section 1.4), {member.name}")
    report.text(
        f"Last-layer Laplace posterior of {member.name} on {ds.name}: exact GGN of the last "
        f"layer ({num_params} weights) over the n = {n} training inputs at the training prior "
        f"tau0 = {tau0:g}. The data determine gamma = {gamma:.0f} of its {num_params} "
        f"parameters ({gamma / num_params:.0%}; gamma = sum s lam / (s lam + tau)). Plane: "
        f"the weights {names[a]} and {names[b]}, the pair of data-determined weights "
        f"(curvature {block[0, 0]:.3g} and {block[1, 1]:.3g}, both >= tau0) whose curvature "
        f"correlation ({corr:+.2f}) is the closest to {config['shape_correlation']:g}."
    )
    caption = (
        "One-standard-deviation ellipses of the posterior slice N(0, (s C_2 + tau I)^-1) on "
        f"that plane. Left: N from {low_s * n:g} to {high_s * n:g} at tau = {tau0:g}: the area "
        f"falls from {by_scale[low_s]['area']:.3g} to {by_scale[high_s]['area']:.3g} "
        f"({by_scale[high_s]['area'] / by_scale[low_s]['area']:.2g}x, 1/N would give "
        f"{low_s / high_s:.2g}x) while the axis ratio goes from "
        f"{by_scale[low_s]['axis_ratio']:.2f} to {by_scale[high_s]['axis_ratio']:.2f}. Right: "
        f"tau from {tau0:g} to {priors[-1]:.3g} (10x the plane's largest curvature "
        f"{lam_high:.3g}) at N = {n}: the area falls from {by_prior[priors[0]]['area']:.3g} to "
        f"{by_prior[priors[-1]]['area']:.3g} and the axis ratio from "
        f"{by_prior[priors[0]]['axis_ratio']:.2f} to {by_prior[priors[-1]]['axis_ratio']:.2f} "
        "(1 is round)."
    )
    report.figure(
        "posterior_n_tau",
        fig,
        caption + " Bottom: the same ellipses scaled to one area, to show their shapes alone "
        "(positive curvature correlation tilts the covariance the other way).",
    )
    return {
        "member": member.name,
        "num_params": num_params,
        "num_data": n,
        "prior_prec": tau0,
        "gamma": gamma,
        "gamma_fraction": gamma / num_params,
        "plane": [names[a], names[b]],
        "plane_curvature": block.tolist(),
        "plane_correlation": corr,
        "plane_eigenvalues": [float(lam_low), float(lam_high)],
        "by_scale": {f"{s:g}": v for s, v in by_scale.items()},
        "by_prior_prec": {f"{t:.6g}": v for t, v in by_prior.items()},
    }


TITLE = "bnn_jax: how N and tau shape the posterior"
main = common.alone_main(TITLE, "posterior_shape", run, check)


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="mnist1d")
