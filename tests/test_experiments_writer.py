"""In a multi-process launch only process 0 writes the study's files; every process computes
(the others return the same values and leave the folder alone)."""

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest

from experiments import claim, common


@pytest.mark.parametrize("process", [0, 1])
def test_only_process_zero_writes(tmp_path, monkeypatch, process):
    monkeypatch.setattr(jax, "process_index", lambda: process)
    plt.close("all")  # figures other tests of this worker left open
    assert common.is_writer() == (process == 0)
    report = common.Report(tmp_path, "title")
    report.figure("curve", plt.figure(), "a caption")
    path = report.write()
    with claim.claim(tmp_path, {"a": 1}):
        common.write_results(tmp_path, {"a": 1}, {"m": 2.0})
    computed = []
    value = common.cached(
        tmp_path / "cache" / "x.msgpack",
        lambda: computed.append(1) or {"w": np.arange(3.0)},
        lambda: {"w": np.zeros(3)},
    )
    np.testing.assert_array_equal(value["w"], np.arange(3.0))
    assert computed == [1]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))
    cached_files = [p for p in written if p.startswith("cache/x-")]
    if process == 0:
        expected = ["config.json", "figures/curve.png", "metrics.json", "report.md"]
        assert set(expected) <= set(written) and path.read_text().startswith("# ")
        assert len(cached_files) == 2  # the value and its record
    else:
        assert written == [] and path == tmp_path / "report.md"
    assert not plt.get_fignums()  # the figure is closed either way
