"""Shared machinery of the studies: configs, caching by config hash, the report writer.

Every study module has ``get_config(quick=False) -> dict`` and ``main(config, out_dir) -> dict``
and writes ``config.json``, ``metrics.json``, ``report.md`` and ``figures/*.png`` into
``out_dir``. Expensive stages (trained models, fitted curvature) are cached under
``out_dir/cache/`` by a hash of the settings they depend on, so a run that was interrupted
resumes where it stopped and ends with the same numbers.

Several processes (``jax.distributed``; ``cli``'s ``--coordinator/--num-processes/
--process-id`` or ``--distributed`` under SLURM / Open MPI) run the same study with the same
seeds; process 0 (``is_writer()``) writes the caches, the figures, ``metrics.json`` and the
report, the others write nothing.
"""

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import jax
import numpy as np

from bnn_jax import data, ensembles, io, laplace, losses, models, training


def is_writer() -> bool:
    """Whether this process writes the study's files: process 0 of a ``jax.distributed`` run,
    or the only process."""
    return jax.process_index() == 0


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join ``jax.distributed`` (multi-controller JAX: one process per host, every process
    runs the same script). With no arguments the cluster is detected from the environment
    (SLURM, Open MPI, Kubernetes, Cloud TPU)."""
    jax.distributed.initialize(coordinator, num_processes, process_id)


def check_config(config: dict, defaults: dict, *, choices: dict[str, tuple] | None = None) -> dict:
    """Raise ``ValueError`` for keys not in ``defaults`` (listing the valid keys) and for values
    outside ``choices[key]`` (listing the valid values; list-valued settings are checked per
    element). Returns ``config`` unchanged."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; valid keys are {sorted(defaults)}")
    for key, valid in (choices or {}).items():
        values = config.get(key, defaults[key])
        for value in values if isinstance(values, list | tuple) else [values]:
            if value not in valid:
                raise ValueError(
                    f"config[{key!r}]: unknown value {value!r}; expected one of {list(valid)}"
                )
    return config


