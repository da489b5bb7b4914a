"""The notebook, end to end: uncertainty maps, posterior draws and attacks on the 2D toy problem.

Methods: the notebook's Concrete Dropout network (Dense 500 ReLU, then Concrete Dropout around
Dense 500 and around the output layer; weight_regularizer 1e-3, dropout_regularizer 1, SGD),
the same network with plain MC dropout, its MAP estimate with diagonal and KFAC Laplace
posteriors ((N, tau) chosen by a grid search of the validation NLL, as in the blog post), a
deep ensemble, and a GP classifier (arc-sine kernel, probit likelihood, Laplace inference,
hyperparameters by evidence maximisation, Houlsby's BALD). The network methods come from the
method table ``experiments.methods.METHODS``.

Run ``python -m experiments.toy2d [--quick] [--out results/toy2d]``.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import attacks, calibration, curvature, data, gp, models, uncertainty
from experiments import cli, common, progress, toy2d_report
from experiments import methods as predictors
from experiments.cache import Cache

METHODS = (*predictors.METHODS, "gp")
"""The method table (``methods.METHODS``) and the GP reference."""
DEFAULT_METHODS = (
    "map",
    "mc_dropout",
    "concrete_dropout",
    *(m for m in predictors.LAPLACE_STRUCTURES if m not in predictors.SLOW),
    "ensemble",
    "gp",
)


def get_config(quick: bool = False) -> dict:
    """The notebook's settings (500 epochs of SGD with batch 32, 50 MC samples, a 100 x 100
    grid with a margin of 5); ``quick`` trains less and uses a coarser grid."""
    return {
        "dataset": "toy2d",
        "seed": 0,
        "num_train": 100,
        "widths": [500, 500],
        "learning_rate": 0.01,
        "epochs": 150 if quick else 500,
        "batch_size": 32,
        "weight_regularizer": 1e-3,
        "dropout_regularizer": 1.0,
        "dropout_rate": 0.1,
        "prior_prec": 1.0,
        "num_members": 5,
        "num_samples": 20 if quick else 50,
        "grid_size": 40 if quick else 100,
        "draw_grid_size": 30 if quick else 50,
        "margin": 5.0,
        "fgm_eps": 0.5,
        "bim_eps": 0.3,
        "bim_step": 0.1,
        "bim_steps": 10,
        "prior_prec_grid": [0.1, 1000.0, 9],
        "scale_grid": [1.0, 1000.0, 7],
        "methods": list(DEFAULT_METHODS),
    }


def _grid(x: np.ndarray, size: int, margin: float):
    axes = [np.linspace(x[:, i].min() - margin, x[:, i].max() + margin, size) for i in (0, 1)]
    xx, yy = np.meshgrid(*axes)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


TRAIN_KEYS = ("seed", "num_train", "widths", "learning_rate", "epochs", "batch_size")


def _train(config, ds, cache, name, model, key, **kwargs):
    return common.train_model(
        cache,
        name,
        {k: config[k] for k in TRAIN_KEYS} | {"keys": predictors.KEY_SCHEME},
        model,
        ds,
        key=key,
        optimizer=optax.sgd(config["learning_rate"]),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        **kwargs,
    )


def _laplace(config, ds, cache, name, structure, apply_fn, params, key):
    settings = {k: config[k] for k in TRAIN_KEYS} | {"prior_prec": config["prior_prec"]}
    settings |= {"keys": predictors.KEY_SCHEME}
    result = common.tuned_laplace(
        config,
        ds,
        cache,
        name,
        {**settings, "name": name},
        apply_fn,
        params,
        structure=structure,
        fisher=curvature.exact_fisher(),
        batch_size=100,
        objective=calibration.nll,
        key=key,
    )
    post = result.posterior
    return post, {"prior_prec": float(post.prior_prec), "scale": float(post.scale)}


def _concrete(config, ds):
    model = models.ConcreteDropoutMLP(
        tuple(config["widths"]),
        ds.num_classes,
        weight_regularizer=config["weight_regularizer"],
        dropout_regularizer=config["dropout_regularizer"],
    )
    facts = lambda trained: {
        "p_by_epoch": {k: v.tolist() for k, v in trained.history.items() if "concrete" in k}
    }
    return model, facts


def _networks(config, ds, cache, key):
    """Train the networks and build one predictor per method of the table (``methods``);
    returns (predictors, facts)."""
    trained: dict = {}

    def train(name, model, train_key, **kwargs):
        if name not in trained:  # the MAP is shared by several methods
            trained[name] = _train(config, ds, cache, name, model, train_key, **kwargs)
        return trained[name]

    widths = tuple(config["widths"])
    study = predictors.Study(
        config,
        ds,
        train,
        network=lambda rate: models.MLP(widths, ds.num_classes, dropout_rate=rate),
        concrete=lambda: _concrete(config, ds),
        laplace=lambda *args: _laplace(config, ds, cache, *args),
    )
    built = predictors.build(study, [m for m in config["methods"] if m != "gp"], key)
    return (
        {name: b.predictor for name, b in built.items()},
        {name: b.facts for name, b in built.items() if b.facts},
    )


def _evaluate(config, log_prob_fn, single_fn, draws_fn, x_train, x_test, grid, draw_grid):
    """What the figures and tables need from one predictive, traced into one compiled function:
    the input gradient on the grid, four posterior draws, FGM (L2) on one posterior draw and
    BIM (L2) on the MC predictive against the training points (the predicted class as label,
    as the notebook's cleverhans calls), and the predictive on attacked and test points."""
    fgm = attacks.fgm(single_fn, x_train, eps=config["fgm_eps"], norm="l2")
    bim = attacks.bim(
        log_prob_fn,
        x_train,
        eps=config["bim_eps"],
        eps_iter=config["bim_step"],
        steps=config["bim_steps"],
        norm="l2",
    )
    return {
        "input_grad": attacks.input_gradient(log_prob_fn, grid),
        "draws": draws_fn(draw_grid),
        "fgm": fgm,
        "bim": bim,
        "fgm_log_probs": log_prob_fn(fgm),
        "bim_log_probs": log_prob_fn(bim),
        "test_log_probs": log_prob_fn(x_test),
    }


def _nn_fields(config, net: predictors.Predictor, arrays):
    def evaluate(x_train, x_test, grid, draw_grid):
        draws = lambda g: net.sample_log_probs(g)[:4]
        out = _evaluate(
            config,
            net.log_prob_fn,
            net.draw_log_prob_fn(0),
            draws,
            x_train,
            x_test,
            grid,
            draw_grid,
        )
        samples = net.sample_log_probs(grid)
        return out | {
            "log_probs": uncertainty.mean_log_probs(samples),
            "entropy": uncertainty.predictive_entropy(samples),
            "bald": uncertainty.bald(samples),
            "expected_entropy": uncertainty.expected_entropy(samples),
        }

    return jax.tree.map(np.asarray, jax.jit(evaluate)(*map(jnp.asarray, arrays)))


def _gp_fields(config, ds, arrays, key):
    """Fit the GP in float64 and evaluate it there (Houlsby's BALD, joint function draws; the
    GP has no single posterior draw to attack, so FGM targets its predictive too)."""
    with jax.enable_x64(True):
        x, y = np.asarray(ds.x_train, np.float64), ds.y_train
        kernel, lik = gp.arcsine_kernel(), gp.probit()
        fit = gp.optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=lik)
        posterior = gp.fit(kernel, fit.params, x, y, likelihood=lik)

        def log_prob_fn(inputs):
            return gp.predictive_log_probs(lik, *gp.latent_predictive(kernel, posterior, inputs))

        def draws(inputs):
            f = gp.latent_function_samples(kernel, posterior, inputs, key=key, num_samples=4)
            return jnp.stack([jax.nn.log_sigmoid(-f), jax.nn.log_sigmoid(f)], axis=-1)

        def evaluate(x_train, x_test, grid, draw_grid):
            out = _evaluate(
                config, log_prob_fn, log_prob_fn, draws, x_train, x_test, grid, draw_grid
            )
            mean, var = gp.latent_predictive(kernel, posterior, grid)
            entropy, bald = gp.predictive_entropy(lik, mean, var), gp.houlsby_bald(mean, var)
            return out | {
                "log_probs": log_prob_fn(grid),
                "entropy": entropy,
                "bald": bald,
                "expected_entropy": entropy - bald,
            }

        fields = jax.jit(evaluate)(*(jnp.asarray(a, jnp.float64) for a in arrays))
        fields = jax.tree.map(lambda a: np.asarray(a, np.float32), fields)
        facts = {
            "objective_before": float(fit.initial_objective),
            "objective_after": float(fit.final_objective),
            "hyperparameters": {
                k.removeprefix("log_"): float(jnp.exp(v)) for k, v in fit.params._asdict().items()
            },
        }
        return fields, facts


