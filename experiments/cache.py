"""A cache of expensive stage results, keyed by a name and a hash of their settings, never
loaded silently.

An entry ``<name>-<hash(settings)>`` under the cache folder is two files:

- the value: ``<entry>.msgpack``, a checksummed checkpoint of a pytree of arrays
  (:mod:`bnn_jax.io`), or ``<entry>.json``, strict JSON (``NaN`` stored as ``null``);
- its record ``<value file>.record.json``: the settings it came from, the SHA-256 of the value
  file and, for trees, the layout of the leaves (path, shape, dtype). The record is written
  after the value (each atomically), so an entry exists only once both are complete.

Loading checks that the record parses, that its settings equal the requested ones (not only
their hash), that the value file's SHA-256 is the recorded one, and (for trees) the
checkpoint's own checksum, shapes and dtypes. An entry failing any check is named in a
:class:`CacheWarning`, removed and recomputed: a damaged cache never changes a result and never
makes every rerun fail the same way. A freshly computed value is returned as it reads back from
the cache (NumPy arrays), so a resumed run computes with exactly what a fresh run computed with.

Example:
  >>> cache = Cache(out_dir / "cache")
  >>> sweep = cache.stage("fgsm-map", {"eps": eps, "seed": 0}, lambda: {"accuracy": acc(eps)})
"""

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from bnn_jax import io

__all__ = ["Cache", "CacheWarning", "fingerprint", "is_writer", "key_data", "settings_hash"]

RECORD_VERSION = 1


def is_writer() -> bool:
    """Whether this process writes the study's files: process 0 of a ``jax.distributed`` run,
    or the only process (the others compute the same values and write nothing)."""
    return jax.process_index() == 0


class CacheWarning(UserWarning):
    """A cache entry was damaged or came from other settings: it was removed and recomputed."""


def _canonical(settings: Any) -> str:
    """Settings as sorted, compact JSON (non-JSON values by ``str``); NaN is refused, since an
    entry whose settings never equal themselves would be recomputed forever."""
    try:
        return json.dumps(settings, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        raise ValueError(f"settings: expected finite numbers, got {settings!r:.200}") from None


def settings_hash(settings: Any) -> str:
    """A short stable hash (16 hex digits of SHA-256) of JSON-serialisable settings."""
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:16]


def fingerprint(array) -> str:
    """SHA-256 of an array's shape, dtype and bytes: a settings entry for input data."""
    array = np.ascontiguousarray(array)
    header = f"{array.shape}{array.dtype.str}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


def key_data(key) -> list:
    """A PRNG key as JSON-able numbers: a settings entry for a result that depends on a key."""
    return np.asarray(jax.random.key_data(key)).tolist()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Damaged(Exception):
    """Why an entry cannot be used (internal: becomes a CacheWarning)."""