def config_hash(settings: Any) -> str:
    """A short stable hash of JSON-serialisable settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(path: Path, compute: Callable[[], Any], target: Callable[[], Any]) -> Any:
    """Load the pytree cached at ``path`` (into the structure ``target()``), or compute and
    cache it. The file name should contain the ``config_hash`` of what ``compute`` depends on."""
    if path.exists():
        return io.load_checkpoint(path, target())
    value = compute()
    if is_writer():
        io.save_checkpoint(path, value)
    return value


def train_cached(
    cache_dir: Path, name: str, settings: dict, train: Callable[[], training.TrainResult], target
) -> training.TrainResult:
    """Train with ``train()`` or reload the result cached as ``<name>-<hash(settings)>``.

    ``settings`` must hold everything the training depends on (data, model, optimiser, seed);
    ``target()`` builds variables of the right structure (e.g. ``models.init``). The history is
    cached next to the variables as JSON.
    """
    stem = Path(cache_dir) / f"{name}-{config_hash(settings)}"
    history_path = stem.with_suffix(".history.json")
    if history_path.exists():
        history = {k: np.asarray(v) for k, v in json.loads(history_path.read_text()).items()}
        variables = io.load_checkpoint(stem.with_suffix(".msgpack"), target())
        return training.TrainResult(variables, history)
    result = train()
    if is_writer():
        io.save_checkpoint(stem.with_suffix(".msgpack"), result.variables, overwrite=True)
        io.write_json(history_path, result.history, overwrite=True)
    return result


def train_model(
    cache_dir: Path,
    name: str,
    settings: dict,
    model,
    ds,
    *,
    key,
    optimizer,
    epochs: int,
    batch_size: int,
    num_members: int | None = None,
    **train_kwargs,
) -> training.TrainResult:
    """Train ``model`` (or a deep ensemble of ``num_members``) on ``ds``'s training split, cached
    under ``name`` by ``settings`` plus the model, the member count and the numeric options."""
    settings = settings | {"model": repr(model), "num_members": num_members}
    settings |= {k: v for k, v in train_kwargs.items() if isinstance(v, int | float)}
    options = dict(key=key, epochs=epochs, batch_size=batch_size, optimizer=optimizer)
    if num_members is None:
        run = lambda: training.train(
            model, ds.x_train, ds.y_train, progress=False, **options, **train_kwargs
        )
        target = lambda: models.init(model, key, ds.input_shape)
    else:
        run = lambda: ensembles.train_ensemble(
            model, ds.x_train, ds.y_train, num_members=num_members, **options, **train_kwargs
        )
        keys = jax.random.split(key, num_members)
        target = lambda: ensembles.stack([models.init(model, k, ds.input_shape) for k in keys])
    return train_cached(cache_dir, name, settings, run, target)


def laplace_cached(
    cache_dir: Path,
    name: str,
    settings: dict,
    fit: Callable[[], laplace.Posterior],
    *,
    curvature,
    params,
) -> laplace.Posterior:
    """Fit a Laplace posterior with ``fit()`` or load it (``laplace.load``, which checks it
    against ``curvature`` and ``params``) from ``<name>-<hash(settings)>.msgpack``."""
    path = Path(cache_dir) / f"{name}-{config_hash(settings)}.msgpack"
    if path.exists():
        return laplace.load(path, curvature, params)
    posterior = fit()
    if is_writer():
        laplace.save(path, posterior, overwrite=True)
    return posterior


def tuned_laplace(
    config: dict,
    ds,
    cache_dir: Path,
    name: str,
    settings: dict,
    apply_fn,
    params,
    *,
    structure,
    fisher,
    batch_size: int,
    objective,
    key,
) -> laplace.SearchResult:
    """The Laplace posterior of ``structure`` (a ``methods.LAPLACE_STRUCTURES`` entry,
    ``(apply_fn, likelihood, fisher, params, x_example) -> Curvature``) at the MAP ``params``:
    fitted on the training split with ``config["prior_prec"]`` (the first grid value when that
    is 0: a posterior needs tau > 0), or loaded from the cache (``laplace_cached``), then
    ``(N, tau)`` chosen by a grid search over ``config["scale_grid"]`` x
    ``config["prior_prec_grid"]`` of ``objective`` (e.g. ``calibration.nll``) on the validation
    split, with ``config["num_samples"]`` MC samples."""
    likelihood = losses.categorical()
    curv = structure(apply_fn, likelihood, fisher, params, ds.x_train[:1])
    prior_precs = np.geomspace(*config["prior_prec_grid"])
    fit = lambda: laplace.fit(
        curv,
        params,
        data.Batches(ds.x_train, ds.y_train, batch_size),
        key=key,
        prior_prec=config["prior_prec"] if config["prior_prec"] > 0 else prior_precs[0],
        progress=False,
    )
    posterior = laplace_cached(cache_dir, name, settings, fit, curvature=curv, params=params)
    validation = laplace.validation_objective(
        objective,
        ds.x_val,
        ds.y_val,
        key=jax.random.fold_in(key, 1),
        num_samples=config["num_samples"],
        chunk_size=config.get("chunk_size"),
    )
    return laplace.search(
        posterior,
        validation,
        prior_prec=prior_precs,
        scale=np.geomspace(*config["scale_grid"]),
        chunk_size=4,
    )


class Report:
    """A Markdown report with figures saved next to it (``figures/<name>.png``)."""

    def __init__(self, out_dir, title: str):
        self.out_dir = Path(out_dir)
        self.lines = [f"# {title}", ""]
        self.figures: list[str] = []

    def text(self, *paragraphs: str) -> None:
        for paragraph in paragraphs:
            self.lines += [paragraph, ""]

    def section(self, title: str, level: int = 2) -> None:
        self.lines += [f"{'#' * level} {title}", ""]

    def figure(self, name: str, fig, caption: str, *, dpi: int = 100) -> None:
        """Save ``fig`` as ``figures/<name>.png`` (atomically) and inline it with its caption."""
        import io as _io

        import matplotlib.pyplot as plt

        if is_writer():
            buffer = _io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            io.write_bytes_atomic(
                self.out_dir / "figures" / f"{name}.png", buffer.getvalue(), overwrite=True
            )
        plt.close(fig)
        self.figures.append(name)
        self.lines += [f"![{name}](figures/{name}.png)", "", f"*{caption}*", ""]

    def table(self, header: list[str], rows: list[list[Any]], *, digits: int = 3) -> None:
        fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
        self.lines.append("")

    def markdown(self) -> str:
        return "\n".join(self.lines)

    def write(self, name: str = "report.md") -> Path:
        """Write the report (process 0 only, see ``is_writer``); returns its path."""
        path = self.out_dir / name
        if is_writer():
            io.write_bytes_atomic(path, self.markdown().encode(), overwrite=True)
        return path


def check_out_dir(out_dir, config: dict, *, overwrite: bool = False) -> None:
    """Refuse to write over the results of a different config: raise ``FileExistsError`` if
    ``out_dir/config.json`` exists and differs from ``config`` (rerunning the same config, e.g.
    after an interruption, is allowed; ``overwrite=True`` replaces whatever is there)."""
    path = Path(out_dir) / "config.json"
    if overwrite or not path.exists():
        return
    if json.loads(path.read_text()) != json.loads(json.dumps(config, default=str)):
        raise FileExistsError(
            f"out_dir: {out_dir} holds the results of a different config; choose another "
            "--out or pass --overwrite (overwrite=True) to replace them"
        )


def write_results(out_dir, config: dict, metrics: dict) -> None:
    """Write ``config.json`` and ``metrics.json`` atomically into ``out_dir`` (process 0 only)."""
    if not is_writer():
        return
    out_dir = Path(out_dir)
    io.write_json(out_dir / "config.json", config, overwrite=True)
    io.write_json(out_dir / "metrics.json", metrics, overwrite=True)


def run_alone(title: str, name: str, run: Callable, config: dict, out_dir, *, overwrite=False):
    """``main`` of a single study: ``run(config, out_dir, report)`` into its own report, then
    ``{name: metrics}`` into ``metrics.json``; refuses to replace another config's results."""
    check_out_dir(out_dir, config, overwrite=overwrite)
    report = Report(out_dir, title)
    metrics = {name: run(config, out_dir, report)}
    write_results(out_dir, config, metrics)
    report.write()
    return metrics


