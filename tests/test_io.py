import jax
import numpy as np
import pytest

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