class Cache:
    """Entries under ``root`` (created on the first write). Cheap to construct: a ``Cache`` is
    only its folder."""

    def __init__(self, root):
        self.root = Path(root)

    def stage(
        self,
        name: str,
        settings: Any,
        compute: Callable[[], Any],
        *,
        target: Callable[[], Any] | None = None,
    ) -> Any:
        """The value of ``compute()`` for ``settings``, from the cache or computed and cached.

        Args:
          name: the stage (a file-name part, e.g. ``"mlp-1x16-map"``).
          settings: JSON-able settings that determine the value (data, model, seeds, options):
            everything the result depends on, or a stale result is reused.
          compute: ``() -> value``.
          target: ``() -> template``: restore into this pytree structure (any pytree flax's
            state dicts describe, e.g. flax variables; leaves may be ``jax.ShapeDtypeStruct``,
            so ``jax.eval_shape(init)`` needs no compilation); shapes and dtypes must match.
            Without it, the value must be nested dicts (string keys) of arrays and numbers,
            restored from the recorded layout.

        Returns:
          The value as stored: NumPy arrays (and Python numbers) in the value's structure.
        """
        value_path, record_path = self._paths(name, settings, ".msgpack")
        loaded = self._load(value_path, record_path, settings, target)
        if loaded is not _MISSING:
            return loaded
        value = jax.device_get(compute())
        if target is None:
            _check_nested_dicts(value)
        if not is_writer():
            return value
        io.save_checkpoint(value_path, value, overwrite=True)
        layout = _layout(serialization.to_state_dict(value))
        record = self._record(name, settings, value_path) | {"layout": layout}
        io.write_json(record_path, record, overwrite=True)
        return _read_tree(value_path, record, target)

    def json(self, name: str, settings: Any, compute: Callable[[], Any]) -> Any:
        """Like :meth:`stage` for a JSON-able ``compute()`` (dicts, lists, strings, numbers),
        stored as strict JSON: ``NaN`` and infinities read back as ``None``, arrays as
        lists (fresh and cached values alike)."""
        value_path, record_path = self._paths(name, settings, ".json")
        loaded = self._load(value_path, record_path, settings, None)
        if loaded is not _MISSING:
            return loaded
        value = compute()
        if not is_writer():  # what a cached read would give: strict JSON
            return json.loads(io.json_text(value))
        io.write_json(value_path, value, overwrite=True)
        io.write_json(record_path, self._record(name, settings, value_path), overwrite=True)
        return json.loads(value_path.read_text())

    def _paths(self, name: str, settings: Any, suffix: str) -> tuple[Path, Path]:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"name: expected a file-name part without '/', got {name!r}")
        value = self.root / f"{name}-{settings_hash(settings)}{suffix}"
        return value, value.with_name(f"{value.name}.record.json")

    def _record(self, name: str, settings: Any, value_path: Path) -> dict:
        return {
            "bnn_jax_cache": RECORD_VERSION,
            "name": name,
            "settings": json.loads(_canonical(settings)),
            "value": value_path.name,
            "sha256": _digest(value_path),
        }

    def _load(self, value_path: Path, record_path: Path, settings, target):
        """The cached value, or ``_MISSING`` (after warning about and removing a bad entry)."""
        if not record_path.exists():
            if value_path.exists():
                self._discard(
                    value_path,
                    record_path,
                    "has no record of its settings (an interrupted write, or a cache written "
                    "by an earlier bnn_jax)",
                )
            return _MISSING
        try:
            record = _read_record(record_path, value_path)
            if record["settings"] != json.loads(_canonical(settings)):
                raise _Damaged(
                    "was computed from other settings (differing at "
                    f"{_differences(record['settings'], json.loads(_canonical(settings)))})"
                )
            if _digest(value_path) != record["sha256"]:
                raise _Damaged("is damaged: its SHA-256 checksum does not match its record")
            if value_path.suffix == ".msgpack":
                return _read_tree(value_path, record, target)
            return json.loads(value_path.read_text())
        except FileNotFoundError:
            self._discard(value_path, record_path, "is incomplete: its value file is missing")
        except (_Damaged, ValueError) as err:  # ValueError: bnn_jax.io's damage and layout
            self._discard(value_path, record_path, str(err))
        return _MISSING

    @staticmethod
    def _discard(value_path: Path, record_path: Path, reason: str) -> None:
        warnings.warn(
            f"cache entry {value_path} {reason}; removed it, recomputing", CacheWarning, 3
        )
        value_path.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)


_MISSING = object()


def _read_record(record_path: Path, value_path: Path) -> dict:
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise _Damaged(f"is damaged: its record {record_path.name} is not valid JSON") from None
    keys = {"bnn_jax_cache", "settings", "value", "sha256"}
    if not isinstance(record, dict) or not keys <= set(record):
        raise _Damaged(f"is damaged: its record {record_path.name} lacks {sorted(keys)}")
    if record["bnn_jax_cache"] != RECORD_VERSION or record["value"] != value_path.name:
        raise _Damaged(f"has a record {record_path.name} of another format or file")
    return record


def _read_tree(value_path: Path, record: dict, target) -> Any:
    if target is not None:
        return io.load_checkpoint(value_path, target())
    layout = record.get("layout")
    if not isinstance(layout, list):
        raise _Damaged(f"is damaged: its record lacks the layout of {value_path.name}")
    try:
        template: dict = {}
        for path, shape, dtype in layout:
            node = template
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = np.zeros(shape, np.dtype(dtype))
    except (TypeError, ValueError, IndexError, AttributeError):
        raise _Damaged("is damaged: its record's layout cannot be read") from None
    return io.load_checkpoint(value_path, template)


def _layout(value: Any, prefix: tuple = ()) -> list:
    """``[[path, shape, dtype], ...]`` of the leaves of a state dict (depth first)."""
    if isinstance(value, dict):
        return [row for key, item in value.items() for row in _layout(item, (*prefix, key))]
    array = np.asarray(value)
    return [[list(prefix), list(array.shape), array.dtype.str]]


def _check_nested_dicts(value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key:
                raise ValueError(f"compute: key {path}/{key!r} must be a string without '/'")
            _check_nested_dicts(item, f"{path}/{key}")
    elif not isinstance(value, np.ndarray | np.generic | int | float):
        raise ValueError(
            f"compute: returned a {type(value).__name__} at {path or '/'}; a stage without a "
            "target holds nested dicts of arrays and numbers (pass target= for other pytrees)"
        )
    elif path == "":
        raise ValueError("compute: expected a dict of arrays, got a single leaf")


def _differences(stored: Any, wanted: Any, path: str = "") -> list[str]:
    """The paths where two JSON values differ (at most 5)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        keys = sorted(set(stored) | set(wanted))
        found = [d for k in keys for d in _differences(stored.get(k), wanted.get(k), f"{path}/{k}")]
        return found[:5]
    return [] if stored == wanted else [path or "/"]
