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


def _visible_devices(num_devices: int = 0) -> list:
    """The first ``num_devices`` devices of all processes (0 = all)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"parallel.num_devices={num_devices} but only {len(devices)} devices are "
                             f"visible ({devices[0].platform}); lower it or use 0 for all")
        devices = devices[:num_devices]
    return devices


def _first_per_process(devices: list, count: int) -> list:
    """``count`` devices taken evenly from every process (its first ones), in the global order: a mesh
    must hold devices of every process of a multi-process run."""
    procs = sorted({d.process_index for d in devices})
    per = count // len(procs)
    keep = {id(d) for p in procs for d in [d for d in devices if d.process_index == p][:per]}
    return [d for d in devices if id(d) in keep]


def fit_device_count(batch_size: int, total: int, members: int = 1, member_shards: int = 0,
                     processes: int = 1) -> int:
    """The most devices, at most ``total`` and a multiple of ``processes``, whose data axis divides
    ``batch_size`` when ``members`` runs are split into ``member_shards`` device groups (0: gcd(members,
    devices)); 0 when none does. E.g. batch 50 on 4 devices: 2; the IWAE paper's batch 20 on 8 devices: 5;
    a group of 4 members with batch 50 on 8 devices: all 8 (4 member groups x 2 data-parallel)."""
    for d in range(total, 0, -1):
        if d % processes:
            continue
        shards = member_shards or math.gcd(members, d)
        if d % shards or members % shards:
            continue
        if batch_size % (d // shards) == 0:
            return d
    return 0


def _fitted_devices(num_devices: int, batch_size: int | None, members: int, member_shards: int) -> list:
    """The devices of a run's mesh: ``parallel.num_devices`` exactly when set (a batch that does not divide
    is then an error, ``check_divisible``); with 0 (all devices), the most devices that the batch divides
    over (``fit_device_count``), so that any device count runs every config."""
    devices = _visible_devices(num_devices)
    if num_devices or batch_size is None:
        return devices
    procs = len({d.process_index for d in devices})
    count = fit_device_count(batch_size, len(devices), members, member_shards, procs)
    if count == 0 or count == len(devices):
        return devices  # none fits: check_divisible says what to change
    return _first_per_process(devices, count)


def make_mesh(num_devices: int = 0, batch_size: int | None = None) -> Mesh:
    """A 1-D ("data") mesh over the first ``num_devices`` devices (0 = all devices of all processes; with
    ``batch_size``, as many of them as the batch divides over: ``fit_device_count``)."""
    return Mesh(np.asarray(_fitted_devices(num_devices, batch_size, 1, 1)), (DATA_AXIS,))


def make_group_mesh(num_devices: int, members: int, member_shards: int = 0, batch_size: int | None = None) -> Mesh:
    """A ("member", "data") mesh over the first ``num_devices`` devices for a group of ``members`` runs
    (0 and ``batch_size``: as many devices as fit, ``fit_device_count``).

    ``member_shards`` device groups along the member axis (0: gcd(members, devices), so small models fill
    the devices with members first: a member's step needs no gradient all-reduce)."""
    devices = np.asarray(_fitted_devices(num_devices, batch_size, members, member_shards))
    n = len(devices)
    if not member_shards:
        member_shards = math.gcd(members, n)
    if n % member_shards or members % member_shards:
        raise ValueError(f"parallel.member_shards={member_shards} must divide both the {members} members of "
                         f"the group and the {n} devices; use a common divisor (or 0 for automatic)")
    return Mesh(devices.reshape(member_shards, n // member_shards), (MEMBER_AXIS, DATA_AXIS))


def flat_mesh(mesh: Mesh) -> Mesh:
    """A 1-D ("data") mesh over the devices of ``mesh``, in its order (where a group's members are
    evaluated: the same devices as its training mesh)."""
    return Mesh(mesh.devices.reshape(-1), (DATA_AXIS,))


def fitted_note(mesh: Mesh, num_devices: int, batch_size: int) -> str | None:
    """The one line a run logs when it uses fewer devices than it sees, e.g. "data-parallel over 2 of 4
    devices: batch 50 (set parallel.num_devices to choose)"; None when it uses them all."""
    total = len(jax.devices())
    if num_devices or mesh.size == total:
        return None
    return (f"data-parallel over {data_size(mesh)} of {total} devices"
            + (f" ({member_shards(mesh)} member groups)" if member_shards(mesh) > 1 else "")
            + f": batch {batch_size} (the most devices it divides over; set parallel.num_devices to choose)")


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
