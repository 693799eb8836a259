"""The prepared accelerator check (issue 31, item 3): one command that measures jaxvae on whatever accelerator
JAX finds, in at most 8 minutes of wall time, and writes one JSON (summary.json) and one markdown table
(summary.md) under OUT, beside each step's own JSON and log. ``benchmarks/device_check.sh`` is its entry point
(it installs the carried wheels first and runs this from the source tree).

    python benchmarks/device_check.py OUT [--mnist FILE] [--tiny] [--budget-s 480] [--only STEP ...]

Steps, most informative first; each is a subprocess with its own time limit (seconds, on an H100/H200), so one
slow step cannot eat the others, and a failed or timed-out step records its error (the end of its log) and
the next one runs. A step's limit is also cut to what is left of --budget-s (default 480 s = 8 minutes); a step
with under 10 s left is skipped.

  step        limit  what                                                            script
  env           40   versions (python, jax, jaxlib, CUDA plugin, flax, optax, orbax,   device_env.py
                     chex, numpy, torch...), backend, devices; imports every jaxvae
                     module (an incompatibility shows here, within seconds)
  train        110   training examples/s at batch 20/100/1000 x ELBO / IWAE K=5 /     bench.py
                     K=50 (the runner's fused step), each beside the same model in
                     PyTorch eager on the same device (CUDA when torch sees it)
  eval          55   K=5000 log p(x) of all 10000 test images: seconds, peak device    bench.py
                     memory (memory_stats), XLA temp bytes; 4 (batch, chunk) sizes
                     tried on 1000 images first
  vectorized    50   8 seeds as one vectorized program vs 8 sequential runs, ELBO and  vectorized_bench.py
                     IWAE K=5, batch 20, 500 steps each
  ais           55   AIS on 100 test images at T=1000 (16 chains) beside IWAE_5000,    device_steps.py ais
                     after a short ELBO training
  conv          45   conv VAE (32x32x3, batch 64) training steps/s, fused epoch and    device_steps.py conv
                     one step per dispatch, vs the same network in PyTorch
  bf16          50   bf16 vs float32: training examples/s and test NLL after the same  device_steps.py bf16
                     6 epochs (IWAE K=5, batch 100); examples/s at batch 1000, K=50
  hier          50   two-layer IWAE (K=5, batch 20) for 5000 steps, then -IWAE_5000    device_steps.py hier
                     on 2000 test images
                ---
                455  (sum of the limits; the budget is 480 s)

``tests`` (the device-relevant test files under pytest, limit 150 s) runs only when named in --only. When the
env step finds JAX on the CPU (say, its CUDA plugin failed to load), the later steps are skipped, not run at
full size into their limits (``--allow-cpu`` runs them anyway): the device time is kept for a rerun.
``--tiny`` runs every step at toy sizes on whatever JAX finds (tests/test_device_check.py runs it on CPU): its
figures mean nothing; its limits are 10x (a loaded 2-core CPU compiles slowly) and there is no budget.
``--mnist FILE``: binarized_mnist.npz (device_check.sh passes WHEELS/binarized_mnist.npz when it is there); else
random binary images. The issue's ratios (benchmarks/README.md) are read back into summary.json's "goals": at
batch 20, ELBO training >= 5x PyTorch on the same GPU; K=5000 on 10000 images in under 30 s; 8 vectorized
seeds >= 5x faster than 8 sequential runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_BUDGET_S = 480.0
MIN_STEP_S = 10.0
TINY_SCALE = 10.0

# name: (limit in seconds, one line for the summary)
STEP_LIMITS: dict[str, tuple[float, str]] = {
    "env": (40, "versions, devices, import of every jaxvae module"),
    "train": (110, "training examples/s, batch 20/100/1000 x ELBO/IWAE 5/IWAE 50, vs PyTorch"),
    "eval": (55, "K=5000 log p(x) of 10000 test images: time, peak device memory"),
    "vectorized": (50, "8 seeds vectorized vs sequential (ELBO, IWAE K=5)"),
    "ais": (55, "AIS, 100 test images, T=1000, beside IWAE_5000"),
    "conv": (45, "conv VAE training rate vs PyTorch"),
    "bf16": (50, "bf16 vs float32: speed and test NLL after the same steps"),
    "hier": (50, "two-layer IWAE, 5000 steps, then NLL"),
}
EXTRA_STEPS: dict[str, tuple[float, str]] = {
    "tests": (150, "device-relevant tests under pytest"),
}
GOAL_B20_VS_TORCH = 5.0
GOAL_EVAL_S = 30.0
GOAL_VECTORIZED = 5.0


def commands(out: Path, tiny: bool, mnist: str) -> dict[str, list[str]]:
    py = sys.executable
    b = str(HERE)
    m = ["--mnist", mnist] if mnist else []
    t = ["--tiny"] if tiny else []
    return {
        "env": [py, f"{b}/device_env.py", "--json", str(out / "env.json")],
        "train": [py, f"{b}/bench.py", "--skip", "eval", "--out", str(out / "train.json"),
                  *(["--tiny"] if tiny else ["--batch-sizes", "20", "100", "1000", "--reps", "3",
                                             "--torch-target-s", "0.5", "--torch-reps", "3"])],
        "eval": [py, f"{b}/bench.py", "--skip", "train", "torch", "--out", str(out / "eval.json"), *m,
                 *(["--tiny"] if tiny else ["--eval-examples", "10000", "--eval-search-examples", "1000",
                                            "--eval-configs", "100:500", "100:1000", "500:500", "1000:100"])],
        "vectorized": [py, f"{b}/vectorized_bench.py", "--out", str(out / "vectorized.json"),
                       *(["--sizes", "2", "--steps", "3", "--repeats", "1", "--train-examples", "200",
                          "--peak-sizes", "256", "--objectives", "elbo", "--bandwidth-mib", "16"] if tiny else
                         ["--sizes", "8", "--steps", "500", "--repeats", "2", "--objectives", "elbo,iwae5"])],
        **{s: [py, f"{b}/device_steps.py", s, "--out", str(out / f"{s}.json"), *m, *t]
           for s in ("ais", "conv", "bf16", "hier")},
        # -o addopts=: one process, no pytest-xdist; the slow tests left out
        "tests": [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not slow",
                  f"--junitxml={out / 'tests.xml'}",
                  *(["tests/test_distributions.py"] if tiny else
                    ["tests/test_objectives.py", "tests/test_flows.py", "tests/test_parallel.py",
                     "tests/test_mixed_precision.py", "tests/test_vectorized.py", "tests/test_ais.py"])],
    }


def _json_lines(text: str) -> list:
    """The JSON objects a step printed one per line (what survives of a step stopped before its file)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def run_step(name: str, cmd: list[str], out: Path, limit: float, env: dict) -> dict:
    t0 = time.time()
    log = out / f"{name}.log"
    print(f"[device_check] {name} (limit {limit:.0f} s): {' '.join(cmd)}", flush=True)
    with log.open("w") as f:
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit)
            status = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:.0f} s"
    rec = {"status": status, "seconds": round(time.time() - t0, 1), "limit_s": round(limit, 1),
           "log": log.name, "command": cmd}
    text = log.read_text(errors="replace")
    if status != "ok":
        rec["error"] = text[-3000:]
    result = out / f"{name}.json"
    if result.exists():
        try:
            rec["result"] = json.loads(result.read_text())
        except ValueError as e:
            rec["result_error"] = repr(e)
    elif name != "tests":
        rec["printed"] = _json_lines(text)[-40:]
    print(f"[device_check] {name}: {status} in {rec['seconds']} s", flush=True)
    if status != "ok":
        print("\n".join(f"    | {line}" for line in text.strip().splitlines()[-15:]), flush=True)
    return rec


