"""Checkpoints (flax msgpack) and JSON results, written atomically and never silently replaced.

Files are written to a temporary file in the target folder and renamed over the target, so an
interrupted write never leaves a truncated file; they get the permissions of a file created
with ``open(path, "w")`` (``0o666`` less the process umask). Nothing here uses pickle.

Checkpoint format (version 1): one msgpack map
``{"bnn_jax_checkpoint": 1, "sha256": <32 bytes>, "payload": <bytes>}`` whose payload is
``flax.serialization.msgpack_serialize`` of the tree's state dict and whose ``sha256`` is the
SHA-256 digest of the payload, so a truncated or overwritten file is detected on loading.
Files of the earlier format (the bare payload, no checksum) still load, with a warning that
their integrity cannot be checked.
"""

import errno
import hashlib
import json
import math
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

__all__ = ["load_checkpoint", "save_checkpoint", "write_bytes_atomic", "write_json"]

FORMAT_KEY = "bnn_jax_checkpoint"
FORMAT_VERSION = 1


def write_bytes_atomic(path, payload: bytes, *, overwrite: bool = False) -> Path:
    """Write ``payload`` to ``path`` via a temporary file and ``os.replace``.

    The file gets the mode ``0o666 & ~umask`` of a normally created file. Raises
    ``FileExistsError`` if ``path`` exists and ``overwrite`` is false, and an ``OSError``
    naming ``path`` when it cannot be written (missing permission, a parent that is a file).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {path} exists; pass overwrite=True to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, f"cannot write {path}: {parent} is a file, not a folder"
                )
            break
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = err.strerror or str(err)
        raise type(err)(err.errno or errno.EIO, f"cannot write {path}: {reason}") from err
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file next to ``path``, opened for writing with mode ``0o666`` (less the umask,
    which the kernel applies, as for ``open``), unlike ``tempfile.mkstemp``'s ``0o600``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def save_checkpoint(path, tree: Any, *, overwrite: bool = False) -> Path:
    """Save a pytree of arrays (e.g. flax variables) as a checksummed msgpack checkpoint.

    Raises ``ValueError`` naming the first entry that is not an array or a number (a function,
    a string, an object array), before anything is written.
    """
    state = serialization.to_state_dict(jax.device_get(tree))
    for name, leaf in _flatten(state):
        _check_leaf(name, leaf)
    payload = serialization.msgpack_serialize(state)
    wrapped = serialization.msgpack_serialize(
        {FORMAT_KEY: FORMAT_VERSION, "sha256": hashlib.sha256(payload).digest(), "payload": payload}
    )
    return write_bytes_atomic(path, wrapped, overwrite=overwrite)


def _check_leaf(name: str, leaf: Any) -> None:
    numeric = isinstance(leaf, np.ndarray | np.generic) and leaf.dtype.kind in "biufc"
    if not (numeric or isinstance(leaf, bool | int | float | complex)):
        raise ValueError(
            f"tree: entry {name or '/'!r} is a {type(leaf).__name__} ({leaf!r:.60}); "
            "expected arrays or numbers"
        )


def load_checkpoint(path, target: Any) -> Any:
    """Load a checkpoint into the structure of ``target`` (e.g. freshly initialised variables).

    Raises ``ValueError`` naming the file when it is damaged (truncated, overwritten: the
    SHA-256 of its payload does not match) or not a checkpoint at all, and naming the first
    entry whose path, shape or dtype does not match ``target``, instead of returning a tree
    that fails later. A float16 entry does not silently become the float32 of ``target``.
    """
    path = Path(path)
    restored = _decode(path, path.read_bytes())
    expected = serialization.to_state_dict(target)
    _check_same_structure(expected, restored, path)
    return serialization.from_state_dict(target, restored)


def _decode(path: Path, data: bytes) -> Any:
    damaged = f"checkpoint {path}: damaged or not a bnn_jax checkpoint"
    try:
        outer = serialization.msgpack_restore(data)
    except Exception:  # msgpack reports damage as many different errors
        raise ValueError(f"{damaged} ({len(data)} bytes that are not valid msgpack)") from None
    if not isinstance(outer, dict):
        raise ValueError(f"{damaged} (holds a {type(outer).__name__}, not a map)")
    if FORMAT_KEY not in outer:
        warnings.warn(
            f"checkpoint {path}: written without a checksum (an earlier bnn_jax format), so "
            "damage cannot be detected; save it again to add one",
            stacklevel=3,
        )
        return outer
    if outer.get(FORMAT_KEY) != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format version {outer.get(FORMAT_KEY)!r}, this bnn_jax reads "
            f"version {FORMAT_VERSION}"
        )
    payload, digest = outer.get("payload"), outer.get("sha256")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"{damaged} (its SHA-256 checksum does not match its content)")
    try:
        restored = serialization.msgpack_restore(payload)
    except Exception:
        raise ValueError(f"{damaged} (its checksummed content is not valid msgpack)") from None
    return restored


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
        want, got = flat_expected[name], flat_restored[name]
        if np.shape(want) != np.shape(got):
            raise ValueError(
                f"checkpoint {path}: entry {name!r} has shape {np.shape(got)}, model expects "
                f"{np.shape(want)}"
            )
        if _dtype(want) != _dtype(got):
            raise ValueError(
                f"checkpoint {path}: entry {name!r} has dtype {_dtype(got)}, model expects "
                f"{_dtype(want)}"
            )


def _dtype(leaf) -> np.dtype:
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}")
    else:
        yield prefix, tree


def write_json(path, obj: Any, *, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented, strict JSON atomically.

    numpy/JAX scalars and arrays become numbers and lists; ``NaN``, ``inf`` and ``-inf`` (which
    JSON cannot represent) become ``null``, so every standard parser reads the file and
    ``json.loads`` never meets a bare ``NaN``. Read ``null`` back as "undefined".
    """
    return write_bytes_atomic(path, (json_text(obj) + "\n").encode(), overwrite=overwrite)


def json_text(obj: Any) -> str:
    """The strict JSON text :func:`write_json` writes (``null`` for non-finite numbers)."""
    return json.dumps(_strict(obj), indent=2, sort_keys=True, default=_to_builtin, allow_nan=False)


def _strict(value):
    """``value`` with containers rebuilt, arrays as lists and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        return _strict(np.asarray(value).tolist())
    return value


def _to_builtin(value):
    """Other numeric values JSON does not know (e.g. numpy-convertible scalars) via numpy."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return _strict(array.tolist())
