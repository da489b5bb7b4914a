"""Loss landscapes, the blog post's section 1.1-1.2: the loss along random filter-normalised
directions around the trained weights, loss and accuracy contours on a plane, and exp(-loss)
next to the Gaussian fitted to it by least squares and the Gaussians that the DIAG and KFAC
Laplace posteriors imply on the same plane.

Run ``python -m experiments.landscape [--quick] [--out results/digits-landscape]``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration, landscape, losses, plotting
from experiments import cli, common, family
from experiments.cache import Cache


def get_config(quick: bool = False) -> dict:
    return family.default_config(quick) | {
        "landscape_points": 11 if quick else 25,
        "landscape_radius": 1.0,
        "landscape_directions": 3,
        "landscape_examples": 512,
    }


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    family.check_study(config, get_config())


def run(config: dict, out_dir, report: common.Report, fitted=None) -> dict:
    """Slices of the reference MAP network's mean training loss and the Gaussians on them."""
    check(config)
    fitted = fitted or family.fit_family(config, out_dir)
    ds, member = fitted.dataset, family.reference(fitted, config)
    params = member.variables["params"]
    apply_fn = next(iter(member.posteriors.values())).apply_fn if member.posteriors else None
    if apply_fn is None:
        raise ValueError(
            "config['methods']: the landscape study needs diag_laplace or kfac_laplace"
        )
    n = min(config["landscape_examples"], len(ds.x_train))
    x, y = jnp.asarray(ds.x_train[:n]), jnp.asarray(ds.y_train[:n])
    lik = losses.categorical()
    tau = config["prior_prec"]
    size = lambda p: sum(jnp.sum(v**2) for v in jax.tree.leaves(p))
    loss_fn = lambda p: jnp.mean(lik.nll(apply_fn(p, x), y)) + 0.5 * tau / len(ds.x_train) * size(p)
    accuracy_fn = lambda p: calibration.accuracy(jax.nn.log_softmax(apply_fn(p, x)), y)
    keys = jax.random.split(jax.random.key(config["seed"] + 17), config["landscape_directions"])
    directions = [landscape.random_direction(k, params) for k in keys]
    r, k = config["landscape_radius"], config["landscape_points"]
    grid = jnp.linspace(-r, r, k)
    d1, d2 = directions[:2]

    def slices() -> dict:
        curves, accuracies = (
            jnp.stack([landscape.slice_1d(f, params, d, grid, chunk_size=8) for d in directions])
            for f in (loss_fn, accuracy_fn)
        )
        surface = landscape.slice_2d(loss_fn, params, d1, d2, grid, grid, chunk_size=16)
        acc_surface = landscape.slice_2d(accuracy_fn, params, d1, d2, grid, grid, chunk_size=16)
        fit, fitted_values = landscape.fit_gaussian_2d(grid, grid, jnp.exp(-surface))
        return {
            "curves": curves,
            "acc_curves": accuracies,
            "surface": surface,
            "acc_surface": acc_surface,
            "fit_covariance": fit.covariance,
            "fitted_values": fitted_values,
        }

    names = ("landscape_points", "landscape_radius", "landscape_directions", "landscape_examples")
    settings = member.settings | {name: config[name] for name in names}
    found = Cache(fitted.cache_dir).stage(f"{member.name}-landscape", settings, slices)
    curves, acc_curves, surface, acc_surface, fitted_values = (
        jnp.asarray(found[name])
        for name in ("curves", "acc_curves", "surface", "acc_surface", "fitted_values")
    )
    likelihood = jnp.exp(-surface)
    peak = jnp.exp(-loss_fn(params))
    panels = {"exp(-loss)": likelihood, "least-squares Gaussian": fitted_values}
    metrics = {"fit_covariance": found["fit_covariance"].tolist()}
    num_data = len(ds.x_train)
    for name, post in member.posteriors.items():
        # Two Gaussians per structure, both as the precision of the MEAN loss (divided by n):
        # the Laplace approximation of this loss, (C + tau_train I) / n, and the posterior the
        # studies predict with, (s C + tau I) / n with the (s, tau) tuned on validation data.
        for label, scale, prior in (
            (name, 1.0, tau),
            (f"{name} (tuned)", post.scale, post.prior_prec),
        ):
            mvp = lambda v, post=post, scale=scale, prior=prior: post.curvature.precision_mvp(
                post.state, v, scale / num_data, prior / num_data
            )
            implied = landscape.plane_gaussian(mvp, d1, d2, amplitude=peak)
            panels[label] = landscape.gaussian_on_grid(implied, grid, grid)
            metrics[f"{label}_covariance"] = np.asarray(implied.covariance).tolist()
    rms = lambda v: float(jnp.sqrt(jnp.mean((v - likelihood) ** 2)))
    metrics["rms_to_exp_neg_loss"] = {
        name: rms(v) for name, v in panels.items() if name != "exp(-loss)"
    }
    report.section(f"Loss landscape of {member.name} (blog section 1)")
    report.text(
        f"Mean training loss on {n} training inputs at w* + a d1 + b d2 for random "
        f"filter-normalised directions (Li et al. 2018), a, b in [-{r}, {r}]."
    )
    report.figure(
        "landscape_1d",
        plotting.loss_curves(grid, curves, accuracies=acc_curves),
        "Loss (solid) and accuracy (dashed) along three random directions: a valley around the "
        "trained weights with small hills further out.",
    )
    report.figure(
        "landscape_2d",
        plotting.loss_surface(grid, grid, surface, accuracy=acc_surface),
        "Loss on a random plane with loss and accuracy contours: at low loss the loss contours "
        "follow accuracy levels.",
    )
    report.figure(
        "landscape_gaussians",
        plotting.gaussian_comparison(grid, grid, {k: np.asarray(v) for k, v in panels.items()}),
        "exp(-loss) next to the least-squares Gaussian and the Gaussians the DIAG and KFAC "
        "curvatures imply on the same plane: the Laplace approximation of this loss, precision "
        "(C + tau I) / n, and the tuned posterior used for prediction, (s C + tau' I) / n; white "
        "lines are the contours of exp(-loss). At the trained weights of an overconfident "
        "network the softmax saturates, so the GGN is small and the untuned Gaussians are wide.",
    )
    report.table(
        ["Gaussian", "RMS difference to exp(-loss)"],
        [[k, v] for k, v in metrics["rms_to_exp_neg_loss"].items()],
    )
    return metrics


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: loss landscape study",
        "landscape",
        run,
        config,
        out_dir,
        overwrite=overwrite,
        check=check,
    )


if __name__ == "__main__":
    cli.run(__doc__.splitlines()[0], get_config, main, default_dataset="digits")
