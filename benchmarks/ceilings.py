"""Ceilings for the CPU speed targets (issue 20), measured in one process beside the figures they bound.

    python benchmarks/ceilings.py [--batch-sizes 20 100 1000] [--skip-torch] [--out F.json]

For each training row (batch B, objective ELBO / IWAE K) this times, in the same process:

* ``step``   one jaxvae training step (the runner's fused ``make_run_steps``, as ``bench.py``);
* ``torch``  the PyTorch-eager reference step (``bench.torch_reference``, the faster of 1 and 2 threads);
* ``adam``   the ``optax.adam`` update of the model's parameters alone (``train.make_optimizer``);
* ``matmul`` the step's matrix products alone: value-and-gradient of the *linear* encoder
  (B x 784 -> 200 -> 200 -> 100) and decoder ((K B) x 50 -> 200 -> 200 -> 784) with the same shapes,
  i.e. every forward product and both backward products (dX = dY W^T, dW = X^T dY) of the real step;
* ``lik``    the Bernoulli log-likelihood pass over the (K, B, 784) logits, forward and backward.

Each is a jitted ``lax.scan`` of many iterations whose carry feeds the next iteration (nothing can be
hoisted), divided by the iteration count, median of repeats.

Ceilings derived from them (what jaxvae could reach if all *other* work cost nothing):

* ratio to torch <= torch / (matmul + adam): the batch-20 target (>= 2.5x) is out of reach when this
  is below 2.5;
* fraction of peak <= FLOPs / (matmul + adam) / peak, and <= FLOPs / (matmul + adam + lik) / peak
  with the likelihood pass that no implementation avoids (it can only be fused);
* K=5000 evaluation: per importance sample the decoder's forward products, its two tanh layers, the
  softplus log-likelihood and the normal draws, timed alone at the evaluation's chunk shape: the
  evaluation cannot beat (matmul + elementwise) / matmul-floor times its FLOP floor.

The peak is ``bench.matmul_peak`` (n = 1024/2048/4096 float32 products) measured at the start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bench
import common
from jaxvae.experiment import train as train_lib

ENC = (bench.X_DIM, *bench.HIDDEN, 2 * bench.LATENT)
DEC = (bench.LATENT, *bench.HIDDEN, bench.X_DIM)


def _weights(widths, key):
    ks = jax.random.split(key, len(widths) - 1)
    return [jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a) for k, a, b in zip(ks, widths[:-1], widths[1:])]


def _chain(ws, x):
    for w in ws:
        x = x @ w
    return x


def time_scan(body, carry, args, n: int, reps: int = 5) -> float:
    """Seconds per iteration of ``carry = body(carry, args)`` run ``n`` times in one jitted scan (median).

    The arrays come in as arguments (closed-over constants would be constant-folded), and every body
    reduces *all* of its outputs into the carry (a sliced output lets XLA slice the work away; a sum over
    a matrix product lets it sum the operands first, so products are reduced with max)."""
    f = jax.jit(lambda c, a: jax.lax.scan(lambda c, _: (body(c, a), None), c, None, length=n)[0])
    jax.block_until_ready(f(carry, args))
    walls, _ = common.timed(lambda: jax.block_until_ready(f(carry, args)), reps)
    return float(np.median(walls)) / n


def matmul_seconds(b: int, k: int, n: int) -> float:
    key = jax.random.key(0)
    we, wd = _weights(ENC, key), _weights(DEC, jax.random.fold_in(key, 1))
    x = jnp.asarray(bench.random_binary(b))
    z = jax.random.normal(jax.random.fold_in(key, 2), (k * b, bench.LATENT))
    ge = jax.random.normal(jax.random.fold_in(key, 3), (b, ENC[-1]))
    gd = jax.random.normal(jax.random.fold_in(key, 4), (k * b, bench.X_DIM))

    def body(c, a):
        we, wd, z, x, ge, gd = a
        # vjp, not grad: the forward outputs are used too (grad of a linear map would skip the last
        # forward product, whose value no gradient needs)
        (oe, od), vjp = jax.vjp(lambda we, wd, z: (_chain(we, x + c), _chain(wd, z + c)), we, wd, z)
        gwe, gwd, gz = vjp((ge, gd))
        # max, not sum: XLA rewrites sum(A @ B) as (1'A)(B1), which skips the product
        return 1e-30 * (jnp.max(oe) + jnp.max(od) + sum(jnp.max(g) for g in (*gwe, *gwd)) + jnp.max(gz))

    return time_scan(body, jnp.float32(0.0), (we, wd, z, x, ge, gd), n)


def adam_seconds(n: int) -> float:
    cfg = bench.iwae_mnist_config(20, "elbo", 1)
    schedule, _ = train_lib.learning_rate_schedule(cfg, 100)
    tx = train_lib.make_optimizer(cfg, schedule)
    params = bench.make_model().init(jax.random.key(0))
    grads = jax.tree_util.tree_map(lambda p: 1e-3 * jnp.ones_like(p), params)
    import optax

    def body(c, grads):
        p, s = c
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    return time_scan(body, (params, tx.init(params)), grads, n)


def likelihood_seconds(b: int, k: int, n: int) -> float:
    x = jnp.asarray(bench.random_binary(b))
    logits = jax.random.normal(jax.random.key(5), (k, b, bench.X_DIM))

    def ll(l, x):
        return jnp.sum(x * l - jax.nn.softplus(l))

    g = jax.grad(ll)

    def body(c, a):
        logits, x = a
        return 1e-30 * jnp.sum(g(logits + c, x))

    return time_scan(body, jnp.float32(0.0), (logits, x), n)


def eval_parts_seconds(rows: int, n: int) -> dict:
    """One evaluation chunk of ``rows`` = chunk x batch importance samples: decoder forward products
    alone, and the elementwise work alone (2 tanh layers, softplus likelihood, normal draws)."""
    key = jax.random.key(7)
    wd = _weights(DEC, key)
    z = jax.random.normal(jax.random.fold_in(key, 1), (rows, bench.LATENT))
    h = jax.random.normal(jax.random.fold_in(key, 2), (rows, bench.HIDDEN[0]))
    lg = jax.random.normal(jax.random.fold_in(key, 3), (rows, bench.X_DIM))
    x = jnp.asarray(bench.random_binary(rows))

    def mm(c, a):
        wd, z = a
        return 1e-30 * jnp.max(_chain(wd, z + c))  # max: a sum of a product is simplified away

    def elem(c, a):
        h, lg, x = a
        e = jax.random.normal(jax.random.fold_in(key, 9), (rows, bench.LATENT))
        t = jnp.tanh(jnp.tanh(h + c) + c)  # the decoder's two hidden tanh layers
        ll = jnp.sum(x * (lg + c) - jax.nn.softplus(lg + c), -1)
        return 1e-30 * (jnp.sum(t) + jnp.sum(ll) + jnp.sum(e))

    return {"matmul_s": time_scan(mm, jnp.float32(0.0), (wd, z), n),
            "elementwise_s": time_scan(elem, jnp.float32(0.0), (h, lg, x), n),
            "rows": rows, "matmul_flop": float(rows) * bench.DEC_FWD}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[20, 100, 1000])
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="few iterations (keeps the script from rotting)")
    ap.add_argument("--out", type=str, default=None)
    a = ap.parse_args(argv)
    info = common.device_info()
    say = lambda *s: print(*s, flush=True)  # noqa: E731
    say(f"{info['cpu_model']}, load {info['loadavg_start']}")
    peak = bench.matmul_peak([256] if a.tiny else [1024, 2048, 4096], reps=2 if a.tiny else 5)
    say(f"peak {peak['flop_per_s'] / 1e9:.1f} GFLOP/s")
    it = 3 if a.tiny else None
    t_adam = adam_seconds(it or 300)
    say(f"adam update alone: {t_adam * 1e6:.0f} us")
    rows = []
    for b in a.batch_sizes:
        for obj, k in bench.OBJECTIVES:
            flop = bench.train_flops_per_example(k) * b
            n = it or int(np.clip(4e9 / flop, 20, 2000))
            r = bench.bench_train(b, obj, k, bench.steps_for(b, k, 2e7 if a.tiny else 4e10,
                                                            200 if a.tiny else 50000), 1 if a.tiny else 5)
            t_step = b / r["examples_per_s"]
            t_mm, t_lik = matmul_seconds(b, k, n), likelihood_seconds(b, k, n)
            row = {"batch_size": b, "objective": obj, "k": k, "flop_per_step": flop, "step_s": t_step,
                   "matmul_s": t_mm, "adam_s": t_adam, "lik_s": t_lik,
                   "peak_fraction": flop / t_step / peak["flop_per_s"],
                   "peak_fraction_ceiling": flop / (t_mm + t_adam) / peak["flop_per_s"],
                   "peak_fraction_ceiling_with_lik": flop / (t_mm + t_adam + t_lik) / peak["flop_per_s"],
                   "matmul_fraction_of_peak": flop / t_mm / peak["flop_per_s"]}
            if row["matmul_fraction_of_peak"] > 1.05 and not a.tiny:
                say(f"WARNING: the products alone ran at {row['matmul_fraction_of_peak']:.2f}x the peak: either the "
                    "peak was measured under load or XLA dropped work; do not trust this row")
            if not a.skip_torch and bench._torch() is not None:
                refs = [bench.torch_reference(b, obj, k, th, target_s=0.2 if a.tiny else 1.0, reps=1 if a.tiny else 5)
                        for th in sorted({common.num_threads(), 1})]
                t_torch = b / max(t["examples_per_s"] for t in refs)
                row.update(torch_s=t_torch, ratio=t_torch / t_step, ratio_ceiling=t_torch / (t_mm + t_adam))
            rows.append(row)
            say(json.dumps({k_: (round(v, 7) if isinstance(v, float) else v) for k_, v in row.items()}))
    ev = eval_parts_seconds(100 * 100, it or 50)  # the evaluation's default chunk 100 x batch 100
    per_sample_floor = ev["matmul_flop"] / peak["flop_per_s"]
    ev.update(floor_s=per_sample_floor, ceiling_vs_floor=(ev["matmul_s"] + ev["elementwise_s"]) / per_sample_floor,
              matmul_vs_floor=ev["matmul_s"] / per_sample_floor)
    say("eval chunk: " + json.dumps(ev))
    out = {"device_info": common.finish(info), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "peak": peak, "rows": rows,
           "eval_chunk": ev, "command": "python benchmarks/ceilings.py " + " ".join(argv or sys.argv[1:])}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
