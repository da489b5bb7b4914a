"""The main job (interim): MAP vs MC dropout on the bundled digits, judged by calibration and
out-of-distribution detection. The full study of both source documents replaces this module.

Run ``python -m experiments.study [--out results/digits] [--quick]``.
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from bnn_jax import calibration, data, io, models, ood, predictive, training, uncertainty


def get_config(quick: bool = False) -> dict:
    """Settings of the study; ``quick`` shrinks training for a smoke run."""
    return {
        "dataset": "digits",
        "seed": 0,
        "widths": [256, 256],
        "dropout_rate": 0.2,
        "epochs": 10 if quick else 60,
        "batch_size": 64,
        "prior_prec": 1.0,
        "num_samples": 30,
    }


def main(config: dict, out_dir) -> dict:
    """Train one MLP with dropout, compare its MAP and MC-dropout predictives, write metrics."""
    ds = data.load(config["dataset"], seed=config["seed"])
    model = models.MLP(tuple(config["widths"]), ds.num_classes, dropout_rate=config["dropout_rate"])
    key = jax.random.key(config["seed"])
    result = training.train(
        model,
        ds.x_train,
        ds.y_train,
        key=key,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        optimizer=optax.adam(1e-3),
        prior_prec=config["prior_prec"],
        validation=(ds.x_val, ds.y_val),
    )
    params = result.variables["params"]
    map_fn = models.make_apply_fn(model, result.variables)
    dropout_fn = models.make_dropout_apply_fn(model, result.variables)
    keys = jax.random.split(jax.random.fold_in(key, 1), config["num_samples"])

    def sample_log_probs(name, x):
        if name == "map":
            return jax.nn.log_softmax(map_fn(params, x))[None]
        return predictive.sample_log_probs(lambda k, xb: dropout_fn(params, xb, k), keys, x)

    patches = data.load_ood(ds, "patches", seed=config["seed"])
    metrics = {}
    for name in ("map", "mc_dropout"):
        samples = sample_log_probs(name, jnp.asarray(ds.x_test))
        log_probs = uncertainty.mean_log_probs(samples)
        scores_in = uncertainty.predictive_entropy(samples)
        scores_out = uncertainty.predictive_entropy(sample_log_probs(name, jnp.asarray(patches)))
        metrics[name] = {
            "accuracy": float(calibration.accuracy(log_probs, ds.y_test)),
            "nll": float(calibration.nll(log_probs, ds.y_test)),
            "ece": float(calibration.ece(log_probs, ds.y_test)),
            "auroc_entropy_patches": float(ood.auroc(scores_in, scores_out)),
        }
    out_dir = Path(out_dir)
    io.write_json(out_dir / "config.json", config, overwrite=True)
    io.write_json(out_dir / "metrics.json", metrics, overwrite=True)
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default results/<dataset>)")
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    args = parser.parse_args()
    cfg = get_config(args.quick)
    out = args.out or f"results/{cfg['dataset']}"
    for method, values in main(cfg, out).items():
        print(method, {k: round(v, 4) for k, v in values.items()})
    print(f"wrote {out}/metrics.json")