def _gp_stage(config, ds, arrays, key) -> dict:
    fields, facts = _gp_fields(config, ds, arrays, jax.random.fold_in(key, 2))
    return {"fields": fields, "facts": facts}


def notebook_agreement(grid, x_train, entropy, bald, *, near=0.5, far=2.0) -> dict:
    """The notebook's observations as numbers: BALD <= entropy everywhere; mean BALD near the
    data (within ``near`` of a training point), far from it on uncertain regions (entropy above
    half its maximum: decision boundaries) and far from it on confident regions."""
    distance = np.min(np.linalg.norm(grid[:, None] - x_train[None], axis=-1), axis=1)
    boundary = entropy > 0.5 * np.log(2)
    pick = lambda mask: float(np.mean(bald[mask])) if mask.any() else float("nan")
    stats = {
        "max_bald_minus_entropy": float(np.max(bald - entropy)),
        "max_entropy": float(entropy.max()),
        "max_bald": float(bald.max()),
        "bald_near_data": pick(distance < near),
        "bald_far_boundary": pick((distance > far) & boundary),
        "bald_far_confident": pick((distance > far) & ~boundary),
    }
    stats["bald_le_entropy"] = stats["max_bald_minus_entropy"] <= 1e-5
    stats["bald_high_only_far_on_boundaries"] = bool(
        stats["bald_far_boundary"] > stats["bald_near_data"]
        and stats["bald_far_boundary"] > stats["bald_far_confident"]
    )
    return stats


