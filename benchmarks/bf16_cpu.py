"""bfloat16 against float32 training on this CPU (issue 31 item 5), in one process.

    python benchmarks/bf16_cpu.py [--data ../shared/data] [--train-steps 1500] [--out benchmarks/results/bf16_cpu.json]

* Speed: training examples/s of the fused runner (``train.make_run_steps``, one whole epoch per timed call)
  for the IWAE paper's 784-200-200-50 tanh MLP (Bernoulli, IWAE K=5) at batch 20 and 100, with
  ``model.compute_dtype`` float32 and bfloat16, interleaved (``common.round_robin``).
* Quality: the test NLL estimate (-IWAE_500, evaluated in float32 as every run is) after the same number of
  steps, for 2 seeds of each dtype: binarized MNIST from ``--data`` (binarized_mnist.npz; 1000 test images),
  else random binary images (then only the speed means something).
* Why: the optimized HLO of the bfloat16 train step, read for its dot instructions: whether XLA:CPU runs them
  on bf16 operands or converts them to f32 first (then bfloat16 only adds converts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import iwae_mnist_config, make_model, random_binary
from common import RESULTS, cpu_flags, device_info, finish, machine_line, round_robin
from jaxvae.experiment import train as train_lib
from jaxvae.vae.evaluation import iwae_bound_chunked


def _data(folder: str, n_test: int = 1000) -> tuple[np.ndarray, np.ndarray, str]:
    path = Path(folder) / "binarized_mnist.npz" if folder else None
    if path is not None and path.exists():
        d = np.load(path)
        return d["train"].astype(np.float32), d["test"][:n_test].astype(np.float32), str(path.name)
    return random_binary(10000, 0), random_binary(n_test, 1), "random binary images"


def _trainer(dtype: str, batch_size: int, steps: int, x_train: np.ndarray, seed: int):
    config = iwae_mnist_config(batch_size, "iwae", 5)
    config.model.compute_dtype = dtype
    model = dataclasses.replace(make_model(), compute_dtype=dtype)
    schedule, _ = train_lib.learning_rate_schedule(config, steps)
    tx = train_lib.make_optimizer(config, schedule)
    state = train_lib.create_train_state(model, tx, seed)
    run_steps = train_lib.make_run_steps(model, config, tx, steps, batch_size)
    x = jax.device_put(x_train[:steps * batch_size])
    holder = {"state": state}

    def once():
        s, info = run_steps(holder["state"], x, steps)
        jax.block_until_ready((s, info))
        holder["state"] = s

    return model, holder, once, run_steps, x


def _dots(run_steps, holder, x, steps: int) -> dict:
    """Dot instructions of the optimized HLO by operand type (bf16 / f32)."""
    text = run_steps.lower(holder["state"], x, steps).compile().as_text()
    dots = [line for line in text.splitlines() if re.search(r"\bdot\(|custom-call.*matmul|__onednn\$matmul", line)]
    return {"dots": len(dots), "bf16_dots": sum("bf16[" in line.split("=", 1)[-1] for line in dots),
            "converts_to_bf16": len(re.findall(r"bf16\[[^\]]*\][^=\n]*= *bf16\[[^\]]*\]\{?[^ ]* convert\(", text))
            + text.count("convert(f32"), "sample": dots[:3]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="", help="folder with binarized_mnist.npz")
    ap.add_argument("--train-steps", type=int, default=1500, help="steps of each quality run (batch 100)")
    ap.add_argument("--speed-steps", type=int, default=100, help="steps per timed dispatch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "bf16_cpu.json"))
    args = ap.parse_args(argv)
    info = device_info()
    x_train, x_test, source = _data(args.data)
    flags = cpu_flags()
    record = {"machine": info, "data": source, "cpu_bf16_flags": [f for f in flags if "bf16" in f or "amx" in f],
              "speed": {}, "quality": {}, "hlo": {}}
    for batch in (20, 100):
        fns, hlo = {}, {}
        for dtype in ("float32", "bfloat16"):
            _, holder, once, run_steps, x = _trainer(dtype, batch, args.speed_steps, x_train, 0)
            once()  # compile
            fns[dtype] = once
            if batch == 100:
                hlo[dtype] = _dots(run_steps, holder, x, args.speed_steps)
        walls, _, _ = round_robin(fns, args.rounds, alternate=True)
        record["speed"][str(batch)] = {d: {"examples_per_s_median": args.speed_steps * batch / float(np.median(w)),
                                           "examples_per_s_best": args.speed_steps * batch / float(np.min(w))}
                                       for d, w in walls.items()}
        record["hlo"].update(hlo)
        print(f"batch {batch}: " + ", ".join(f"{d} {v['examples_per_s_median']:,.0f} ex/s"
                                              for d, v in record["speed"][str(batch)].items()), flush=True)
    steps, batch = args.train_steps, 100
    evaluate = jax.jit(iwae_bound_chunked, static_argnums=(0, 4, 5))
    for dtype in ("float32", "bfloat16"):
        for seed in (0, 1):
            t0 = time.time()
            per_epoch = len(x_train) // batch
            model, holder, once, run_steps, x = _trainer(dtype, batch, per_epoch, x_train, seed)
            done = 0
            while done < steps:
                n = min(per_epoch - done % per_epoch, steps - done)
                s, _ = run_steps(holder["state"], x, n)
                holder["state"] = s
                done += n
            params = jax.device_get(holder["state"].params)
            bound = np.asarray(evaluate(model.in_float32(), params, jnp.asarray(x_test), jax.random.key(9), 500, 100))
            record["quality"][f"{dtype}/seed{seed}"] = {"nll_k500": float(-bound.mean()), "steps": steps,
                                                        "seconds": time.time() - t0}
            print(f"{dtype} seed {seed}: NLL (K=500) {-bound.mean():.3f} after {steps} steps "
                  f"({time.time() - t0:.0f} s)", flush=True)
    record["machine"] = finish(info)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    print(machine_line(record["machine"]))
    print(json.dumps({"hlo": {k: {kk: vv for kk, vv in v.items() if kk != "sample"} for k, v in record["hlo"].items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
