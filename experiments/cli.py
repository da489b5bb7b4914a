"""The command line shared by the study modules (``python -m experiments.<study>``).

``--out`` (default ``results/<dataset>/``), ``--quick``, ``--config FILE`` (a JSON object of
config keys), ``--dataset``, ``--seed`` (the one seed of the whole run), ``--overwrite``
(replace another config's results in ``--out``), ``--quiet`` (print nothing but errors and
warnings) and the multi-process launch (``--coordinator HOST:PORT --num-processes N
--process-id I`` on each host, or ``--distributed`` where the cluster is detected).
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from experiments import common, progress
from experiments.claim import ClaimError


def run(
    description: str,
    get_config: Callable,
    main: Callable,
    *,
    default_dataset: str,
    headline: Callable[[dict, dict], list] | None = None,
    argv: list[str] | None = None,
) -> None:
    """The command line shared by the study modules: ``--out``, ``--quick``, ``--config``,
    ``--dataset``, ``--seed``, ``--overwrite``, ``--quiet``. Shows progress (unless quiet),
    ends with the table(s) ``headline(config, metrics)`` (a list of rows, or a list of such
    lists: one table each) and the report's path;
    a folder claimed by another run or config ends it with the reason and exit status 1."""
    config, out, args = parse_args(description, get_config, default_dataset, argv)
    with progress.use(progress.Progress(quiet=args.quiet)) as shown:
        try:
            metrics = main(config, out, overwrite=args.overwrite)
        except ClaimError as err:
            sys.exit(f"error: {err}")
        if headline is not None:
            tables = headline(config, metrics)
            for rows in tables if tables and isinstance(tables[0], list) else [tables]:
                shown.table(rows)
        shown.print(f"report: {out / 'report.md'}")


def parse_args(description: str, get_config: Callable, default_dataset: str, argv=None):
    """``(config, out_dir, args)`` from the command line ``argv`` (default ``sys.argv``): the
    defaults of ``get_config(quick)``, then the keys of ``--config FILE`` (a JSON object), then
    ``--dataset`` and ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=None, help="output folder (default results/<dataset>/)")
    parser.add_argument(
        "--quick", action="store_true", help="small settings; every figure still drawn"
    )
    parser.add_argument(
        "--config", default=None, help="JSON file of config keys replacing the defaults"
    )
    parser.add_argument("--dataset", default=None, help=f"data set (default {default_dataset})")
    parser.add_argument(
        "--seed", type=int, default=None, help="the one seed of data, training and sampling"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace results of a different config in --out"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors (and warnings)"
    )
    parser.add_argument(
        "--coordinator", default=None, help="jax.distributed: process 0's HOST:PORT"
    )
    parser.add_argument("--num-processes", type=int, default=None, help="jax.distributed")
    parser.add_argument("--process-id", type=int, default=None, help="jax.distributed")
    parser.add_argument(
        "--distributed", action="store_true", help="join jax.distributed (cluster detected)"
    )
    args = parser.parse_args(argv)
    if args.distributed or args.coordinator is not None:
        common.init_distributed(args.coordinator, args.num_processes, args.process_id)
    config = get_config(quick=args.quick)
    if args.config is not None:
        try:
            overrides = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as err:
            parser.error(f"--config: cannot read {args.config} as JSON ({err})")
        if not isinstance(overrides, dict):
            parser.error(f"--config: expected a JSON object in {args.config}")
        config |= overrides
    if args.dataset is not None:
        config["dataset"] = args.dataset
    if args.seed is not None:
        config["seed"] = args.seed
    return config, Path(args.out or f"results/{config.get('dataset', default_dataset)}"), args
