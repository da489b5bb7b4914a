"""Shared machinery of the studies: configs, cached stages, the report writer, the command line.

Every study module has ``get_config(quick=False) -> dict`` and ``main(config, out_dir) -> dict``
and writes ``config.json``, ``metrics.json``, ``report.md`` and ``figures/*.png`` into the
``out_dir`` it claims (:mod:`experiments.claim`). Expensive stages (trained models, fitted
curvature, searches, predictions, attacks) are cached under ``out_dir/cache/`` by a hash of the
settings they depend on (:mod:`experiments.cache`), so a run that was interrupted resumes where
it stopped and ends with the same numbers. Progress shows through :mod:`experiments.progress`.

Several processes (``jax.distributed``; the CLI's ``--coordinator/--num-processes/
--process-id`` or ``--distributed``) run the same study with the same seeds; process 0
(``is_writer()``) claims the folder and writes the caches, the figures, ``metrics.json`` and
the report, the others write nothing.
"""

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import data, ensembles, io, laplace, losses, models, training
from experiments import claim, progress
from experiments.cache import Cache, CacheWarning, is_writer, key_data, settings_hash


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


def cached(path: Path, compute: Callable[[], Any], target: Callable[[], Any]) -> Any:
    """Load the pytree cached as ``path`` (into the structure ``target()``), or compute and
    cache it (a :class:`~experiments.cache.Cache` entry named by ``path``'s stem, whose only
    settings are the file name: the name must contain the ``config_hash`` of what ``compute``
    depends on)."""
    path = Path(path)
    return Cache(path.parent).stage(path.stem, {"file": path.name}, compute, target=target)


def train_cached(
    cache_dir: Path, name: str, settings: dict, train: Callable[[], training.TrainResult], target
) -> training.TrainResult:
    """Train with ``train()`` or reload the result cached as ``<name>-<hash(settings)>``.

    ``settings`` must hold everything the training depends on (data, model, optimiser, seed);
    ``target()`` gives variables of the right structure (e.g. ``models.init``, or its
    ``jax.eval_shape``, which compiles nothing). The history is
    cached next to the variables as strict JSON and read back as float arrays (``null``, an
    undefined value such as a diverged loss, as NaN).
    """
    cache, memo = Cache(cache_dir), []

    def run() -> training.TrainResult:
        if not memo:
            memo.append(train())
        return memo[0]

    history = cache.json(f"{name}-history", settings, lambda: run().history)
    variables = cache.stage(name, settings, lambda: run().variables, target=target)
    return training.TrainResult(
        variables, {k: np.asarray(v, dtype=float) for k, v in history.items()}
    )


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
    under ``name`` by ``settings`` plus the model, the key, the member count and the numeric
    options."""
    settings = settings | {"model": repr(model), "num_members": num_members}
    settings |= {"key": key_data(key), "epochs": epochs, "batch_size": batch_size}
    settings |= {k: v for k, v in train_kwargs.items() if isinstance(v, int | float)}
    options = dict(key=key, epochs=epochs, batch_size=batch_size, optimizer=optimizer)
    if num_members is None:
        run = lambda: training.train(
            model,
            ds.x_train,
            ds.y_train,
            progress=progress.current().bars,
            **options,
            **train_kwargs,
        )
        init = lambda: models.init(model, key, ds.input_shape)
    else:
        run = lambda: ensembles.train_ensemble(
            model, ds.x_train, ds.y_train, num_members=num_members, **options, **train_kwargs
        )
        keys = list(jax.random.split(key, num_members))  # concrete keys, not traced in init
        init = lambda: ensembles.stack([models.init(model, k, ds.input_shape) for k in keys])
    # shapes and dtypes suffice to check and restore the cached variables: nothing is compiled
    return train_cached(cache_dir, name, settings, run, lambda: jax.eval_shape(init))


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
    against ``curvature`` and ``params``) from ``<name>-<hash(settings)>.msgpack``; a file
    that does not load (damaged, or fitted with something else) is named in a
    :class:`~experiments.cache.CacheWarning`, removed and refitted."""
    path = Path(cache_dir) / f"{name}-{settings_hash(settings)}.msgpack"
    if path.exists():
        try:
            return laplace.load(path, curvature, params)
        except ValueError as err:
            warnings.warn(f"{path}: removed and refitted ({err})", CacheWarning, stacklevel=2)
            path.unlink()
    posterior = fit()
    if is_writer():
        laplace.save(path, posterior, overwrite=True)
    return posterior


