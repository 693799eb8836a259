"""AIS / BDMC / inference gaps on a trained binarized-MNIST run (benchmarks/README.md, "log p(x) sandwich").

    python benchmarks/ais_mnist.py /tmp/ais_runs/vae --data ../shared/data/binarized_mnist.npz \
        --examples 100 --ais-steps 100 --chains 4 --bdmc-examples 20 --bdmc-steps 100 --gaps-examples 100 --out /tmp/ais_runs/vae_sandwich.json

Rebuilds the model from <workdir>/config.json (runner.build_model), restores the latest checkpoint's params,
and evaluates the first ``--examples`` test images of ``--data`` (a binarized_mnist.npz; required). Cost: wall time per example of IWAE_K (K = 5000, chunks of 100) and of AIS for each T in
``--cost-steps``, after compilation, on one batch of ``--batch`` examples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import common
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.building import build_model
from jaxvae.vae import ais as A
from jaxvae.vae import gaps as G
from jaxvae.vae.evaluation import iwae_bound_chunked


def load(workdir: Path):
    config = base_config()  # fields added since the run was trained keep their defaults

    def merge(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and k in dst:
                merge(dst[k], v)
            else:
                dst[k] = tuple(v) if isinstance(v, list) else v

    merge(config, json.loads((workdir / "config.json").read_text()))
    model = build_model(config, 784)
    latest = workdir / "checkpoints" / "latest"
    step = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    state = ocp.StandardCheckpointer().restore((latest / str(step) / "default").resolve())
    return config, model, jax.tree_util.tree_map(jnp.asarray, state["params"]), step


def timed(fn, *args):
    """``(fn(*args), wall seconds)``, blocked on the result."""
    out, wall, _ = common.time_once(lambda: jax.block_until_ready(fn(*args)))
    return out, wall


def ais_vs_iwae(a, model, params, x_all, iw, key, hmc, rec):
    t0 = time.time()
    iwae = np.concatenate([np.asarray(iw(model, params, jnp.asarray(x_all[i:i + a.batch]), jax.random.fold_in(key, i),
                                         a.iwae_k, 100)) for i in range(0, len(x_all), a.batch)])
    t_iwae = time.time() - t0
    t0 = time.time()
    r = A.ais_dataset(model, params, x_all, jax.random.key(2), batch_size=a.batch, num_steps=a.ais_steps, **hmc)
    t_ais = time.time() - t0
    d = r["log_px"] - iwae
    rec["ais"] = {"num_steps": a.ais_steps, "chains": a.chains, "log_px": float(r["log_px"].mean()),
                  "iwae": float(iwae.mean()), "ais_minus_iwae": float(d.mean()),
                  "ais_minus_iwae_stderr": float(d.std(ddof=1) / np.sqrt(len(d))),
                  "acceptance": float(r["acceptance"].mean()), "step_size": float(np.median(r["step_size"])),
                  "seconds": t_ais, "seconds_iwae": t_iwae}
    print(json.dumps(rec["ais"]), flush=True)

    return r, iwae


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz (its test split is used)")
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--ais-steps", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--iwae-k", type=int, default=5000)
    ap.add_argument("--cost-steps", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--cost-examples", type=int, default=10)
    ap.add_argument("--bdmc-examples", type=int, default=20)
    ap.add_argument("--bdmc-steps", type=int, default=100)
    ap.add_argument("--bdmc-init", default="prior", choices=["prior", "encoder"])
    ap.add_argument("--only-bdmc", action="store_true", help="skip the cost, AIS and gap measurements")
    ap.add_argument("--gaps-examples", type=int, default=100)
    ap.add_argument("--gaps-max-steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    config, model, params, step = load(a.workdir)
    x_all = np.load(a.data)["test"][: a.examples].astype(np.float32)
    rec = {"workdir": str(a.workdir), "checkpoint_step": step, "objective": config.objective.name,
           "k": config.objective.k, "budget": config.train.budget, "examples": len(x_all),
           "device_info": common.device_info(),
           "args": vars(a) | {"workdir": str(a.workdir), "data": str(a.data), "out": str(a.out)}}
    key = jax.random.key(0)
    iw = jax.jit(iwae_bound_chunked, static_argnums=(0, 4, 5))
    hmc = dict(num_chains=a.chains, leapfrog_steps=a.leapfrog)

    if a.only_bdmc:
        a.cost_steps, a.examples, a.gaps_examples = [], 0, 0
    # cost per example (after compilation), on --cost-examples images
    xc = jnp.asarray(x_all[: a.cost_examples])
    if a.cost_steps:
        timed(iw, model, params, xc, key, a.iwae_k, 100)
        _, t_iw = timed(iw, model, params, xc, jax.random.key(1), a.iwae_k, 100)
        cost = {"iwae_k": a.iwae_k, "iwae_s_per_example": t_iw / len(xc)}
        timed(lambda: A.ais(model, params, xc, key, num_steps=2, **hmc).log_px)
        for t in a.cost_steps:
            _, s = timed(lambda: A.ais(model, params, xc, key, num_steps=t, **hmc).log_px)
            cost[f"ais_T{t}_s_per_example"] = s / len(xc)
            cost[f"ais_T{t}_over_iwae"] = s / t_iw
        rec["cost"] = cost
        print(json.dumps(cost), flush=True)

    # IWAE_K vs AIS on the same test images
    if a.examples:
        r, iwae = ais_vs_iwae(a, model, params, x_all, iw, key, hmc, rec)

    # BDMC on simulated examples
    if a.bdmc_examples:
        t0 = time.time()
        b = A.bdmc(model, params, jax.random.key(3), a.bdmc_examples, batch_size=a.batch, num_steps=a.bdmc_steps,
                   init=a.bdmc_init, **hmc)
        lo, up = b["lower"]["log_px"], b["upper"]["log_px"]
        iw_sim = np.asarray(iw(model, params, jnp.asarray(b["x"], jnp.float32), jax.random.key(4), a.iwae_k, 100))
        w = up - lo
        rec["bdmc"] = {"examples": a.bdmc_examples, "num_steps": a.bdmc_steps, "chains": a.chains, "init": a.bdmc_init,
                       "lower": float(lo.mean()), "upper": float(up.mean()), "width": float(w.mean()),
                       "width_stderr": float(w.std(ddof=1) / np.sqrt(len(w))), "iwae": float(iw_sim.mean()),
                       "iwae_inside_fraction": float(np.mean((iw_sim >= lo) & (iw_sim <= up))),
                       "iwae_minus_lower": float((iw_sim - lo).mean()),
                       "acceptance": [float(b["lower"]["acceptance"].mean()), float(b["upper"]["acceptance"].mean())],
                       "seconds": time.time() - t0}
        print(json.dumps(rec["bdmc"]), flush=True)

    # inference gaps on the first --gaps-examples images, log p(x) = max(AIS, IWAE_K) per example
    if a.gaps_examples:
        n = a.gaps_examples
        log_px = np.maximum(r["log_px"][:n], iwae[:n])
        t0 = time.time()
        g = G.inference_gaps_dataset(model, params, x_all[:n], log_px, jax.random.key(5), batch_size=min(n, 100),
                                     max_steps=a.gaps_max_steps, eval_samples=1000)
        rec["gaps"] = {k: float(np.mean(g[k])) for k in ("log_px", "elbo_amortized", "elbo_optimal",
                                                         "approximation_gap", "amortization_gap")}
        rec["gaps"].update(examples=n, steps=int(g["steps"].max()), converged=float(g["converged"].mean()),
                           amortization_gap_stderr=float(g["amortization_gap"].std(ddof=1) / np.sqrt(n)),
                           approximation_gap_stderr=float(g["approximation_gap"].std(ddof=1) / np.sqrt(n)),
                           log_px_estimator="max(AIS, IWAE_K) per example", seconds=time.time() - t0)
        print(json.dumps(rec["gaps"]), flush=True)
    common.finish(rec["device_info"])
    a.out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
