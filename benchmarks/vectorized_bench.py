"""Throughput of vectorized vs sequential training: N seeds of the IWAE-paper MNIST MLP (784-200-200-50,
tanh, Bernoulli decoder, batch 20) trained as one vmapped program (jaxvae.experiment.vectorized) or one after another
(jaxvae.experiment.train.make_run_steps, what N separate `jaxvae.main` processes run).

    python benchmarks/vectorized_bench.py --sizes 1,4,8,16,32 --steps 500 --objectives elbo,iwae5
    python benchmarks/vectorized_bench.py --devices 2 ...   # the member axis split over 2 forced CPU devices

Only training steps are timed (compilation excluded: each program is run once untimed), on random binary
data (no download), best of --repeats. Prints one row per (objective, N): steps/s summed over runs, the
speedup of vectorized over sequential, runs/hour for a run of --run-steps steps, and two ceilings measured
in the same process that bound any vectorized program on this machine:

* compute: N runs' matmul FLOPs at the float32 matmul peak (jitted n x n @ n x n, best of n = 1024, 2048);
* memory: N runs' Adam update traffic (read parameter, gradient, two moments; write parameter, two
  moments: 28 bytes per parameter and step) at the streaming bandwidth of a jitted elementwise pass over
  256 MiB, which is what N stacked runs need once their state no longer fits in the caches
  (one run's 425k parameters x 16 bytes of state = 6.8 MB does).

``speedup ceiling`` = sequential time / (compute time + memory time), both at their measured peaks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import os
import sys


def _early_devices(argv) -> int:
    for i, a in enumerate(argv):
        if a.startswith("--devices="):
            return int(a.split("=", 1)[1])
        if a == "--devices" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 1


if _early_devices(sys.argv) > 1:  # must precede the jax import
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={_early_devices(sys.argv)}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from bench import matmul_peak, train_flops_per_example  # noqa: E402
from jaxvae.experiment import parallel  # noqa: E402
from jaxvae.experiment import train as train_lib  # noqa: E402
from jaxvae.experiment.configs import base_config  # noqa: E402
from jaxvae.vae.model import VAE  # noqa: E402
from jaxvae.experiment.vectorized import make_group_steps, stack_hparams, stack_trees  # noqa: E402

ADAM_BYTES_PER_PARAM = 28  # read p, g, m, v; write p, m, v (float32)


def config_for(objective: str):
    c = base_config()
    c.model.latent_dim = 50
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.train.batch_size = 20
    if objective == "elbo":
        c.objective.name, c.objective.k = "elbo", 1
    else:
        c.objective.name, c.objective.k = "iwae", int(objective.replace("iwae", "") or 5)
    return c


def stream_bandwidth(mib: int = 256, reps: int = 5) -> float:
    """Bytes/s of a jitted elementwise pass (read + write) over ``mib`` MiB."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    nbytes = x.nbytes
    f = jax.jit(lambda a: a * 1.0001 + 1.0, donate_argnums=0)  # in place: no page faults of a new buffer
    box = [f(x).block_until_ready()]

    def once():
        box[0] = f(box[0]).block_until_ready()

    return 2 * nbytes / common.best_time(once, reps)


