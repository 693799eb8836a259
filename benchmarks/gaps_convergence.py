"""q* convergence check: inference_gaps with the stopping rule off for MAX_STEPS steps, first 100 test images.

    python benchmarks/gaps_convergence.py /tmp/ais_runs/vae 3000
"""
import sys, json, time
sys.path.insert(0, "benchmarks")
import numpy as np, jax, jax.numpy as jnp
from pathlib import Path
from ais_mnist import load
from jaxvae.vae import gaps as G
config, model, params, step = load(Path(sys.argv[1]))
x = jnp.asarray(np.load("/work/shared/data/binarized_mnist.npz")["test"][:100].astype(np.float32))
t0 = time.time()
g = G.inference_gaps(model, params, x, jnp.zeros(100), jax.random.key(5), max_steps=int(sys.argv[2]), tol=-1e9, eval_samples=1000)
print(json.dumps({"max_steps": int(sys.argv[2]), "elbo_amortized": float(g["elbo_amortized"].mean()), "elbo_optimal": float(g["elbo_optimal"].mean()),
 "amortization_gap": float(g["amortization_gap"].mean()), "steps": int(g["steps"]), "seconds": time.time() - t0}), flush=True)
