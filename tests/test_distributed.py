"""Two processes on ``jax.distributed`` (CPU collectives over gloo, 127.0.0.1) give the
single-process results: a training step, ``laplace.fit`` of every curvature structure
(``to_dense``, ``log_det``), the marginal likelihood, and the MC and GLM
predictives, each process holding only its share of every batch and of the test inputs.

The worker is ``tests/distributed_worker.py``; the reference is the same script as one
process on plain numpy batches. All three run at once (float64, a tiny MLP, four batches).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, process_id: int, process_count: int, coordinator: str):
    root = str(WORKER.parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    command = [sys.executable, str(WORKER), str(out), str(process_id), str(process_count)]
    return subprocess.Popen(
        [*command, coordinator],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_processes_equal_one(tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    outs = [tmp_path / "reference.npz", tmp_path / "process0.npz", tmp_path / "process1.npz"]
    procs = [
        _launch(outs[0], 0, 1, coordinator),
        _launch(outs[1], 0, 2, coordinator),
        _launch(outs[2], 1, 2, coordinator),
    ]
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            logs.append(f"timed out after {TIMEOUT_S} s")
    names = ("reference", "process 0", "process 1")
    failed = [
        f"--- {name} (exit {p.returncode}) ---\n{log[-3000:]}"
        for name, p, log in zip(names, procs, logs, strict=False)
        if p.returncode != 0
    ]
    if failed or len(logs) < len(procs):
        pytest.fail("a process failed:\n" + "\n".join(failed))

    reference, first, second = (np.load(out) for out in outs)
    assert sorted(reference.files) == sorted(first.files)
    structures = {k.split("/")[0] for k in reference.files} - {"train"}
    assert structures == {"diagonal", "dense", "kfac", "efb", "block_diagonal", "low_rank"}
    for name in reference.files:
        # both processes hold the same (replicated or gathered) values
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_allclose(first[name], reference[name], rtol=1e-9, atol=1e-9, err_msg=name)
