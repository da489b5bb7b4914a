"""Checkpoints (flax msgpack) and JSON results, written atomically and never silently replaced.

Files are written to a temporary file in the target folder and renamed over the target, so an
interrupted write never leaves a truncated file. Nothing here uses pickle.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization


def write_bytes_atomic(path, payload: bytes, *, overwrite: bool = False) -> Path:
    """Write ``payload`` to ``path`` via a temporary file and ``os.replace``.

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path, tree: Any, *, overwrite: bool = False) -> Path:
    """Save a pytree of arrays (e.g. flax variables) as msgpack (``flax.serialization``)."""
    state = serialization.to_state_dict(jax.device_get(tree))
    return write_bytes_atomic(path, serialization.msgpack_serialize(state), overwrite=overwrite)


def load_checkpoint(path, target: Any) -> Any:
    """Load a checkpoint into the structure of ``target`` (e.g. freshly initialised variables).

    Raises ``ValueError`` naming the first entry whose path, shape or dtype does not match
    ``target``, instead of returning a tree that fails later.
    """
    restored = serialization.msgpack_restore(Path(path).read_bytes())
    expected = serialization.to_state_dict(target)
    _check_same_structure(expected, restored, path)
    return serialization.from_state_dict(target, restored)


def _check_same_structure(expected, restored, path) -> None:
    flat_expected = dict(_flatten(expected))
    flat_restored = dict(_flatten(restored))
    missing = sorted(flat_expected.keys() - flat_restored.keys())
    extra = sorted(flat_restored.keys() - flat_expected.keys())
    if missing:
        raise ValueError(f"checkpoint {path}: missing entries the model expects: {missing}")
    if extra:
        raise ValueError(f"checkpoint {path}: has entries the model does not have: {extra}")
    for name in sorted(flat_expected):
        want, got = np.shape(flat_expected[name]), np.shape(flat_restored[name])
        if want != got:
            raise ValueError(
                f"checkpoint {path}: entry {name!r} has shape {got}, model expects {want}"
            )


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}")
    else:
        yield prefix, tree


def write_json(path, obj: Any, *, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically; numpy/JAX scalars and arrays become lists."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n"
    return write_bytes_atomic(path, text.encode(), overwrite=overwrite)


def _to_builtin(value):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()
