"""One family member at one seed: train, fit, tune and evaluate every method (cached).

:func:`run_seed` returns the member's scores per method (accuracy, NLL, ECE, Brier on the test
split, entropy AUROC per OOD set, the FGSM sweep and its entropy slope), the tuned values and
diagnostics of every Laplace posterior, and, at the first seed, the arrays the figures need
(test log-probabilities, entropies per set). Method names: the other methods by their
``methods.METHODS`` names, Laplace recipes as ``<structure>_<recipe>`` (``kfac_post``,
``kfac_redux``, ``kfac_glm``) and their side links (``kfac_redux_probit``, ``kfac_glm_mclink``).
"""

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration
from experiments import common, family, progress, recipes
from experiments import methods as predictors
from experiments.cache import Cache, key_data

LANDSCAPE_POSTERIORS = {"diag_laplace": "diag", "kfac_laplace": "kfac"}


class SeedRun(NamedTuple):
    result: dict
    arrays: dict
    dataset: object
    model: object
    variables: dict
    posteriors: dict
    settings: dict


def _settings(config: dict, spec: dict, seed: int) -> dict:
    """Everything a member's results at one seed depend on."""
    keys = family.default_config().keys() - {"family", "reference", "seed", "num_seeds"}
    return {k: config[k] for k in sorted(keys)} | {"spec": spec, "seed": seed, "v": 4}


def run_seed(
    config: dict, spec: dict, seed: int, cache_dir: Path, archs: dict, datasets: dict
) -> SeedRun:
    """Every method of ``spec`` at ``seed`` (see the module docstring); ``archs`` holds the
    :class:`recipes.Arch` of each architecture across seeds (compiled functions are shared),
    ``datasets`` each seed's ``family.load_data`` across members (generated once)."""
    if seed not in datasets:
        datasets[seed] = family.load_data(config, seed)
    ds, sets = datasets[seed]
    key, bars = jax.random.key(seed), progress.current().bars
    base = family.train_settings(config, spec, seed)

    def train(name, model, train_key, **kwargs):
        return common.train_model(
            cache_dir,
            f"{spec['name']}-s{seed}-{name}",
            base | {"method": name},
            model,
            ds,
            key=train_key,
            optimizer=family.optimizer(config),
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            **kwargs,
        )

    model = family.network(spec, ds.num_classes)
    trained = train(
        "map", model, predictors.method_key(key, "map"), prior_prec=config["prior_prec"]
    )
    params = trained.variables["params"]
    if spec["name"] not in archs:
        archs[spec["name"]] = recipes.architecture(
            spec["name"], model, params, ds.x_train, config["fisher_samples"]
        )
    arch = archs[spec["name"]]
    posteriors = {}
    for structure in config["structures"]:
        fit_key = predictors.method_key(key, f"{structure}-fit")
        posteriors[structure] = common.laplace_cached(
            cache_dir,
            f"{spec['name']}-s{seed}-{structure}",
            base | {"structure": structure, "fisher_samples": config["fisher_samples"]},
            lambda s=structure, k=fit_key: recipes.fit(
                arch, s, params, ds, k, config["prior_prec"], bars
            ),
            curvature=arch.curvatures[structure],
            params=params,
        )
    settings = _settings(config, spec, seed) | {"key": key_data(key)}
    cache, memo = Cache(cache_dir), []

    def compute():
        if not memo:
            memo.append(
                _evaluate_all(config, spec, arch, ds, sets, key, trained, posteriors, train)
            )
        return memo[0]

    result = cache.json(f"{spec['name']}-s{seed}-results", settings, lambda: compute()[0])
    arrays = {}
    if seed == config["seed"]:
        arrays = cache.stage(f"{spec['name']}-s{seed}-arrays", settings, lambda: compute()[1])
    landscape = {name: posteriors[s] for name, s in LANDSCAPE_POSTERIORS.items() if s in posteriors}
    return SeedRun(result, arrays, ds, model, trained.variables, landscape, settings)


