"""Throughput benchmark of jaxvae on this machine: matmul peak, fused training, K=5000 evaluation,
and a plain PyTorch-eager reference of the same model and training step.

    python benchmarks/bench.py              # full (~15-20 min on a 2-core CPU)
    python benchmarks/bench.py --quick      # batch 100 only, few steps, eval on 500 examples (< 2 min)
    python benchmarks/bench.py --device-info    # print the machine description and exit

Prints a table and writes benchmarks/results/results_<platform>.json. Everything is measured in this one
process, one workload at a time: the matmul peak first (and again at the end), then the evaluation,
then training (jaxvae's own ``make_run_steps`` path), each configuration followed at once by the torch
reference of the same configuration (skipped with a message when torch is not installed:
``pip install -e '.[bench]'``).

Timing: each figure is the median of repeated, complete dispatches after a warm-up (compile) call,
closed with ``jax.block_until_ready``. The process CPU time of each dispatch is recorded too: on a
shared machine (other jobs running) wall-clock rates drop with the share of the cores this process
gets, while FLOP per CPU-second (``*_per_cpu_s``) stays close to what an idle machine would show.

FLOP counts are matmul FLOPs only (2mnk per product): training counts forward + backward = 3x the
forward of the encoder (784-200-200-2x50) once and the decoder (50-200-200-784) K times per example,
the same count as ``jaxvae.experiment.train.flops_per_example``; evaluation counts the forward passes only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp

from common import RESULTS, ROOT, device_info, finish, num_threads, rate_record, timed
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.eval_driver import batch_bounds, evaluate_split
from jaxvae.vae.model import VAE

X_DIM, LATENT, HIDDEN = 784, 50, (200, 200)
OBJECTIVES = (("elbo", 1), ("iwae", 5), ("iwae", 50))
TARGETS = {
    "train_b20_vs_torch": 2.5,  # jaxvae examples/s at batch 20 >= 2.5x the torch reference
    "train_peak_fraction": 0.5,  # batch >= 100: achieved matmul FLOP/s >= 50% of the measured peak
    "eval_vs_floor": 1.5,  # K=5000 evaluation time <= 1.5x its FLOPs / measured peak
    "eval_memory_bytes": 2 * 1024**3,  # and < 2 GB
}


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


# -- memory ----------------------------------------------------------------------------------------
def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so that RSS growth measures the next workload."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """Peak resident set size of this process while active (sampled from /proc/self/statm), relative
    to the RSS at entry, after freed heap memory has been returned to the OS."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def current(self) -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        release_free_memory()
        self.base = self.current()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


# -- 1. matmul peak --------------------------------------------------------------------------------
def matmul_peak(sizes, reps: int) -> dict:
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f = jax.jit(jnp.matmul)
        f(a, b).block_until_ready()
        walls, cpus = timed(lambda: f(a, b).block_until_ready(), reps)
        out[str(n)] = rate_record(2.0 * n**3, walls, cpus, "flop")
        a = b = None  # free the n x n operands before the next size (not `del`: the lambda closes over them)
    best = max(out, key=lambda k: out[k]["flop_per_s"])
    return {"sizes": out, "best_size": int(best), "flop_per_s": out[best]["flop_per_s"],
            "flop_per_cpu_s": max(v["flop_per_cpu_s"] for v in out.values())}


# -- model FLOPs -----------------------------------------------------------------------------------
def _dense_flops(widths) -> int:
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


ENC_FWD = _dense_flops([X_DIM, *HIDDEN]) + 2 * HIDDEN[-1] * 2 * LATENT
DEC_FWD = _dense_flops([LATENT, *HIDDEN, X_DIM])


def train_flops_per_example(k: int) -> float:
    return 3.0 * (ENC_FWD + k * DEC_FWD)


def eval_flops(n: int, k: int) -> float:
    return float(n) * (ENC_FWD + k * DEC_FWD)


def make_model() -> VAE:
    return VAE(X_DIM, LATENT, HIDDEN, HIDDEN, "tanh", "bernoulli")


