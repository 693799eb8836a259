"""The prepared accelerator check: one command that measures jaxvae on a machine with a GPU or TPU and
writes every figure as JSON under one folder (``benchmarks/device_check.sh`` installs the JAX build first).

    python benchmarks/device_check.py OUT_DIR [--data DIR] [--tiny] [--budget-s 480]

Steps, each a subprocess with its own time limit (a failed or timed-out step is recorded and the next
one runs), in this order so that the most informative figures come first:

  machine     devices, backend, driver (nvidia-smi), CPU model, JAX version            -> machine.json
  tests       the device-relevant tests on the accelerator (objectives, flows, parallel,
              mixed precision, vectorized groups)                                       -> tests.xml
  train       training throughput, batch 20/100/1000 x ELBO / IWAE 5 / IWAE 50, with
              the matmul peak measured in the same process (benchmarks/bench.py)       -> train.json
  vectorized  groups of 1/8/32 seeds vs as many sequential runs, with ceilings
              (benchmarks/vectorized_bench.py)                                          -> vectorized.json
  eval        the K=5000 log-likelihood estimate of 10000 test images (bench.py)        -> eval.json
  iwae_mnist  a reduced-budget experiments/iwae_mnist.py run (binarized MNIST from
              --data; the embedded digits quick start when no data is given)           -> run/results.json
  summary     each step's status and seconds, and the goals of issue 20                 -> summary.json

``--tiny`` runs everything at toy sizes on whatever JAX finds (a CPU test runs it so that the script
cannot rot); its figures mean nothing. Goals (benchmarks/README.md): training within 2x of the FLOP/HBM
floor at batch >= 1000, 32 vectorized seeds >= 10x the runs/hour of 32 sequential runs, K=5000 on 10000
images in under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _machine(out: Path) -> dict:
    code = ("import jax, json; print(json.dumps({'jax': jax.__version__, 'backend': jax.default_backend(), "
            "'devices': [str(d) for d in jax.devices()], 'device_kind': jax.devices()[0].device_kind}))")
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    info.update(json.loads(p.stdout) if p.returncode == 0 else {"jax_error": p.stderr[-2000:]})
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        info["nvidia_smi"] = q.stdout.strip()
    (out / "machine.json").write_text(json.dumps(info, indent=1))
    return info


def _step(name: str, cmd: list[str], out: Path, timeout: float, env: dict) -> dict:
    t0 = time.time()
    log = out / f"{name}.log"
    print(f"[device_check] {name}: {' '.join(cmd)}", flush=True)
    with log.open("w") as f:
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            status = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    rec = {"status": status, "seconds": round(time.time() - t0, 1), "log": log.name, "command": cmd}
    print(f"[device_check] {name}: {status} in {rec['seconds']} s", flush=True)
    return rec


def _goals(out: Path) -> dict:
    """The issue's goals, read back from the step outputs (None where a step did not produce them)."""
    goals = {}
    try:
        train = json.loads((out / "train.json").read_text())
        peak = train["peak"]["flop_per_s"]
        big = [r for r in train.get("train", []) if r["batch_size"] >= 1000]
        goals["train_b1000_fraction_of_matmul_peak"] = {f"{r['objective']}_k{r['k']}": r["flop_per_s"] / peak
                                                        for r in big}
    except (OSError, KeyError, ValueError):
        pass
    try:
        ev = json.loads((out / "eval.json").read_text())["eval"]
        goals["eval_k5000_10000_images_seconds"] = ev["full_seconds"]
        goals["eval_under_30_s"] = ev["full_seconds"] < 30
    except (OSError, KeyError, ValueError):
        pass
    try:
        rows = json.loads((out / "vectorized.json").read_text())["rows"]
        goals["vectorized_32_speedup"] = {r["objective"]: r["speedup"] for r in rows if r["runs"] == 32}
    except (OSError, KeyError, ValueError):
        pass
    return goals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for the JSON files and logs (created)")
    ap.add_argument("--data", default="", help="folder with binarized_mnist.npz (or the .amat files)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU smoke test")
    ap.add_argument("--timeout-scale", type=float, default=None,
                    help="multiply every step's time limit (default 1; 10 with --tiny, for loaded CPUs)")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["tests", "train", "vectorized", "eval", "iwae_mnist"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    py = sys.executable
    tiny = args.tiny
    machine = _machine(out)
    steps: dict[str, tuple[list[str], float]] = {
        # -o addopts=: one process, no pytest-xdist (the device image may lack it), the slow tests left out
        "tests": ([py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not slow",
                   f"--junitxml={out / 'tests.xml'}",
                   *(["tests/test_distributions.py"] if tiny else
                     ["tests/test_objectives.py", "tests/test_flows.py", "tests/test_parallel.py",
                      "tests/test_mixed_precision.py", "tests/test_vectorized.py"])], 60 if tiny else 150),
        "train": ([py, "benchmarks/bench.py", "--skip", "eval", "torch", "--out", str(out / "train.json"),
                   *(["--tiny"] if tiny else ["--batch-sizes", "20", "100", "1000", "--reps", "3"])],
                  120 if tiny else 120),
        "vectorized": ([py, "benchmarks/vectorized_bench.py", "--out", str(out / "vectorized.json"),
                        *(["--sizes", "1,2", "--steps", "3", "--repeats", "1", "--train-examples", "200",
                           "--peak-sizes", "256", "--objectives", "elbo", "--bandwidth-mib", "16"] if tiny else ["--sizes", "1,8,32", "--steps", "300"])],
                       120 if tiny else 110),
        "eval": ([py, "benchmarks/bench.py", "--skip", "train", "torch", "--out", str(out / "eval.json"),
                  *(["--tiny"] if tiny else ["--eval-examples", "10000"])], 120 if tiny else 60),
    }
    run_dir = out / "run"
    if args.data and not tiny:
        run = [py, "-m", "jaxvae.main", "--config=experiments/iwae_mnist.py", f"--workdir={run_dir}",
               "--config.objective.k=5", "--config.train.budget=0.003", f"--config.data.manual_dir={args.data}",
               f"--config.data.data_dir={out / 'tfds'}", "--config.eval.images=False"]
    else:
        run = [py, "-m", "jaxvae.main", "--config=experiments/quickstart.py", f"--workdir={run_dir}",
               "--config.eval.images=False",
               *(["--config.train.num_epochs=1", "--config.eval.ks=(1,5)", "--config.eval.max_examples=50",
                  "--config.train.eval_every_epochs=0"] if tiny else [])]
    steps["iwae_mnist"] = (run, 120 if tiny else 90)
    record = {"machine": machine, "tiny": tiny, "steps": {}}
    t0 = time.time()
    for name, (cmd, timeout) in steps.items():
        if args.only and name not in args.only:
            continue
        scale = args.timeout_scale or (10.0 if tiny else 1.0)
        record["steps"][name] = _step(name, cmd, out, timeout * scale, env)
        (out / "summary.json").write_text(json.dumps(record, indent=1))
    record["total_seconds"] = round(time.time() - t0, 1)
    record["goals"] = _goals(out)
    if (run_dir / "results.json").exists():
        r = json.loads((run_dir / "results.json").read_text())
        record["run"] = {"test": r["test"], "train": r["train"]}
    (out / "summary.json").write_text(json.dumps(record, indent=1, default=float))
    print(json.dumps({k: v["status"] for k, v in record["steps"].items()}), flush=True)
    return 0 if all(v["status"] == "ok" for v in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
