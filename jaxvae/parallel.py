"""Data parallelism with ``jax.sharding``: one mesh axis "data"; the batch is sharded over it and the
parameters and optimizer state are replicated. The same code runs on 1 CPU, 8 GPUs or a TPU pod slice.

Multi-host: ``initialize_distributed`` calls ``jax.distributed.initialize()`` when the environment says
the job spans several processes (SLURM with several tasks, a TPU pod, or explicit coordinator flags);
afterwards ``jax.devices()`` lists every host's devices and the mesh spans them all.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(config: ml_collections.ConfigDict) -> bool:
    """Start multi-process JAX if asked or if the environment says so; returns whether it did."""
    p = config.get("parallel")
    if p is not None and p.coordinator_address:
        _cpu_collectives()
        jax.distributed.initialize(coordinator_address=p.coordinator_address,
                                   num_processes=p.num_processes, process_id=p.process_id)
        return True
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if slurm_tasks > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES"):
        _cpu_collectives()
        jax.distributed.initialize()  # reads SLURM / TPU / JAX_* environment variables
        return True
    return False


def _cpu_collectives() -> None:
    """CPU processes exchange collectives over gloo (GPU/TPU backends use their own and ignore this)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (0 = all devices of all processes)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"parallel.num_devices={num_devices} but only {len(devices)} devices are "
                             f"visible ({devices[0].platform}); lower it or use 0 for all")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: constrain a batch to be split over the data axis (no-op without a mesh)."""
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))


def replicate(tree, mesh: Mesh):
    """Place a pytree of host or device arrays on every device of the mesh (works across hosts)."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree)


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"{what}={batch_size} is not divisible by the {mesh.size} devices of the mesh; "
                         f"use a multiple of {mesh.size} or set parallel.num_devices")