def bench(objective: str, sizes, steps: int, repeats: int, n_train: int, peak: float, bandwidth: float,
          devices: int, member_shards: int = 0):
    c = config_for(objective)
    rng = np.random.default_rng(0)
    x_host = (rng.random((n_train, 784)) < 0.3).astype(np.float32)
    x = jnp.asarray(x_host)
    model = VAE(x_dim=784, latent_dim=50, encoder_hidden=(200, 200), decoder_hidden=(200, 200))
    spe = n_train // c.train.batch_size
    assert steps <= spe, "--steps must fit in one epoch (raise --train-examples)"
    sched, _ = train_lib.learning_rate_schedule(c, spe)
    tx = train_lib.make_optimizer(c, sched)

    def tx_for(hp):
        return train_lib.make_optimizer(c, train_lib.learning_rate_schedule(c, spe, hp["learning_rate"])[0])

    solo = train_lib.make_run_steps(model, c, tx, spe, c.train.batch_size)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(train_lib.create_train_state(model, tx, 0).params))
    step_flops = train_flops_per_example(c.objective.k) * c.train.batch_size
    rows = []
    for n in sizes:
        seeds = list(range(n))
        # sequential: the solo program, run for each seed in turn (compiled once, like N processes' steady state)
        states = [train_lib.create_train_state(model, tx, s) for s in seeds]
        s0, _ = solo(train_lib.create_train_state(model, tx, 999), x, steps)  # compile
        jax.block_until_ready(s0)

        def sequential():
            for st in states:
                out, info = solo(jax.tree_util.tree_map(jnp.copy, st), x, steps)
                jax.block_until_ready(out)

        best_seq = common.best_time(sequential, repeats)
        # vectorized: one vmapped program over the n members (member axis split over the devices)
        mesh = parallel.make_group_mesh(devices, n, member_shards) if devices > 1 else None
        shards = parallel.member_shards(mesh) if mesh is not None else 1
        group = make_group_steps(model, c, tx, tx_for, spe, c.train.batch_size, mesh, False)
        put = (lambda t: parallel.put(t, parallel.member_sharded(mesh))) if mesh is not None else (lambda t: t)
        hp = put(stack_hparams([c] * n))
        active = put(jnp.ones((n,), bool))
        stacked = put(stack_trees(states))
        xg = parallel.replicate(x_host, mesh) if mesh is not None else x
        out, _ = group(jax.tree_util.tree_map(jnp.copy, stacked), xg, hp, active, steps)  # compile
        jax.block_until_ready(out)
        best_vec = common.best_time(lambda st: jax.block_until_ready(group(st, xg, hp, active, steps)[0]), repeats,
                                    setup=lambda: jax.tree_util.tree_map(jnp.copy, stacked))
        compute_s = n * steps * step_flops / peak
        memory_s = n * steps * n_params * ADAM_BYTES_PER_PARAM / bandwidth
        row = {"objective": objective, "runs": n, "steps": steps, "devices": devices, "member_shards": shards,
               "sequential_s": best_seq, "vectorized_s": best_vec,
               "sequential_steps_per_s": n * steps / best_seq, "vectorized_steps_per_s": n * steps / best_vec,
               "speedup": best_seq / best_vec,
               "vectorized_peak_fraction": n * steps * step_flops / best_vec / peak,
               "compute_ceiling_s": compute_s, "memory_ceiling_s": memory_s,
               "speedup_ceiling": best_seq / (compute_s + memory_s)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4,8,16,32")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions; the best is kept")
    p.add_argument("--objectives", default="elbo,iwae5")
    p.add_argument("--train-examples", type=int, default=10000)
    p.add_argument("--run-steps", type=float, default=500, help="steps of one 'run' for the runs/hour column")
    p.add_argument("--devices", type=int, default=1,
                   help="split the member axis over this many devices (on CPU: forced host devices)")
    p.add_argument("--member-shards", type=int, default=0,
                   help="device groups along the member axis (0: gcd(members, devices), members first; 1: every "
                        "member data-parallel over all --devices)")
    p.add_argument("--out", default="", help="also write the rows as JSON here")
    p.add_argument("--peak-sizes", default="1024,2048", help="matmul sizes of the peak measurement")
    p.add_argument("--bandwidth-mib", type=int, default=256, help="buffer size of the bandwidth measurement")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    info = common.device_info()
    print(common.machine_line(info), flush=True)
    peak_sizes = tuple(int(s) for s in a.peak_sizes.split(","))
    peak = matmul_peak(peak_sizes, 3)["flop_per_s"]
    bandwidth = stream_bandwidth(a.bandwidth_mib)
    print(f"# matmul peak {peak / 1e9:.1f} GFLOP/s; streaming bandwidth {bandwidth / 1e9:.1f} GB/s", flush=True)
    rows = []
    for obj in a.objectives.split(","):
        rows += bench(obj, sizes, a.steps, a.repeats, a.train_examples, peak, bandwidth, a.devices,
                      a.member_shards)
    peak2 = matmul_peak(peak_sizes, 3)["flop_per_s"]
    if a.out:
        Path(a.out).write_text(json.dumps({"device_info": common.finish(info),
                                           "devices": [str(d) for d in jax.devices()], "peak_flop_per_s": peak,
                                           "peak_end_flop_per_s": peak2, "bandwidth_bytes_per_s": bandwidth,
                                           "run_steps": a.run_steps, "rows": rows}, indent=1, default=float))
    print(f"# matmul peak again at the end: {peak2 / 1e9:.1f} GFLOP/s", flush=True)
    print(f"\n| objective | N | sequential steps/s | vectorized steps/s | speedup | vectorized % of peak | "
          f"speedup ceiling | runs/h seq | runs/h vec (run = {a.run_steps:g} steps) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['runs']} | {r['sequential_steps_per_s']:.0f} | "
              f"{r['vectorized_steps_per_s']:.0f} | {r['speedup']:.2f}x | {100 * r['vectorized_peak_fraction']:.0f}% | "
              f"{r['speedup_ceiling']:.2f}x | {3600 * r['sequential_steps_per_s'] / a.run_steps:.0f} | "
              f"{3600 * r['vectorized_steps_per_s'] / a.run_steps:.0f} |")


if __name__ == "__main__":
    main()