def check(config: dict) -> None:
    """Raise ``ValueError`` for a bad config (keys, choices) before anything runs."""
    common.check_config(config, get_config(), choices={"methods": METHODS})


def run(config: dict, out_dir, report: common.Report) -> dict:
    """Fit every method, draw the notebook's figures into ``report``, return the metrics."""
    check(config)
    out_dir, key = Path(out_dir), jax.random.key(config["seed"])
    ds = data.load("toy2d", seed=config["seed"], num_train=config["num_train"])
    xx, yy, grid = _grid(ds.x_train, config["grid_size"], config["margin"])
    dx, dy, draw_grid = _grid(ds.x_train, config["draw_grid_size"], config["margin"])
    nets, facts = _networks(config, ds, out_dir / "cache", jax.random.fold_in(key, 1))
    arrays = (ds.x_train, ds.x_test, grid, draw_grid)
    toy2d_report.introduction(report, config, ds)
    fields, metrics = {}, {}
    cache = Cache(out_dir / "cache")
    settings = {k: v for k, v in config.items() if k != "methods"}
    for name in progress.current().bar(config["methods"], desc="toy2d methods"):
        if name == "gp":
            found = cache.stage("toy2d-gp", settings, lambda: _gp_stage(config, ds, arrays, key))
            f, facts["gp"] = found["fields"], found["facts"]
        else:
            compute = lambda name=name: _nn_fields(config, nets[name], arrays)
            f = cache.stage(f"toy2d-{name}", settings | {"method": name}, compute)
        accuracy = lambda lp, y: float(calibration.accuracy(jnp.asarray(lp), jnp.asarray(y)))
        metrics[name] = {
            "accuracy": accuracy(f["test_log_probs"], ds.y_test),
            "nll": float(calibration.nll(jnp.asarray(f["test_log_probs"]), ds.y_test)),
            "fgm_accuracy": accuracy(f["fgm_log_probs"], ds.y_train),
            "bim_accuracy": accuracy(f["bim_log_probs"], ds.y_train),
            **notebook_agreement(grid, ds.x_train, f["entropy"], f["bald"]),
            **facts.get(name, {}),
        }
        fields[name] = f
        toy2d_report.method_figures(report, name, config, ds, (xx, yy), (dx, dy), f, metrics[name])
    toy2d_report.summary(report, ds, (xx, yy), fields, metrics)
    return metrics


def headline(metrics: dict) -> list[dict]:
    """Rows of the closing table: each method's test accuracy and NLL and its accuracy on the
    training points after BIM."""
    return [
        {"study": "toy2d", "method": name, "accuracy": m["accuracy"], "NLL": m["nll"]}
        | {"BIM accuracy": m["bim_accuracy"]}
        for name, m in metrics.items()
    ]


def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
    """Run this study alone: ``report.md``, ``metrics.json``, ``config.json`` and figures in
    ``out_dir``."""
    return common.run_alone(
        "bnn_jax: the 2D toy study", "toy2d", run, config, out_dir, overwrite=overwrite, check=check
    )


if __name__ == "__main__":
    cli.run(
        __doc__.splitlines()[0],
        get_config,
        main,
        default_dataset="toy2d",
        headline=lambda config, metrics: headline(metrics["toy2d"]),
    )
