import json
import os
import re
import stat
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from bnn_jax import io, models


def _variables(widths):
    return models.init(models.MLP(widths, 3), jax.random.key(0), (4,))


def test_checkpoint_roundtrip_and_no_silent_overwrite(tmp_path):
    path = tmp_path / "ckpt" / "model.msgpack"
    variables = _variables((5,))
    io.save_checkpoint(path, variables)
    restored = io.load_checkpoint(path, _variables((5,)))
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.save_checkpoint(path, _variables((5,)))
    io.save_checkpoint(path, _variables((5,)), overwrite=True)
    assert [p.name for p in path.parent.iterdir()] == ["model.msgpack"]  # no temp files left


def test_checkpoint_structure_mismatch_is_reported(tmp_path):
    path = tmp_path / "model.msgpack"
    io.save_checkpoint(path, _variables((5,)))
    with pytest.raises(ValueError, match=r"Dense_0/bias. has shape \(5,\), model expects \(6,\)"):
        io.load_checkpoint(path, _variables((6,)))
    with pytest.raises(ValueError, match="Dense_2"):
        io.load_checkpoint(path, _variables((5, 5)))


def test_json_is_atomic_and_converts_arrays(tmp_path):
    path = io.write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3)})
    assert path.read_text() == '{\n  "a": 0.5,\n  "b": [\n    0,\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(FileExistsError):
        io.write_json(path, {})


def test_dtype_mismatch_is_reported_not_cast(tmp_path):
    path = tmp_path / "half.msgpack"
    variables = _variables((5,))
    io.save_checkpoint(path, jax.tree.map(lambda a: a.astype(np.float16), variables))
    with pytest.raises(ValueError, match=r"Dense_0/bias. has dtype float16, model expects float32"):
        io.load_checkpoint(path, variables)


def _damaged(path: Path, kind: str) -> bytes:
    good = path.read_bytes()
    middle = len(good) // 2
    return {
        "overwritten": good[:middle] + bytes(16) + good[middle + 16 :],
        "truncated": good[:middle],
        "empty": b"",
        "random": np.random.default_rng(0).bytes(len(good)),
        "json": json.dumps({"params": {"w": [1.0, 2.0]}}).encode(),
        "a number": b"\x05",
    }[kind]


@pytest.mark.parametrize(
    "kind", ["overwritten", "truncated", "empty", "random", "json", "a number"]
)
def test_damaged_or_foreign_files_are_named_and_refused(tmp_path, kind):
    path = tmp_path / "model.msgpack"
    io.save_checkpoint(path, _variables((5,)))
    path.write_bytes(_damaged(path, kind))
    message = re.escape(f"checkpoint {path}: damaged or not a bnn_jax checkpoint")
    with pytest.raises(ValueError, match=message):
        io.load_checkpoint(path, _variables((5,)))


def test_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    path = tmp_path / "old.msgpack"
    variables = _variables((5,))
    path.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(variables)))
    with pytest.warns(UserWarning, match=re.escape(f"checkpoint {path}: written without a")):
        restored = io.load_checkpoint(path, _variables((5,)))
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unwritable_targets_are_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = re.escape(f"cannot write {blocker / 'x.msgpack'}: {blocker} is a file")
    with pytest.raises(NotADirectoryError, match=message):
        io.save_checkpoint(blocker / "x.msgpack", _variables((5,)))
    if Path("/proc/self").is_dir():  # a folder where no file can be created
        with pytest.raises(OSError, match=r"cannot write /proc/x\.msgpack"):
            io.save_checkpoint("/proc/x.msgpack", _variables((5,)))


def test_tree_holding_a_function_names_the_entry(tmp_path):
    tree = {"params": {"w": np.ones(2)}, "hooks": {"apply": len}}
    with pytest.raises(ValueError, match="entry '/hooks/apply' is a builtin_function_or_method"):
        io.save_checkpoint(tmp_path / "x.msgpack", tree)
    assert not list(tmp_path.iterdir())


def test_json_is_strict_with_null_for_undefined_values(tmp_path):
    values = {"nan": float("nan"), "arr": np.array([1.0, np.inf, -np.inf])}
    values["f32"] = np.float32("nan")
    path = io.write_json(tmp_path / "m.json", values)

    def refuse(constant):
        raise AssertionError(f"bare {constant} in JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "arr": [1.0, None, None],
        "f32": None,
        "nan": None,
    }


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_of_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain"
        plain.write_text("")
        written = io.write_json(tmp_path / "m.json", {"a": 1})
        saved = io.save_checkpoint(tmp_path / "c.msgpack", _variables((2,)))
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE(written.stat().st_mode) == expected
    assert stat.S_IMODE(saved.stat().st_mode) == expected
