"""Data parallelism with ``jax.sharding``: one mesh axis "data"; the batch is sharded over it and the
parameters and optimizer state are replicated. The same code runs on 1 CPU, 8 GPUs or a TPU pod slice.

Vectorized groups (jaxvae.experiment.vectorized) use a 2-D mesh ("member", "data"): the stacked runs are split over
the member axis (each device group trains its own members, no communication but one scalar per step)
and each member's batch over the data axis.

Multi-host: ``initialize_distributed`` calls ``jax.distributed.initialize()`` when the environment says
the job spans several processes (SLURM with several tasks, a TPU pod, or explicit coordinator flags);
afterwards ``jax.devices()`` lists every host's devices and the mesh spans them all.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MEMBER_AXIS = "member"


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


def make_group_mesh(num_devices: int, members: int, member_shards: int = 0) -> Mesh:
    """A ("member", "data") mesh over the first ``num_devices`` devices for a group of ``members`` runs.

    ``member_shards`` device groups along the member axis (0: gcd(members, devices), so small models fill
    the devices with members first: a member's step needs no gradient all-reduce)."""
    devices = make_mesh(num_devices).devices.reshape(-1)
    n = len(devices)
    if not member_shards:
        member_shards = math.gcd(members, n)
    if n % member_shards or members % member_shards:
        raise ValueError(f"parallel.member_shards={member_shards} must divide both the {members} members of "
                         f"the group and the {n} devices; use a common divisor (or 0 for automatic)")
    return Mesh(devices.reshape(member_shards, n // member_shards), (MEMBER_AXIS, DATA_AXIS))


def member_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (member) axis split over the mesh's member axis (replicated over its data axis)."""
    return NamedSharding(mesh, P(MEMBER_AXIS) if MEMBER_AXIS in mesh.axis_names else P())


def member_shards(mesh: Mesh) -> int:
    return mesh.shape.get(MEMBER_AXIS, 1)


def data_size(mesh: Mesh) -> int:
    """Devices a batch is split over (the data axis)."""
    return mesh.shape.get(DATA_AXIS, 1)


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
    return put(tree, replicated(mesh))


def put(tree, sharding: NamedSharding):
    """Place a pytree of host or device arrays with ``sharding`` (works across hosts)."""

    def place(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(place, tree)


def fetch(tree, mesh: Mesh | None = None):
    """Host (numpy) copies of a pytree of arrays, also of arrays sharded over several processes' devices
    (gathered through a jitted copy replicated over ``mesh`` first; every process must call it)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if mesh is not None and any(isinstance(x, jax.Array) and not x.is_fully_addressable and
                                not x.is_fully_replicated for x in leaves):
        tree = jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) and not x.is_fully_addressable
        else np.asarray(x), tree)


def take(tree, index, mesh: Mesh):
    """``tree``'s leaves indexed along their leading axis (an int or an integer array), replicated over
    ``mesh``: one jitted gather, so it works on arrays spread over several processes."""
    return _take_jit(mesh)(tree, jnp.asarray(index))


@functools.lru_cache(maxsize=None)
def _take_jit(mesh: Mesh):
    return jax.jit(lambda t, i: jax.tree_util.tree_map(lambda a: a[i], t), out_shardings=replicated(mesh))


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    n = data_size(mesh)
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh's data axis; "
                         f"use a multiple of {n} or set parallel.num_devices")