def iwae_mnist_config(batch_size: int, objective: str, k: int):
    """experiments/iwae_mnist.py's training settings, constant learning rate."""
    c = base_config()
    c.data.name = "binarized_mnist"
    c.objective.name, c.objective.k = objective, k
    c.train.batch_size = batch_size
    c.train.schedule = "constant"
    c.train.learning_rate = 1e-3
    c.train.adam_b1, c.train.adam_b2, c.train.adam_eps = 0.9, 0.999, 1e-4
    return c


def random_binary(n: int, seed: int = 0, p: float = 0.13) -> np.ndarray:
    """Random binary images with MNIST's mean pixel intensity."""
    return (np.random.default_rng(seed).random((n, X_DIM), dtype=np.float32) < p).astype(np.float32)


# -- 2. training -----------------------------------------------------------------------------------
def steps_for(batch_size: int, k: int, target_flop: float, max_examples: int) -> int:
    """Steps per timed dispatch: about ``target_flop`` matmul FLOPs, at least 2."""
    per_step = train_flops_per_example(k) * batch_size
    steps = int(np.clip(round(target_flop / per_step), 2, max(2, max_examples // batch_size)))
    return steps


def bench_train(batch_size: int, objective: str, k: int, steps: int, reps: int, seed: int = 0,
                model: VAE | None = None) -> dict:
    """Examples/s of jaxvae's fused runner: each timed call is one whole epoch of ``steps`` steps
    (``model``: default the IWAE-paper MLP, ``make_model()``)."""
    config = iwae_mnist_config(batch_size, objective, k)
    model = model or make_model()
    n_train = steps * batch_size
    x_train = jax.device_put(random_binary(n_train, seed))
    schedule, _ = train_lib.learning_rate_schedule(config, steps)
    tx = train_lib.make_optimizer(config, schedule)
    state = train_lib.create_train_state(model, tx, seed)
    run_steps = train_lib.make_run_steps(model, config, tx, steps, batch_size)
    holder = {"state": state}

    def once():
        s, info = run_steps(holder["state"], x_train, steps)
        jax.block_until_ready((s, info))
        holder["state"] = s  # the state is donated: carry it on (each call is the next epoch)

    t0 = time.perf_counter()
    once()  # compile + first epoch
    compile_s = time.perf_counter() - t0
    walls, cpus = timed(once, reps)
    rec = rate_record(float(n_train), walls, cpus, "examples")
    fl = train_flops_per_example(k)
    rec.update(steps=steps, batch_size=batch_size, objective=objective, k=k, first_call_s=compile_s,
               flop_per_example=fl, flop_per_s=rec["examples_per_s"] * fl,
               flop_per_cpu_s=rec["examples_per_cpu_s"] * fl)
    x_train = None  # free the data and state (not `del`: once() closes over them)
    holder.clear()
    return rec


# -- 3. evaluation ---------------------------------------------------------------------------------
MNIST_NPZ = ROOT.parent / "shared" / "data" / "binarized_mnist.npz"  # --mnist FILE overrides it


def load_test_images(n: int) -> tuple[np.ndarray, str]:
    path = Path(MNIST_NPZ)
    if path.exists():
        x = np.load(path)["test"].astype(np.float32)
        return x[:n], f"binarized MNIST test split ({path.name})"
    return random_binary(n, seed=1), "random binary data (binarized_mnist.npz not found)"


def eval_params(model: VAE, x: np.ndarray):
    """Untrained parameters with the data's log-odds as output bias (the cost does not depend on them)."""
    p = np.clip(x.mean(0), 1e-3, 1 - 1e-3)
    return model.init(jax.random.key(0), jnp.asarray(np.log(p) - np.log1p(-p)))


def eval_memory_analysis(model, params, x, batch_size: int, chunk_size: int, k: int) -> dict | None:
    """Compiled per-batch program's buffer sizes (XLA's memory_analysis), if the backend reports them."""
    try:
        comp = batch_bounds.lower(model, params, jnp.asarray(x[:batch_size]), jax.random.key(0), (k,),
                                  chunk_size, None).compile()
        ma = comp.memory_analysis()
    except Exception as e:  # noqa: BLE001 - optional diagnostics
        return {"error": repr(e)}
    if ma is None:
        return None
    return {name: int(getattr(ma, name)) for name in
            ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
            if hasattr(ma, name)}


def device_memory() -> dict | None:
    """Bytes in use and the peak so far on the first device (``memory_stats()``: GPU/TPU; None on CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has it
        return None
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


def bench_eval(model, params, x: np.ndarray, batch_size: int, chunk_size: int, k: int = 5000) -> dict:
    """Seconds of ``evaluate_split`` (the runner's test-set path) for IWAE_K alone, after a warm-up
    on one batch (compile), with the process's peak RSS growth during the timed call and, on an
    accelerator, the device's peak bytes in use after it (the process's peak so far: JAX has no reset)."""
    warm = x[:batch_size]
    evaluate_split(model, params, warm, jax.random.key(1), ks=(k,), batch_size=batch_size,
                   chunk_size=chunk_size, surgery=False)
    with RssSampler() as rss:
        w, c = time.perf_counter(), time.process_time()
        res = evaluate_split(model, params, x, jax.random.key(2), ks=(k,), batch_size=batch_size,
                             chunk_size=chunk_size, surgery=False)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    fl = eval_flops(len(x), k)
    return {"batch_size": batch_size, "chunk_size": chunk_size, "k": k, "examples": len(x),
            "seconds": wall, "cpu_seconds": cpu, "flop": fl, "flop_per_s": fl / wall,
            "flop_per_cpu_s": fl / cpu, "peak_rss_delta_bytes": rss.delta, "nll": res["nll"],
            "device_memory": device_memory()}


# -- 4. torch reference ----------------------------------------------------------------------------
def torch_device() -> str:
    """"cuda" when torch sees a GPU (the reference then runs there, as jaxvae does), else "cpu"."""
    torch = _torch()
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def torch_reference(batch_size: int, objective: str, k: int, threads: int, target_s: float, reps: int,
                    seed: int = 0, device: str = "cpu") -> dict | None:
    """The same model, loss and Adam step written plainly in PyTorch eager mode, same data path
    (an on-memory binary training set, one permutation per epoch, batches gathered by index), on
    ``device``. On CUDA, float32 matmuls may use TF32 (``set_float32_matmul_precision("high")``), as XLA's
    default precision does on GPUs from Ampere on, and each timed call ends with a synchronize."""
    torch = _torch()
    if torch is None:
        return None
    import math

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cuda = device == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    lin = torch.nn.Linear

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e1, self.e2, self.eh = lin(X_DIM, 200), lin(200, 200), lin(200, 2 * LATENT)
            self.d1, self.d2, self.do = lin(LATENT, 200), lin(200, 200), lin(200, X_DIM)

        def loss(self, x):
            h = torch.tanh(self.e2(torch.tanh(self.e1(x))))
            mu, logvar = self.eh(h).chunk(2, -1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn((k,) + mu.shape, device=mu.device)
            logits = self.do(torch.tanh(self.d2(torch.tanh(self.d1(z)))))
            ll = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none").sum(-1)
            if objective == "elbo":  # analytic KL, as jaxvae's elbo with analytic_kl=True
                kl = 0.5 * (torch.expm1(logvar) + mu.square() - logvar).sum(-1)
                return -(ll.mean(0) - kl).mean()
            log_pz = -0.5 * (math.log(2 * math.pi) + z.square()).sum(-1)
            log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).square() * torch.exp(-logvar)).sum(-1)
            log_w = ll + log_pz - log_q
            return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()

    net = Net().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    n = max(batch_size * 50, 5000)
    x_train = torch.from_numpy(random_binary(n, seed)).to(device)
    pos = {"perm": torch.randperm(n, device=device), "i": 0}

    def step():
        if (pos["i"] + 1) * batch_size > n:
            pos["perm"], pos["i"] = torch.randperm(n, device=device), 0
        idx = pos["perm"][pos["i"] * batch_size:(pos["i"] + 1) * batch_size]
        pos["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = net.loss(x_train[idx])
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, thread pool, CUDA kernels)
    sync()
    t = time.perf_counter()
    step()
    sync()
    one = max(time.perf_counter() - t, 1e-5)
    if one < target_s / 20:  # a few more warm-up steps when they are cheap
        for _ in range(3):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(5):
            step()
        sync()
        one = max((time.perf_counter() - t) / 5, 1e-5)
    steps = int(np.clip(round(target_s / one), 1, 5000 if cuda else 2000))
    walls, cpus = timed(lambda: ([step() for _ in range(steps)], sync()), reps)
    rec = rate_record(float(steps * batch_size), walls, cpus, "examples")
    rec.update(threads=threads, steps=steps, torch=torch.__version__, device=device)
    if cuda:
        rec.update(gpu=torch.cuda.get_device_name(0), tf32_matmul=True)
    return rec


# -- report ----------------------------------------------------------------------------------------
def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def print_table(results: dict) -> str:
    lines = []
    peak = results["peak"]["flop_per_s"]
    peak_cpu = results["peak"]["flop_per_cpu_s"]
    lines.append(f"matmul peak (float32, best of sizes {list(results['peak']['start']['sizes'])}): "
                 f"{peak / 1e9:.1f} GFLOP/s wall, {peak_cpu / 1e9:.1f} GFLOP per CPU-s")
    tr = results.get("train", [])
    if tr:
        lines.append("")
        lines.append("| batch | objective | jaxvae ex/s | GFLOP/s | % peak | % peak (CPU-s) | torch ex/s "
                     "(threads) | jaxvae/torch |")
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in tr:
            t = r.get("torch_best")
            tcol = f"{fmt_rate(t['examples_per_s'])} ({t['threads']})" if t else "n/a"
            ratio = f"{r['examples_per_s'] / t['examples_per_s']:.2f}x" if t else "n/a"
            obj = "ELBO" if r["objective"] == "elbo" else f"IWAE K={r['k']}"
            lines.append(f"| {r['batch_size']} | {obj} | {fmt_rate(r['examples_per_s'])} | "
                         f"{r['flop_per_s'] / 1e9:.1f} | {100 * r['flop_per_s'] / peak:.0f}% | "
                         f"{100 * r['flop_per_cpu_s'] / peak_cpu:.0f}% | {tcol} | {ratio} |")
    ev = results.get("eval")
    if ev:
        m = ev["main"]
        lines.append("")
        lines.append(f"K=5000 evaluation (batch {m['batch_size']}, chunk {m['chunk_size']}) on "
                     f"{m['examples']} examples: {m['seconds']:.1f} s ({m['flop_per_s'] / 1e9:.1f} GFLOP/s, "
                     f"{100 * m['flop_per_s'] / peak:.0f}% of peak; "
                     f"{100 * m['flop_per_cpu_s'] / peak_cpu:.0f}% per CPU-s)")
        lines.append(f"  10000 examples: {ev['full_seconds']:.0f} s{' (extrapolated)' if ev['extrapolated'] else ''}"
                     f"; FLOP floor {ev['floor_seconds']:.0f} s -> {ev['vs_floor']:.2f}x the floor "
                     f"({ev['vs_floor_cpu']:.2f}x per CPU-s)")
        mem = ev.get("memory_analysis") or {}
        lines.append(f"  memory: {ev['memory_bytes'] / 2**20:.0f} MiB (peak RSS growth on the config's first "
                     f"call / XLA temp buffers, the larger); "
                     f"process max RSS {ev['max_rss_bytes'] / 2**20:.0f} MiB"
                     + (f"; XLA temp buffers {mem['temp_size_in_bytes'] / 2**20:.0f} MiB"
                        if "temp_size_in_bytes" in mem else ""))
        lines.append(f"  mean IWAE_5000 bound of the (untrained) model on these examples: {-m['nll']:.2f} nats")
        lines.append("  chunk/batch sizes tried: " + ", ".join(
            f"b{s['batch_size']}/c{s['chunk_size']}: {s['flop_per_s'] / 1e9:.1f} GFLOP/s "
            f"({s['flop_per_cpu_s'] / 1e9:.1f}/CPU-s, +{s['peak_rss_delta_bytes'] / 2**20:.0f} MiB)"
            for s in ev["search"]))
    tg = results.get("targets")
    if tg:
        lines.append("")
        lines.append("targets:")
        for name, t in tg.items():
            lines.append(f"  {name}: {t['text']} -> {'MET' if t['met'] else 'MISSED'}")
    text = "\n".join(lines)
    print(text)
    return text


def evaluate_targets(results: dict) -> dict:
    out = {}
    peak = results["peak"]["flop_per_s"]
    tr = results.get("train", [])
    b20 = [r for r in tr if r["batch_size"] == 20 and r.get("torch_best")]
    if b20:
        ratios = {f"{r['objective']}{r['k']}": r["examples_per_s"] / r["torch_best"]["examples_per_s"]
                  for r in b20}
        out["train_b20_vs_torch"] = {
            "ratios": ratios, "met": min(ratios.values()) >= TARGETS["train_b20_vs_torch"],
            "text": ">= 2.5x torch at batch 20: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())}
    big = [r for r in tr if r["batch_size"] >= 100]
    if big:
        fr = {f"b{r['batch_size']}_{r['objective']}{r['k']}": r["flop_per_s"] / peak for r in big}
        out["train_peak_fraction"] = {
            "fractions": fr, "met": min(fr.values()) >= TARGETS["train_peak_fraction"],
            "text": ">= 50% of peak at batch >= 100: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in fr.items())}
    ev = results.get("eval")
    if ev:
        mem = ev["memory_bytes"]
        out["eval_vs_floor"] = {"value": ev["vs_floor"], "met": ev["vs_floor"] <= TARGETS["eval_vs_floor"],
                                "text": f"<= 1.5x FLOP floor: {ev['vs_floor']:.2f}x"}
        out["eval_memory"] = {"bytes": mem, "met": mem < TARGETS["eval_memory_bytes"],
                              "text": f"< 2 GB: {mem / 2**20:.0f} MiB"}
    return out


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    global MNIST_NPZ
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 100 only, few steps, eval on 500 examples")
    ap.add_argument("--tiny", action="store_true",
                    help="seconds on a CPU: 256-matmul peak, batch 20, eval K=50 on 20 examples (keeps "
                         "benchmarks/device_check.py from rotting; its figures mean nothing)")
    ap.add_argument("--eval-examples", type=int, default=None,
                    help="test examples for the K=5000 evaluation (default: all 10000, or 2000 and "
                         "extrapolate when the full one would take over --eval-max-seconds)")
    ap.add_argument("--eval-max-seconds", type=float, default=600.0)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=None)
    ap.add_argument("--reps", type=int, default=None, help="timed repeats per training figure")
    ap.add_argument("--skip", nargs="*", default=[], choices=["eval", "train", "torch"])
    ap.add_argument("--device-info", action="store_true", help="print the machine description and exit")
    ap.add_argument("--out", type=str, default=None, help="JSON path (default benchmarks/results/results_<platform>.json)")
    ap.add_argument("--mnist", default=None, help=f"binarized_mnist.npz for the evaluation (default {MNIST_NPZ})")
    ap.add_argument("--eval-configs", nargs="*", default=None, metavar="BATCH:CHUNK",
                    help="(batch, chunk) sizes the evaluation tries before the main run (default: 4 CPU sizes)")
    ap.add_argument("--eval-search-examples", type=int, default=None, help="test images of each try (default 200)")
    ap.add_argument("--torch-target-s", type=float, default=None, help="seconds per timed torch call (default 1)")
    ap.add_argument("--torch-reps", type=int, default=None, help="timed torch calls per figure (default 5)")
    args = ap.parse_args(argv)
    if args.mnist:
        MNIST_NPZ = Path(args.mnist)

    info = device_info()
    out = Path(args.out) if args.out else None
    if args.device_info:
        print(json.dumps(info, indent=2))
        return {"device_info": info}
    tiny = args.tiny
    quick = args.quick or tiny
    reps = args.reps or (1 if tiny else 3 if quick else 5)
    batch_sizes = args.batch_sizes or ([20] if tiny else [100] if quick else [20, 100, 1000])
    eval_k = 50 if tiny else 5000
    threads = num_threads()
    t_begin = time.perf_counter()
    results: dict = {"device_info": info, "mode": "tiny" if tiny else "quick" if quick else "full",
                     "targets_spec": TARGETS}
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    say(f"{info['cpu_model']}, {threads} threads, {info['jax_devices']}, load {info['loadavg_start']}")

    # 1. peak
    sizes = [256] if tiny else [1024, 2048] if quick else [1024, 2048, 4096]
    start = matmul_peak(sizes, reps=3 if quick else 5)
    say(f"peak: {start['flop_per_s'] / 1e9:.1f} GFLOP/s at n={start['best_size']}")
    results["peak"] = {"start": start, "flop_per_s": start["flop_per_s"], "flop_per_cpu_s": start["flop_per_cpu_s"]}

    # 3. evaluation (first: its peak-RSS growth is then not masked by the training's)
    model = make_model()
    if "eval" not in args.skip:
        n_eval = args.eval_examples or (20 if tiny else 500 if quick else 10000)
        x_all, source = load_test_images(100 if tiny else 10000)
        params = eval_params(model, x_all)
        rss0 = max_rss_bytes()
        search_x = x_all[:args.eval_search_examples or (20 if tiny else 100 if quick else 200)]
        combos = ([(10, 10)] if tiny else [(100, 500), (100, 100)] if quick
                  else [(100, 500), (100, 100), (100, 1000), (500, 100)])
        if args.eval_configs:
            combos = [tuple(int(v) for v in c.split(":")) for c in args.eval_configs]
        search = []
        for b, c in combos:
            r = bench_eval(model, params, search_x, b, c, eval_k)
            say(f"eval search b={b} c={c}: {r['seconds']:.1f} s, {r['flop_per_s'] / 1e9:.1f} GFLOP/s, "
                f"+{r['peak_rss_delta_bytes'] / 2**20:.0f} MiB")
            search.append(r)
        best = max(search, key=lambda r: r["flop_per_cpu_s"])
        est_full = eval_flops(10000, eval_k) / best["flop_per_s"]
        extrapolated = False
        if args.eval_examples is None and not quick and est_full > args.eval_max_seconds:
            n_eval, extrapolated = 2000, True
            say(f"full evaluation estimated at {est_full:.0f} s > {args.eval_max_seconds:.0f} s: "
                f"timing {n_eval} examples and extrapolating")
        extrapolated = extrapolated or n_eval < 10000
        main_r = bench_eval(model, params, x_all[:n_eval], best["batch_size"], best["chunk_size"], eval_k)
        say(f"eval main ({n_eval} examples): {main_r['seconds']:.1f} s")
        floor = eval_flops(10000, eval_k) / results["peak"]["flop_per_s"]
        floor_cpu = eval_flops(10000, eval_k) / results["peak"]["flop_per_cpu_s"]
        full_s = main_r["seconds"] * 10000 / n_eval
        full_cpu = main_r["cpu_seconds"] * 10000 / n_eval
        results["eval"] = {
            "data": source, "search": search, "main": main_r, "extrapolated": extrapolated,
            "full_seconds": full_s, "floor_seconds": floor, "vs_floor": full_s / floor,
            "vs_floor_cpu": full_cpu / floor_cpu,
            "max_rss_bytes": max_rss_bytes(), "max_rss_delta_bytes": max_rss_bytes() - rss0,
            "memory_analysis": eval_memory_analysis(model, params, x_all, best["batch_size"],
                                                    best["chunk_size"], eval_k),
        }
        # An executable keeps its buffers between calls, so RSS growth is clean on its first timed call
        # (the search row); the memory figure is the largest of that, the main run's and XLA's temp size.
        results["eval"]["memory_bytes"] = max(
            best["peak_rss_delta_bytes"], main_r["peak_rss_delta_bytes"],
            (results["eval"]["memory_analysis"] or {}).get("temp_size_in_bytes", 0))
        results["eval"]["device_memory"] = device_memory()  # on an accelerator: the peak over every try
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(results, partial=True), indent=1, default=float))

    # 2. training, each configuration followed at once by its torch reference (4), so that both see
    # about the same machine load
    have_torch = "torch" not in args.skip and _torch() is not None
    if "torch" not in args.skip and not have_torch:
        say("torch is not installed: skipping the PyTorch reference (pip install -e '.[bench]')")
    tdev = torch_device() if have_torch else None
    results["torch_device"] = tdev

    def torch_rows(r, b, obj, k):
        refs = []
        for th in ([threads] if tdev == "cuda" else sorted({threads, 1})):
            t = torch_reference(b, obj, k, th, target_s=args.torch_target_s or (0.5 if quick else 1.0),
                                reps=args.torch_reps or (3 if quick else 5), device=tdev)
            refs.append(t)
            say(f"  torch {tdev} threads={th}: {t['examples_per_s']:,.0f} ex/s")
        r["torch"] = refs
        r["torch_same_threads"] = [t for t in refs if t["threads"] == threads][0]
        # the faster of the thread settings: the stricter reference on a loaded machine
        r["torch_best"] = max(refs, key=lambda t: t["examples_per_s"])

    if "train" not in args.skip:
        target = 2e7 if tiny else 1.5e9 if quick else 4.0e10  # matmul FLOPs per timed dispatch
        max_examples = 200 if tiny else 5000 if quick else 50000
        results["train"] = []
        for b in batch_sizes:
            for obj, k in OBJECTIVES:
                steps = steps_for(b, k, target, max_examples)
                r = bench_train(b, obj, k, steps, reps)
                say(f"train b={b} {obj} k={k}: {r['examples_per_s']:,.0f} ex/s, "
                    f"{r['flop_per_s'] / 1e9:.1f} GFLOP/s ({steps} steps, first call {r['first_call_s']:.1f} s)")
                results["train"].append(r)
                if have_torch:
                    torch_rows(r, b, obj, k)
                if out is not None:  # what is measured so far survives a time limit
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(dict(results, partial=True), indent=1, default=float))

    # peak again: the machine's load may have changed; the larger of the two is the reference
    end = matmul_peak([results["peak"]["start"]["best_size"]], reps=3 if quick else 5)
    results["peak"]["end"] = end
    results["peak"]["flop_per_s"] = max(start["flop_per_s"], end["flop_per_s"])
    results["peak"]["flop_per_cpu_s"] = max(start["flop_per_cpu_s"], end["flop_per_cpu_s"])
    if "eval" in results:  # re-derive against the final peak
        ev = results["eval"]
        ev["floor_seconds"] = eval_flops(10000, eval_k) / results["peak"]["flop_per_s"]
        ev["vs_floor"] = ev["full_seconds"] / ev["floor_seconds"]
        ev["vs_floor_cpu"] = (ev["main"]["cpu_seconds"] * 10000 / ev["main"]["examples"]) / (
            eval_flops(10000, eval_k) / results["peak"]["flop_per_cpu_s"])
    results["targets"] = evaluate_targets(results)
    finish(info)
    results["total_seconds"] = time.perf_counter() - t_begin
    say("")
    results["table"] = print_table(results)
    out = out or RESULTS / f"results_{info['platform']}{'_quick' if quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    say(f"\nwrote {out} ({results['total_seconds']:.0f} s in all)")
    return results


if __name__ == "__main__":
    main()
