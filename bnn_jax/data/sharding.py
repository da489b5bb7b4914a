"""Global arrays from process-local data, for runs on several devices and several processes.

JAX's multi-controller runtime (``jax.distributed.initialize``) runs one Python process per
host; each process holds its share of every batch, and a *global* array spans the devices of
all processes. The library's functions take global arrays unchanged: a batch sharded along
its first axis over a 1-D device mesh (``batch_mesh``), the parameters and the curvature
state replicated. Reductions over the batch (curvature sums, losses, gradients) then become
all-reduces across devices and processes, and predictions come back sharded like the inputs.

- ``batch_mesh()``: a 1-D ``Mesh`` over every device of every process, in process order;
- ``global_batch(batch, mesh)``: ``Batch`` of process-local rows -> ``Batch`` of global arrays
  (``jax.make_array_from_process_local_data``: the global batch is the concatenation of the
  processes' rows in process order);
- ``global_batches(batches, mesh)``: the same for each batch of a re-iterable (e.g. a
  ``data.Batches(..., process_index=, process_count=)``);
- ``replicate(tree, mesh)``: a pytree of host values (the same in every process) replicated
  over the mesh;
- ``gather(array)``: a global array as a numpy array in every process.

One process with several local devices (GPUs, or ``--xla_force_host_platform_device_count``
CPU devices) is the same code with ``process_count() == 1``.

Example (the same script on every host):
  >>> jax.distributed.initialize()          # coordinator and ids from the cluster environment
  >>> mesh = data.batch_mesh()
  >>> local = data.Batches(x, y, 256, process_index=jax.process_index(),
  ...                      process_count=jax.process_count())
  >>> post = laplace.fit(curv, data.replicate(params, mesh), data.global_batches(local, mesh),
  ...                    ...)
  >>> probs = data.gather(predictive.glm_probit_log_probs(post, x_global))
"""

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnn_jax.types import Batch

__all__ = ["GlobalBatches", "batch_mesh", "gather", "global_array", "global_batch", "replicate"]

AXIS = "batch"


def batch_mesh(devices=None, *, axis: str = AXIS) -> Mesh:
    """A 1-D mesh named ``axis`` over ``devices`` (default: ``jax.devices()``, every device of
    every process, ordered by process)."""
    devices = jax.devices() if devices is None else list(devices)
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis,))


def global_array(local: Any, mesh: Mesh, *, axis: str = AXIS) -> jax.Array:
    """The global array whose rows are every process's ``local`` rows, in process order,
    sharded along its first axis over ``mesh``.

    ``local`` must have the same shape in every process, and its number of rows must be a
    multiple of this process's devices in ``mesh``.
    """
    local = np.asarray(local)
    devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if local.ndim < 1 or len(local) % devices:
        raise ValueError(
            f"local: expected rows divisible by the {devices} local devices of the mesh, got "
            f"shape {local.shape}"
        )
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    return jax.make_array_from_process_local_data(sharding, local)


def global_batch(batch: Batch, mesh: Mesh, *, axis: str = AXIS) -> Batch:
    """``Batch`` of process-local rows -> ``Batch`` of global arrays sharded over ``mesh``."""
    return Batch(global_array(batch.x, mesh, axis=axis), global_array(batch.y, mesh, axis=axis))


class GlobalBatches:
    """A re-iterable of global batches made from a re-iterable of process-local ones.

    ``len`` is that of ``batches`` when it has one. Each batch is transferred as it is reached,
    so host-side loading of the next batch overlaps the device work on this one.
    """

    def __init__(self, batches: Iterable[Batch], mesh: Mesh, *, axis: str = AXIS):
        self.batches, self.mesh, self.axis = batches, mesh, axis

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.batches:
            yield global_batch(batch, self.mesh, axis=self.axis)


def global_batches(batches: Iterable[Batch], mesh: Mesh, *, axis: str = AXIS) -> GlobalBatches:
    """``GlobalBatches(batches, mesh)``: each process-local batch as a global batch."""
    return GlobalBatches(batches, mesh, axis=axis)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A pytree of host values, the same in every process, replicated over ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), tree)


def gather(array: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) global array as numpy, in every process."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    if array.is_fully_replicated:
        return np.asarray(array.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