# -- goals and the markdown summary ------------------------------------------------------------------
def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def goals(steps: dict) -> dict:
    g = {}
    train = _get(steps, "train", "result", "train") or []
    b20 = [r for r in train if r["batch_size"] == 20 and r["objective"] == "elbo" and r.get("torch_best")]
    if b20:
        ratio = b20[0]["examples_per_s"] / b20[0]["torch_best"]["examples_per_s"]
        g["train_b20_elbo_vs_torch"] = {"value": ratio, "goal": GOAL_B20_VS_TORCH, "met": ratio >= GOAL_B20_VS_TORCH,
                                        "torch_device": b20[0]["torch_best"].get("device", "cpu")}
    ev = _get(steps, "eval", "result", "eval")
    if ev and "full_seconds" in ev and ev["main"]["k"] == 5000:  # not the tiny run's K=50
        g["eval_k5000_10000_s"] = {"value": ev["full_seconds"], "goal": GOAL_EVAL_S,
                                   "met": ev["full_seconds"] < GOAL_EVAL_S, "extrapolated": ev.get("extrapolated")}
    rows = _get(steps, "vectorized", "result", "rows") or [r for r in _get(steps, "vectorized", "printed") or []
                                                         if "speedup" in r]
    eight = {r["objective"]: r["speedup"] for r in rows if r.get("runs") == 8}
    if eight:
        g["vectorized_8_speedup"] = {"value": eight, "goal": GOAL_VECTORIZED,
                                     "met": min(eight.values()) >= GOAL_VECTORIZED}
    return g


