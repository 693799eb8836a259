"""q* convergence check: inference_gaps with the stopping rule off for MAX_STEPS steps, first 100 test images.

    python benchmarks/gaps_convergence.py /tmp/ais_runs/vae 3000 --data ../shared/data/binarized_mnist.npz
"""
import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import common
from ais_mnist import load
from jaxvae.vae import gaps as G

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("workdir", type=Path, help="a finished binarized-MNIST run (as benchmarks/ais_mnist.py)")
ap.add_argument("max_steps", type=int)
ap.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz (its test split is used)")
a = ap.parse_args()
info = common.device_info()
config, model, params, step = load(a.workdir)
x = jnp.asarray(np.load(a.data)["test"][:100].astype(np.float32))
g, seconds, _ = common.time_once(lambda: jax.block_until_ready(G.inference_gaps(
    model, params, x, jnp.zeros(100), jax.random.key(5), max_steps=a.max_steps, tol=-1e9, eval_samples=1000)))
print(json.dumps({"max_steps": a.max_steps, "elbo_amortized": float(g["elbo_amortized"].mean()),
                  "elbo_optimal": float(g["elbo_optimal"].mean()),
                  "amortization_gap": float(g["amortization_gap"].mean()), "steps": int(g["steps"]),
                  "seconds": seconds, "device_info": common.finish(info)}), flush=True)