def cli(description: str, get_config: Callable, main: Callable, *, default_dataset: str) -> None:
    """The command line shared by the study modules: ``--out``, ``--quick``, ``--dataset``,
    ``--seed``, and the multi-process launch (``--coordinator HOST:PORT --num-processes N
    --process-id I`` on each host, or ``--distributed`` where the cluster is detected)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=None, help="output folder (default results/<dataset>/)")
    parser.add_argument(
        "--quick", action="store_true", help="small settings; every figure still drawn"
    )
    parser.add_argument("--dataset", default=None, help=f"data set (default {default_dataset})")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of data, training and sampling"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace results of a different config in --out"
    )
    parser.add_argument("--coordinator", default=None, help="process 0's HOST:PORT")
    parser.add_argument("--num-processes", type=int, default=None, help="jax.distributed")
    parser.add_argument("--process-id", type=int, default=None, help="jax.distributed")
    parser.add_argument(
        "--distributed", action="store_true", help="join jax.distributed (cluster detected)"
    )
    args = parser.parse_args()
    if args.distributed or args.coordinator is not None:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    config = get_config(quick=args.quick)
    if args.dataset is not None:
        config["dataset"] = args.dataset
    if args.seed is not None:
        config["seed"] = args.seed
    out = Path(args.out or f"results/{config.get('dataset', default_dataset)}")
    main(config, out, overwrite=args.overwrite)
    if is_writer():
        print(f"wrote {out / 'report.md'}")