def _f(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)


def markdown(record: dict) -> str:
    steps = record["steps"]
    env = _get(steps, "env", "result") or {}
    ver, be = env.get("versions", {}), env.get("backend", {})
    plugin = next((f"{k} {v}" for k, v in ver.items() if k.startswith("jax-cuda") and v), "no CUDA plugin")
    lines = [f"# jaxvae device check: {be.get('device_kind', '?')} ({be.get('jax_backend', '?')})", "",
             f"{record['date']}; python {ver.get('python', '?')}, jax {ver.get('jax', '?')}, jaxlib "
             f"{ver.get('jaxlib', '?')}, {plugin}, flax {ver.get('flax', '?')}, optax {ver.get('optax', '?')}, "
             f"numpy {ver.get('numpy', '?')}, torch {ver.get('torch', '?')} (CUDA: {be.get('torch_cuda')}); "
             f"{'tiny (toy sizes: the figures mean nothing)' if record['tiny'] else 'full'}; "
             f"{record.get('total_seconds', '?')} s in all, budget {record['budget_s'] or 'none'} s.", ""]
    if be.get("nvidia_smi"):
        lines += [f"nvidia-smi: {be['nvidia_smi']}", ""]
    if record.get("abort"):
        lines += [f"**Stopped after env: {record['abort']}**", ""]
    lines += ["| step | status | seconds | limit s | what |", "|---|---|---:|---:|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {s['limit_s']} | {s['what']} |")
    g = record.get("goals", {})
    if g:
        lines += ["", "## Goals (issue 31)", "", "| goal | value | met |", "|---|---|---|"]
        if "train_b20_elbo_vs_torch" in g:
            v = g["train_b20_elbo_vs_torch"]
            lines.append(f"| ELBO training, batch 20: >= {v['goal']:g}x PyTorch ({v['torch_device']}) | "
                         f"{v['value']:.2f}x | {'yes' if v['met'] else 'no'} |")
        if "eval_k5000_10000_s" in g:
            v = g["eval_k5000_10000_s"]
            lines.append(f"| K=5000 log p(x), 10000 images: < {v['goal']:g} s | {v['value']:.1f} s"
                         f"{' (extrapolated)' if v['extrapolated'] else ''} | {'yes' if v['met'] else 'no'} |")
        if "vectorized_8_speedup" in g:
            v = g["vectorized_8_speedup"]
            lines.append(f"| 8 vectorized seeds: >= {v['goal']:g}x 8 sequential | "
                         + ", ".join(f"{k} {x:.2f}x" for k, x in v["value"].items())
                         + f" | {'yes' if v['met'] else 'no'} |")
    train = _get(steps, "train", "result")
    if train and train.get("train"):
        peak = _get(train, "peak", "flop_per_s")
        lines += ["", f"## Training (examples/s; float32 matmul peak {_f(peak and peak / 1e12, '{:.1f}')} TFLOP/s)",
                  "", "| batch | objective | jaxvae | % peak | PyTorch | device | jaxvae/PyTorch |",
                  "|---:|---|---:|---:|---:|---|---:|"]
        for r in train["train"]:
            t = r.get("torch_best")
            obj = "ELBO" if r["objective"] == "elbo" else f"IWAE K={r['k']}"
            lines.append(f"| {r['batch_size']} | {obj} | {_f(r['examples_per_s'])} | "
                         f"{_f(peak and 100 * r['flop_per_s'] / peak, '{:.0f}%')} | "
                         f"{_f(t and t['examples_per_s'])} | {t.get('device', 'cpu') if t else 'n/a'} | "
                         f"{_f(t and r['examples_per_s'] / t['examples_per_s'], '{:.2f}x')} |")
    ev = _get(steps, "eval", "result", "eval")
    if ev:
        m = ev["main"]
        dm = ev.get("device_memory") or {}
        temp = (ev.get("memory_analysis") or {}).get("temp_size_in_bytes", 0)
        lines += ["", f"## K={m['k']} log p(x)", "",
                  f"{m['examples']} test images ({ev.get('data', '?')}), batch {m['batch_size']}, chunk "
                  f"{m['chunk_size']}: {m['seconds']:.1f} s ({ev['full_seconds']:.1f} s for 10000"
                  f"{', extrapolated' if ev['extrapolated'] else ''}), {ev['vs_floor']:.2f}x the FLOP floor; "
                  f"peak device memory {_f(dm.get('peak_bytes_in_use') and dm['peak_bytes_in_use'] / 2**20)} MiB "
                  f"(every size tried), XLA temp {_f(temp / 2**20)} MiB; mean IWAE_{m['k']} of the untrained model "
                  f"{-m['nll']:.2f}",
                  "", "tried: " + ", ".join(f"b{s['batch_size']}/c{s['chunk_size']} {s['seconds']:.2f} s"
                                            for s in ev.get("search", []))]
    rows = _get(steps, "vectorized", "result", "rows")
    if rows:
        lines += ["", "## Vectorized seeds", "", "| objective | seeds | sequential steps/s | vectorized steps/s | "
                  "speedup | ceiling |", "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['objective']} | {r['runs']} | {_f(r['sequential_steps_per_s'])} | "
                         f"{_f(r['vectorized_steps_per_s'])} | {r['speedup']:.2f}x | {r['speedup_ceiling']:.2f}x |")
    a = _get(steps, "ais", "result", "ais")
    if a:
        lines += ["", "## AIS", "", f"{a['examples']} test images, T={a['num_steps']}, {a['chains']} chains: "
                  f"{a['seconds']:.1f} s (compile {a['compile_s']:.1f} s before), IWAE_{a['iwae_k']} "
                  f"{a['seconds_iwae']:.1f} s; log p(x) AIS {a['log_px']:.2f}, IWAE {a['iwae']:.2f}, AIS - IWAE "
                  f"{a['ais_minus_iwae']:.2f} +- {a['ais_minus_iwae_stderr']:.2f}; acceptance {a['acceptance']:.2f}"]
    c = _get(steps, "conv", "result")
    if c and "jaxvae_per_step" in c:
        t = c.get("torch") if isinstance(c.get("torch"), dict) else None
        lines += ["", "## Conv VAE (32x32x3, batch 64)", "",
                  f"jaxvae {_f(_get(c, 'jaxvae_fused', 'examples_per_s'))} ex/s (one epoch per dispatch), "
                  f"{_f(_get(c, 'jaxvae_per_step', 'examples_per_s'))} ex/s (one step per dispatch); PyTorch "
                  f"{_f(t and t['examples_per_s'])} ex/s ({t['device'] if t else c.get('torch')}); jaxvae/PyTorch "
                  f"{_f(c.get('jaxvae_over_torch'), '{:.2f}x')}; conv peak "
                  f"{_f(_get(c, 'conv_peak', 'gflops_per_s'), '{:,.0f}')} GFLOP/s"]
    b = _get(steps, "bf16", "result")
    if b and "runs" in b:
        lines += ["", "## bf16 vs float32", "", "| dtype | train ex/s (b100, K=5) | test NLL | ex/s (large) |",
                  "|---|---:|---:|---:|"]
        for dt, r in b["runs"].items():
            lines.append(f"| {dt} | {_f(r['training']['examples_per_s'])} | {r['nll']:.2f} (K={r['eval_k']}, "
                         f"{r['eval_examples']} images) | {_f(_get(b, 'throughput_large', dt, 'examples_per_s'))} |")
        lines.append(f"\nbf16/f32 speed {_f(b.get('speedup_b100_k5'), '{:.2f}x')} (b100), "
                     f"{_f(b.get('speedup_large'), '{:.2f}x')} (large); NLL bf16 - f32 "
                     f"{_f(b.get('nll_bf16_minus_f32'), '{:+.2f}')} nats")
    h = _get(steps, "hier", "result")
    if h and "training" in h:
        tr, te = h["training"], h.get("test") or {}
        lines += ["", "## Two-layer IWAE (K=5, batch 20)", "",
                  f"{tr['steps']} steps: {_f(tr['examples_per_s'])} ex/s after the first epoch (which took "
                  f"{tr['first_epoch_s']:.1f} s with compilation); loss per epoch "
                  + ", ".join(f"{v:.2f}" for v in tr["losses"])
                  + (f"; test NLL {te['nll']:.2f} (K={te['k']}, {te['examples']} images, {te['seconds']:.1f} s)"
                     if te else "")]
    return "\n".join(lines) + "\n"