def _evaluate_all(config, spec, arch, ds, sets, key, trained, posteriors, train):
    """``(result, arrays)`` of one member and seed."""
    labels, ood_sets = ds.y_test[: config["num_test"]], config["ood_sets"]
    n_attack = min(config["attack_num"], len(labels))
    x_attack, y_attack = sets["test"][:n_attack], labels[:n_attack]
    eps, bins = config["fgsm_eps"], config["num_bins"]
    methods, tuned, arrays = {}, {}, {"test_log_probs": {}, "entropy": {}}

    def record(name, evaluated, sweep=None):
        methods[name] = recipes.scores(evaluated, labels, ood_sets, bins, ds.y_val)
        if sweep is not None:
            methods[name]["fgsm"] = sweep
        arrays["test_log_probs"][name] = evaluated.test_log_probs.astype(np.float32)
        arrays["entropy"][name] = {s: v.astype(np.float32) for s, v in evaluated.entropy.items()}

    params = trained.variables["params"]
    logits = {s: arch.apply_fn(params, jnp.asarray(x)) for s, x in sets.items()}
    temperature = float(
        calibration.fit_temperature(arch.apply_fn(params, jnp.asarray(ds.x_val)), ds.y_val)
    )
    point = recipes.point_log_probs(arch.apply_fn)
    for name, t in (("map", 1.0), ("temperature", temperature)):
        if name in config["methods"]:
            samples = {s: jax.nn.log_softmax(f / t, axis=-1)[None] for s, f in logits.items()}
            sweep = recipes.fgsm_sweep(point, (params, t), x_attack, y_attack, eps)
            record(name, recipes.from_samples(samples), sweep)
    tuned["temperature"] = temperature
    train_lp = jax.nn.log_softmax(arch.apply_fn(params, jnp.asarray(ds.x_train)), axis=-1)
    tuned["map_train_accuracy"] = float(calibration.accuracy(train_lp, jnp.asarray(ds.y_train)))

    recipe_names = spec.get("recipes", config["recipes"])
    bar = progress.current().bar(
        total=len(config["structures"]) * len(recipe_names), desc="recipes"
    )
    for structure in config["structures"]:
        p0 = posteriors[structure]
        tuned[f"{structure}_prior"] = recipes.describe(p0)
        k = predictors.method_key(key, structure)
        for recipe in recipe_names:
            name, rk = f"{structure}_{recipe}", jax.random.fold_in(k, len(recipe))
            found = None
            if recipe == "redux":
                post = recipes.redux(p0, config["marglik_steps"])
            else:
                found = recipes.search(p0, recipe, ds, jax.random.fold_in(rk, 1), config)
                post = found.posterior
            tuned[name] = recipes.describe(post, found)
            eval_key = jax.random.fold_in(rk, 2)
            if recipe == "post":
                draws = jax.random.split(jax.random.fold_in(rk, 3), config["num_samples"])
                sweep = recipes.fgsm_sweep(
                    recipes.mc_log_probs, (post, draws), x_attack, y_attack, eps
                )
                record(name, recipes.evaluate(post, ["mc"], sets, eval_key, config)["mc"], sweep)
                bar.update()
                continue
            sweep = recipes.fgsm_sweep(recipes.probit_log_probs, (post,), x_attack, y_attack, eps)
            links = recipes.evaluate(post, ["mclink", "probit"], sets, eval_key, config)
            exact, probit = links["mclink"], links["probit"]
            main, side = (exact, probit) if recipe == "redux" else (probit, exact)
            record(name, main, sweep)
            record(f"{name.rsplit('_', 1)[0]}_{recipes.SIDE_LINKS[recipe]}", side)
            bar.update()
    bar.close()

    study = family.study_for(config, ds, spec, train)
    for name in config["methods"]:
        if name in ("map", "temperature"):
            continue
        built = predictors.METHODS[name](study, key)
        samples = {s: built.predictor.sample_log_probs(jnp.asarray(x)) for s, x in sets.items()}
        record(name, recipes.from_samples(samples))
        if built.facts:
            tuned[name] = built.facts
    result = {"methods": methods, "tuned": tuned, "num_test": len(labels), "attack_num": n_attack}
    return result, arrays
