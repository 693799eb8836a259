"""Cost per training step of each estimator of experiments/tighter_bounds.py, relative to IWAE(64), measured
in one process (the same jitted Adam step as training: value_and_grad of the registered loss + optax update).

    python benchmarks/tighter_bounds_bench.py [--steps 30] [--repeats 3]

784-200-200-50 tanh MLP, Bernoulli likelihood, batch 20, 64 samples per example. Estimators are timed
round-robin (repeats x steps each), so slow phases of a shared machine hit all of them alike; the median
time per step of each is divided by IWAE(64)'s.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import common
from jaxvae.vae.model import VAE
from jaxvae.vae.objectives import make_loss_fn

ESTIMATORS = (("iwae_64", "iwae", {"k": 64}), ("miwae_8x8", "miwae", {"m": 8, "k": 8}),
              ("piwae_8x8", "piwae", {"m": 8, "k": 8}), ("ciwae_0.5", "ciwae", {"k": 64, "beta_ciwae": 0.5}),
              ("vae_64", "elbo", {"k": 64}), ("rws_64", "rws", {"k": 64}), ("dreg_64", "iwae_dreg", {"k": 64}),
              ("rws_dreg_64", "rws_dreg", {"k": 64}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    info = common.device_info()
    model = VAE(784, 50, (200, 200), (200, 200), "tanh", "bernoulli")
    params = model.init(jax.random.key(0))
    tx = optax.adam(1e-3, 0.9, 0.999, 1e-4)
    x = (jax.random.uniform(jax.random.key(1), (20, 784)) > 0.8).astype(jnp.float32)

    steps = {}
    for label, name, opts in ESTIMATORS:
        loss_fn = make_loss_fn(model, name, **opts)

        def run(params, opt, key, loss_fn=loss_fn):
            def body(carry, k):
                p, o = carry
                (_, _), g = jax.value_and_grad(lambda q: loss_fn(q, x, k), has_aux=True)(p)
                u, o = tx.update(g, o, p)
                return (optax.apply_updates(p, u), o), None
            return jax.lax.scan(body, (params, opt), jax.random.split(key, a.steps))[0]

        steps[label] = jax.jit(run)
        jax.block_until_ready(steps[label](params, tx.init(params), jax.random.key(2)))  # compile
    times = {label: [] for label in steps}
    for r in range(a.repeats):  # round-robin; round r draws with key 3 + r in every estimator
        for label, fn in steps.items():
            _, wall, _ = common.time_once(lambda: jax.block_until_ready(fn(params, tx.init(params),
                                                                           jax.random.key(3 + r))))
            times[label].append(wall / a.steps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"device_info": common.finish(info), "steps": a.steps, "repeats": a.repeats,
           "ms_per_step": {k: 1e3 * v for k, v in med.items()},
           "relative_to_iwae_64": {k: v / med["iwae_64"] for k, v in med.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
