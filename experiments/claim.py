"""Claimed output folders: one run, one config per folder, never two at once.

A study claims its ``out_dir`` before any work: it takes an exclusive ``fcntl.flock`` on
``out_dir/.lock`` (held until the run ends, released on exit even after an exception or a kill,
since the kernel drops the lock of a dead process) and then writes the marker
``out_dir/claim.json`` with the hash of its config. So

- a second run into a folder that a running study holds fails at once (:class:`ClaimError`);
- a folder whose marker names another config (finished, or left by an interrupted run) is
  refused unless ``overwrite``, which removes that config's results (``metrics.json``,
  ``config.json``, ``report.md``, ``figures/``; the cache is keyed by settings and kept);
- the same config after an interruption resumes (from the cache);
- results are written only after :func:`check` confirms the marker is still this config's.

Folders written before markers existed are judged by their ``config.json``.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from bnn_jax import io
from experiments.cache import is_writer, settings_hash

__all__ = ["Claim", "ClaimError", "check", "claim"]

MARKER, LOCK = "claim.json", ".lock"
RESULTS = ("metrics.json", "config.json", "report.md", "figures")


class ClaimError(FileExistsError):
    """The output folder belongs to another run or another config."""


class Claim(NamedTuple):
    out_dir: Path
    config_hash: str


def config_hash(config: dict) -> str:
    """The hash that identifies a config in the marker."""
    return settings_hash(config)


@contextlib.contextmanager
def claim(out_dir, config: dict, *, overwrite: bool = False) -> Iterator[Claim]:
    """Hold ``out_dir`` for ``config`` inside the ``with`` block (see the module docstring).

    Raises:
      ClaimError: another process holds the folder, or it holds another config's results or
        interrupted run and ``overwrite`` is false; nothing in the folder is changed then.
    """
    out_dir = Path(out_dir)
    mine = config_hash(config)
    if not is_writer():  # a jax.distributed run: process 0 claims the folder for all
        yield Claim(out_dir, mine)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            theirs = _claimed_hash(out_dir)
            same = "the same config" if theirs == mine else f"config {theirs}"
            raise ClaimError(
                f"out_dir: {out_dir} is in use by a running study (process {holder}, {same}); "
                "wait for it to finish or choose another --out"
            ) from None
        theirs = _claimed_hash(out_dir)
        if theirs not in (None, mine):
            if not overwrite:
                raise ClaimError(
                    f"out_dir: {out_dir} holds the results (or an interrupted run) of a "
                    f"different config ({theirs}; this config is {mine}); choose another --out "
                    "or pass --overwrite (overwrite=True) to replace them"
                )
            _remove_results(out_dir)
        io.write_json(out_dir / MARKER, {"config_hash": mine}, overwrite=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield Claim(out_dir, mine)
    finally:
        os.close(fd)  # releases the lock


def check(out_dir, config: dict) -> None:
    """Raise :class:`ClaimError` unless ``out_dir``'s marker names ``config`` (call it right
    before writing results: another run may have taken the folder meanwhile; only process 0
    of a ``jax.distributed`` run writes, so the others do not check)."""
    if not is_writer():
        return
    theirs = _claimed_hash(Path(out_dir))
    if theirs != config_hash(config):
        raise ClaimError(
            f"out_dir: {out_dir} is now claimed by {'no run' if theirs is None else theirs}, "
            f"not by this run's config {config_hash(config)}; its results were not written"
        )


def _claimed_hash(out_dir: Path) -> str | None:
    """The config hash of the marker, else of a legacy ``config.json``, else ``None``."""
    marker, legacy = out_dir / MARKER, out_dir / "config.json"
    try:
        if marker.exists():
            return str(json.loads(marker.read_text())["config_hash"])
        if legacy.exists():
            return config_hash(json.loads(legacy.read_text()))
    except (ValueError, KeyError, TypeError):
        return "unreadable"
    return None


def _remove_results(out_dir: Path) -> None:
    for name in RESULTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