def search_cached(
    cache_dir: Path,
    name: str,
    settings: dict,
    posterior: laplace.Posterior,
    objective_fn,
    *,
    prior_prec,
    scale,
    chunk_size: int | None = None,
) -> laplace.SearchResult:
    """``laplace.search`` of ``objective_fn`` over the grid ``scale x prior_prec``, or its
    result cached as ``<name>-search``: every candidate's ``(scale, prior_prec)``, objective
    value and the index of the best (NaN never picked); the tuned posterior is rebuilt from
    them. The grid is searched one ``scale`` at a time, with a progress bar."""

    def compute() -> dict:
        bar = progress.current().bar(np.asarray(scale), desc=f"search {name}")
        rows = [
            laplace.search(
                posterior, objective_fn, prior_prec=prior_prec, scale=[s], chunk_size=chunk_size
            )
            for s in bar
        ]
        found = {k: np.concatenate([getattr(r, k) for r in rows]) for k in ("scale", "prior_prec")}
        values = np.concatenate([r.value for r in rows])
        best = np.argmin(np.where(np.isnan(values), np.inf, values))
        return found | {"value": values, "best": best}

    found = Cache(cache_dir).stage(f"{name}-search", settings, compute)
    best = int(found["best"])
    tuned = posterior.replace(
        scale=jnp.asarray(found["scale"][best]), prior_prec=jnp.asarray(found["prior_prec"][best])
    )
    arrays = (jnp.asarray(found[k]) for k in ("scale", "prior_prec", "value"))
    return laplace.SearchResult(tuned, *arrays, jnp.asarray(best))


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
    split, with ``config["num_samples"]`` MC samples (or loaded from the cache,
    ``search_cached``)."""
    likelihood = losses.categorical()
    curv = structure(apply_fn, likelihood, fisher, params, ds.x_train[:1])
    prior_precs = np.geomspace(*config["prior_prec_grid"])
    fit = lambda: laplace.fit(
        curv,
        params,
        data.Batches(ds.x_train, ds.y_train, batch_size),
        key=key,
        prior_prec=config["prior_prec"] if config["prior_prec"] > 0 else prior_precs[0],
        progress=progress.current().bars,
    )
    settings = settings | {"key": key_data(key), "batch_size": batch_size}
    posterior = laplace_cached(cache_dir, name, settings, fit, curvature=curv, params=params)
    validation = laplace.validation_objective(
        objective,
        ds.x_val,
        ds.y_val,
        key=jax.random.fold_in(key, 1),
        num_samples=config["num_samples"],
        chunk_size=config.get("chunk_size"),
    )
    search = {k: config.get(k) for k in ("num_samples", "chunk_size")}
    search |= {k: config[k] for k in ("prior_prec_grid", "scale_grid")}
    return search_cached(
        cache_dir,
        name,
        settings | search | {"objective": getattr(objective, "__name__", repr(objective))},
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

    def opening(self, *paragraphs: str) -> None:
        """Paragraphs right below the title (written last, once the numbers are known)."""
        self.lines[2:2] = [line for p in paragraphs for line in (p, "")]

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


def write_results(out_dir, config: dict, metrics: dict) -> None:
    """Write ``config.json`` and ``metrics.json`` (strict JSON: ``null`` for undefined values)
    atomically into ``out_dir``, after checking that the folder is still claimed for
    ``config`` (:func:`experiments.claim.check`)."""
    if not is_writer():
        return
    out_dir = Path(out_dir)
    claim.check(out_dir, config)
    io.write_json(out_dir / "config.json", config, overwrite=True)
    io.write_json(out_dir / "metrics.json", metrics, overwrite=True)


def run_alone(
    title: str,
    name: str,
    run: Callable,
    config: dict,
    out_dir,
    *,
    overwrite=False,
    check: Callable[[dict], Any] | None = None,
):
    """``main`` of a single study: ``check(config)`` before anything is written, then, in the
    claimed ``out_dir`` (:func:`experiments.claim.claim`: refuses a folder in use or holding
    another config's results unless ``overwrite``), ``run(config, out_dir, report)`` into its
    own report and ``{name: metrics}`` into ``metrics.json``."""
    if check is not None:
        check(config)
    with claim.claim(out_dir, config, overwrite=overwrite):
        report = Report(out_dir, title)
        with progress.current().stage(name):
            metrics = {name: run(config, out_dir, report)}
        write_results(out_dir, config, metrics)
        report.write()
    return metrics


def alone_main(title: str, name: str, run: Callable, check: Callable[[dict], Any]) -> Callable:
    """A study's ``main(config, out_dir, *, overwrite=False) -> metrics``: :func:`run_alone`
    with the study's report ``title``, metrics ``name``, ``run`` and ``check``."""

    def main(config: dict, out_dir, *, overwrite: bool = False) -> dict:
        return run_alone(title, name, run, config, out_dir, overwrite=overwrite, check=check)

    main.__doc__ = f"Run the {name} study alone into ``out_dir``: {run_alone.__doc__}"
    return main
