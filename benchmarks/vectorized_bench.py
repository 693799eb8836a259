"""Throughput of vectorized vs sequential training: N seeds of the IWAE-paper MNIST MLP (784-200-200-50,
tanh, Bernoulli decoder, batch 20) trained as one vmapped program (jaxvae.vectorized) or one after another
(jaxvae.train.make_run_steps, what N separate `jaxvae.main` processes run).

    python benchmarks/vectorized_bench.py --sizes 1,4,8 --steps 500 --objectives elbo,iwae5

Only training steps are timed (compilation excluded: each program is run once untimed), on random binary
data (no download). Prints one row per (objective, N) with the steps/s summed over runs, the speedup of
vectorized over sequential, and runs/hour for a run of --run-steps steps (default: 500 steps; the IWAE
paper's full schedule would be 3280 passes x 2500 steps = 8.2M steps).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import train as train_lib
from jaxvae.configs import base_config
from jaxvae.model import VAE
from jaxvae.vectorized import _hparams, _stack, make_group_steps


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


def bench(objective: str, sizes, steps: int, repeats: int, n_train: int):
    c = config_for(objective)
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.random((n_train, 784)) < 0.3).astype(np.float32))
    model = VAE(x_dim=784, latent_dim=50, encoder_hidden=(200, 200), decoder_hidden=(200, 200))
    spe = n_train // c.train.batch_size
    assert steps <= spe, "--steps must fit in one epoch (raise --train-examples)"
    sched, _ = train_lib.learning_rate_schedule(c, spe)
    tx = train_lib.make_optimizer(c, sched)

    def tx_for(hp):
        return train_lib.make_optimizer(c, train_lib.learning_rate_schedule(c, spe, hp["learning_rate"])[0])

    solo = train_lib.make_run_steps(model, c, tx, spe, c.train.batch_size)
    rows = []
    for n in sizes:
        seeds = list(range(n))
        # sequential: the solo program, run for each seed in turn (compiled once, like N processes' steady state)
        states = [train_lib.create_train_state(model, tx, s) for s in seeds]
        s0, _ = solo(train_lib.create_train_state(model, tx, 999), x, steps)  # compile
        jax.block_until_ready(s0)
        best_seq = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for st in states:
                out, info = solo(jax.tree_util.tree_map(jnp.copy, st), x, steps)
                jax.block_until_ready(out)
            best_seq = min(best_seq, time.perf_counter() - t)
        # vectorized: one vmapped program over the n members
        group = make_group_steps(model, c, tx, tx_for, spe, c.train.batch_size, None, False)
        configs = [c] * n
        hp = _hparams(configs)
        active = jnp.ones((n,), bool)
        stacked = _stack(states)
        out, _ = group(jax.tree_util.tree_map(jnp.copy, stacked), x, hp, active, steps)  # compile
        jax.block_until_ready(out)
        best_vec = float("inf")
        for _ in range(repeats):
            st = jax.tree_util.tree_map(jnp.copy, stacked)
            t = time.perf_counter()
            out, _ = group(st, x, hp, active, steps)
            jax.block_until_ready(out)
            best_vec = min(best_vec, time.perf_counter() - t)
        row = {"objective": objective, "runs": n, "steps": steps,
               "sequential_s": best_seq, "vectorized_s": best_vec,
               "sequential_steps_per_s": n * steps / best_seq, "vectorized_steps_per_s": n * steps / best_vec,
               "speedup": best_seq / best_vec}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4,8")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions; the best is kept")
    p.add_argument("--objectives", default="elbo,iwae5")
    p.add_argument("--train-examples", type=int, default=10000)
    p.add_argument("--run-steps", type=float, default=500, help="steps of one 'run' for the runs/hour column")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"# devices: {jax.devices()}", flush=True)
    rows = []
    for obj in a.objectives.split(","):
        rows += bench(obj, sizes, a.steps, a.repeats, a.train_examples)
    print(f"\n| objective | N | sequential steps/s | vectorized steps/s | speedup | runs/h seq | runs/h vec "
          f"(run = {a.run_steps:g} steps) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['runs']} | {r['sequential_steps_per_s']:.0f} | "
              f"{r['vectorized_steps_per_s']:.0f} | {r['speedup']:.2f}x | "
              f"{3600 * r['sequential_steps_per_s'] / a.run_steps:.0f} | "
              f"{3600 * r['vectorized_steps_per_s'] / a.run_steps:.0f} |")


if __name__ == "__main__":
    main()
