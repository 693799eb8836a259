"""Vectorized vs sequential evaluation of a vectorized group's members: N parameter sets of the IWAE-paper
MNIST MLP (784-200-200-50, tanh, Bernoulli decoder) evaluated on the same test examples (random binary
data, no download) by ``eval_driver.evaluate_members`` (one vmapped program per batch) or by
``evaluate_split`` member after member (the sequential path of ``jaxvae.experiment.vectorized``).

    python benchmarks/eval_members_bench.py --members 8 --examples 1000 --ks 1,5,50,500 --repeats 2

Compilation is excluded (both programs run once on one batch first); the best of --repeats is reported,
with the largest relative difference between the two paths' bounds.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import common
from jaxvae.experiment.eval_driver import evaluate_members, evaluate_split
from jaxvae.vae.model import VAE


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--ks", default="1,5,50,500")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    info = common.device_info()
    model = VAE(x_dim=784, latent_dim=50, encoder_hidden=(200, 200), decoder_hidden=(200, 200))
    x = (np.random.default_rng(0).random((a.examples, 784)) < 0.13).astype(np.float32)
    params = [model.init(jax.random.key(i)) for i in range(a.members)]
    stacked = jax.tree_util.tree_map(lambda *p: jnp.stack(p), *params)
    keys = [jax.random.key(100 + i) for i in range(a.members)]
    seeds = list(range(a.members))
    kw = dict(ks=tuple(int(k) for k in a.ks.split(",")), batch_size=a.batch_size, chunk_size=a.chunk_size)

    def sequential(xx):
        return [evaluate_split(model, p, xx, k, seed=s, **kw) for p, k, s in zip(params, keys, seeds)]

    def vectorized(xx):
        return evaluate_members(model, stacked, xx, keys, seeds, **kw)

    sequential(x[:a.batch_size])  # compile
    vectorized(x[:a.batch_size])
    times, _, out = common.round_robin({"sequential": lambda: sequential(x), "vectorized": lambda: vectorized(x)},
                                       a.repeats)
    diff = max(abs(v - s["iwae"][k]) / abs(s["iwae"][k])
               for r, s in zip(out["vectorized"], out["sequential"]) for k, v in r["iwae"].items())
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({
        "device_info": common.finish(info), "members": a.members,
        "examples": a.examples, **kw, "seconds_best": best, "seconds_all": times,
        "vectorized_over_sequential_speed": best["sequential"] / best["vectorized"],
        "max_rel_diff_iwae": diff}, indent=1))


if __name__ == "__main__":
    main()