def save(out: Path, record: dict) -> None:
    (out / "summary.json").write_text(json.dumps(record, indent=1, default=float))
    (out / "summary.md").write_text(markdown(record))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for summary.json, summary.md and each step's JSON and log (created)")
    ap.add_argument("--mnist", default="", help="binarized_mnist.npz (else random binary images)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU test")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"wall-time budget of all steps (default {DEFAULT_BUDGET_S:.0f}; none with --tiny)")
    ap.add_argument("--timeout-scale", type=float, default=None,
                    help=f"multiply every step's limit (default 1; {TINY_SCALE:g} with --tiny)")
    ap.add_argument("--only", nargs="*", default=None, choices=[*STEP_LIMITS, *EXTRA_STEPS])
    ap.add_argument("--allow-cpu", action="store_true",
                    help="go on at full sizes when JAX finds no accelerator (by default the steps after env "
                         "are skipped then)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    tiny = args.tiny
    budget = args.budget_s if args.budget_s is not None else (float("inf") if tiny else DEFAULT_BUDGET_S)
    scale = args.timeout_scale or (TINY_SCALE if tiny else 1.0)
    names = args.only if args.only else list(STEP_LIMITS)
    names = [n for n in [*STEP_LIMITS, *EXTRA_STEPS] if n in names]  # always in the documented order
    cmds = commands(out, tiny, args.mnist)
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tiny": tiny,
              "budget_s": budget if budget != float("inf") else None,
              "mnist": args.mnist or None, "steps": {}}
    t0 = time.time()
    for name in names:
        limit_s, what = {**STEP_LIMITS, **EXTRA_STEPS}[name]
        left = budget - (time.time() - t0)
        limit = min(limit_s * scale, left)
        if limit < MIN_STEP_S:
            record["steps"][name] = {"status": f"skipped ({left:.0f} s of the budget left)", "seconds": 0,
                                     "limit_s": 0, "what": what}
            print(f"[device_check] {name}: skipped, {left:.0f} s of the budget left", flush=True)
        elif record.get("abort"):
            record["steps"][name] = {"status": "skipped (no accelerator)", "seconds": 0, "limit_s": 0, "what": what}
        else:
            record["steps"][name] = dict(run_step(name, cmds[name], out, limit, env), what=what)
            st = record["steps"][name]
            backend = _get(st, "result", "backend") or next(
                (p for p in st.get("printed", []) if "jax_backend" in p or "jax_error" in p), {})
            no_accelerator = backend.get("jax_backend") == "cpu" or "jax_error" in backend
            if name == "env" and not tiny and not args.allow_cpu and no_accelerator:
                # the full sizes on a CPU would only run into every time limit: keep the device time for a rerun
                record["abort"] = (f"JAX found no accelerator ({backend.get('jax_error') or 'backend cpu'}); "
                                   "see env.log; --allow-cpu measures anyway")
                print(f"[device_check] {record['abort']}", flush=True)
        record["total_seconds"] = round(time.time() - t0, 1)
        record["goals"] = goals(record["steps"])
        save(out, record)
    print(f"[device_check] wrote {out / 'summary.json'} and {out / 'summary.md'}", flush=True)
    print((out / "summary.md").read_text(), flush=True)
    return 0 if all(s["status"] == "ok" for s in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
