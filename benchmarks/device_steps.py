"""The steps of the accelerator check (benchmarks/device_check.py) that no other benchmark script measures:
AIS, the conv VAE against PyTorch on the same device, bf16 against float32, and a two-layer IWAE run.

    python benchmarks/device_steps.py STEP --out FILE.json [--mnist binarized_mnist.npz] [--tiny]

STEP:
  ais   the IWAE-paper MLP trained briefly (ELBO, batch 100), then the runner's AIS (sandwich.sandwich_ais:
        T=1000, 16 chains, 10 leapfrog steps) on 100 test images beside IWAE_5000 on the same images; the
        program is compiled first (T is traced), so ``seconds`` is the annealing alone
  conv  the conv VAE of benchmarks/conv_bench.py (32x32x3, batch 64, mixture of 5 discretized logistics):
        jaxvae's training examples/s, one epoch per dispatch (the runner's default off CPU; not measured on
        CPU, where the runner dispatches one step at a time) and one step per dispatch, against the same network in PyTorch eager on the same device (cuDNN autotuning and TF32 on,
        as XLA's defaults), with the best 3x3 conv rate of the device
  bf16  the IWAE-paper MLP trained as IWAE K=5 at batch 100 with model.compute_dtype float32 and bfloat16 from
        the same initialization and data order: training examples/s, and the test NLL (-IWAE_1000 evaluated
        in float32, all test images) after the same steps; plus examples/s at batch 1000, K=50 (not with --tiny)
  hier  experiments/iwae_table1.py's two-layer model (x -> 200-200 -> z1 (100) -> 100-100 -> z2 (50)), IWAE
        K=5, batch 20, constant learning rate 1e-3, for two epochs of the data (5000 steps on MNIST), then
        -IWAE_5000 on 2000 test images

Data: ``--mnist`` (binarized_mnist.npz: train/valid/test as 0/1 uint8), else random binary images with MNIST's
mean intensity (the rates do not depend on the pixels; the NLLs then mean little). ``--tiny``: toy sizes for
the CPU test. Each step writes its JSON after every part, so a step stopped at its time limit keeps what it
measured.
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
from common import best_time, device_info, finish
from jaxvae.data import pixel_logits
from jaxvae.experiment import eval_driver, sandwich
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.building import build_model, output_bias
from jaxvae.experiment.configs import base_config, iwae_paper_config
from jaxvae.vae.model import VAE


# -- shared ------------------------------------------------------------------------------------------
class Record(dict):
    """The step's JSON, rewritten after every part."""

    def __init__(self, path: Path, **kw):
        super().__init__(device_info=device_info(), **kw)
        self.path = path
        self.save()

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self, indent=1, default=float))

    def put(self, key, value):
        self[key] = value
        print(json.dumps({key: value}, default=float), flush=True)
        self.save()


def load_mnist(path: str | None, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, test) float32 0/1 images: the first n of binarized_mnist.npz's splits, else random ones."""
    if path and Path(path).is_file():
        d = np.load(path)
        return (d["train"][:n_train].astype(np.float32), d["test"][:n_test].astype(np.float32),
                f"binarized MNIST ({Path(path).name})")
    return bench.random_binary(n_train, 0), bench.random_binary(n_test, 1), "random binary images (no --mnist)"


def mlp(compute_dtype: str = "float32") -> VAE:
    """The IWAE paper's one-layer MNIST model (784-200-200-50 tanh, Bernoulli), bench.py's model."""
    return VAE(bench.X_DIM, bench.LATENT, bench.HIDDEN, bench.HIDDEN, "tanh", "bernoulli",
               compute_dtype=compute_dtype)


def train_epochs(model, config, x_train: np.ndarray, epochs: int, seed: int = 0, bias=None):
    """Trains ``epochs`` whole epochs (one dispatch each) of the runner's fused step; returns the params,
    the first epoch's seconds (compile included), the other epochs' mean seconds, and each epoch's loss."""
    batch = config.train.batch_size
    spe = train_lib.steps_per_epoch_for(len(x_train), batch)
    schedule, _ = train_lib.learning_rate_schedule(config, spe)
    tx = train_lib.make_optimizer(config, schedule)
    state = train_lib.create_train_state(model, tx, seed, bias)
    run = train_lib.make_run_steps(model, config, tx, spe, batch)
    x = jax.device_put(x_train)
    seconds, losses = [], []
    for _ in range(epochs):
        t = time.perf_counter()
        state, info = run(state, x, spe)
        losses.append(float(info.metrics["loss"]))  # blocks
        seconds.append(time.perf_counter() - t)
    steady = float(np.mean(seconds[1:])) if epochs > 1 else None
    return state.params, {"steps_per_epoch": spe, "epochs": epochs, "batch_size": batch,
                          "first_epoch_s": seconds[0], "epoch_s": steady,
                          "examples_per_s": spe * batch / steady if steady else None, "losses": losses}


# -- ais ---------------------------------------------------------------------------------------------
def step_ais(a, rec: Record):
    tiny = a.tiny
    train, test, source = load_mnist(a.mnist, 400 if tiny else 50000, 4 if tiny else 100)
    rec.put("data", source)
    config = bench.iwae_mnist_config(100 if not tiny else 20, "elbo", 1)
    model = mlp()
    params, tr = train_epochs(model, config, train, 2 if tiny else 6, bias=pixel_logits(train))
    rec.put("training", tr)
    ais_cfg = base_config().eval.ais
    ais_cfg.num_steps = 10 if tiny else 1000
    ais_cfg.chains = 2 if tiny else 16
    ais_cfg.batch_size = len(test)  # one program for the 100 images
    iwae_k = 50 if tiny else 5000
    from jaxvae.vae import ais as ais_lib

    t = time.perf_counter()  # compile (T is a traced argument: the T=1000 call below reuses it)
    jax.block_until_ready(ais_lib.ais(model, params, jnp.asarray(test), jax.random.key(9), num_steps=2,
                                      num_chains=ais_cfg.chains, init=ais_cfg.init,
                                      **sandwich.hmc_options(ais_cfg)).log_px)
    compile_s = time.perf_counter() - t
    entry, _ = sandwich.sandwich_ais(model, params, test, jax.random.key(1), jax.random.key(2), ais_cfg,
                                        iwae_k=iwae_k, batch_size=100, chunk_size=500 if not tiny else 25)
    entry["compile_s"] = compile_s
    entry["seconds_per_example"] = entry["seconds"] / len(test)
    rec.put("ais", entry)


# -- conv --------------------------------------------------------------------------------------------
def torch_conv_throughput(steps: int, repeats: int, device: str) -> dict:
    """conv_bench's torch network on ``device``: best of ``repeats`` timed runs of ``steps`` Adam steps."""
    import torch

    import conv_bench as cb

    cuda = device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    net = cb.torch_network(0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    n = steps * cb.BATCH
    data = torch.from_numpy(cb.synthetic_images(n)).permute(0, 3, 1, 2).contiguous().to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pos = {"perm": torch.randperm(n, device=device), "i": 0}

    def step():
        if (pos["i"] + 1) * cb.BATCH > n:
            pos["perm"], pos["i"] = torch.randperm(n, device=device), 0
        x = data[pos["perm"][pos["i"] * cb.BATCH:(pos["i"] + 1) * cb.BATCH]]
        pos["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = net.loss(x, torch.randn(cb.BATCH, cb.LATENT, device=device))
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (cuDNN autotuning)
        step()
    sync()
    t = best_time(lambda: ([step() for _ in range(steps)], sync()), repeats)
    return {"examples_per_s": n / t, "step_ms": 1e3 * t / steps, "device": device, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def step_conv(a, rec: Record):
    import conv_bench as cb

    tiny = a.tiny
    steps, repeats = (2, 1) if tiny else (50, 3)
    flops = cb.model_flops()
    rec.put("flops_per_example", flops)
    if not tiny:
        rec.put("conv_peak", cb.conv_peak(3))

    def rates(r):
        r["conv_gflops_per_s"] = r["examples_per_s"] * flops["conv_train"] / 1e9
        if "conv_peak" in rec:
            r["fraction_of_conv_peak"] = r["conv_gflops_per_s"] / rec["conv_peak"]["gflops_per_s"]
        return r

    # the runner's path off CPU: one epoch per dispatch (train.dispatch_steps); on CPU one step per dispatch
    # (XLA:CPU runs convolutions in a loop ~20x slower, so the fused program is not measured there)
    rec.put("jaxvae_per_step", rates(cb.jaxvae_throughput(steps, repeats, fused=False)))
    if jax.default_backend() != "cpu":
        rec.put("jaxvae_fused", rates(cb.jaxvae_throughput(steps, repeats, fused=True)))
    best = max(rec[k]["examples_per_s"] for k in ("jaxvae_fused", "jaxvae_per_step") if k in rec)
    try:
        import torch
    except ImportError:
        rec.put("torch", "not installed")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rec.put("torch", rates(torch_conv_throughput(steps, repeats, device)))
    rec.put("jaxvae_over_torch", best / rec["torch"]["examples_per_s"])


# -- bf16 --------------------------------------------------------------------------------------------
def step_bf16(a, rec: Record):
    tiny = a.tiny
    train, test, source = load_mnist(a.mnist, 400 if tiny else 50000, 40 if tiny else 10000)
    rec.put("data", source)
    config = bench.iwae_mnist_config(20 if tiny else 100, "iwae", 5)
    epochs = 2 if tiny else 6
    eval_k = 10 if tiny else 1000
    bias = pixel_logits(train)
    rows = {}
    for dtype in ("float32", "bfloat16"):
        model = mlp(dtype)
        params, tr = train_epochs(model, config, train, epochs, seed=0, bias=bias)
        t = time.perf_counter()
        ev = eval_driver.evaluate_split(model, params, test, jax.random.key(5), ks=(eval_k,), batch_size=100,
                                        chunk_size=500 if not tiny else 10, surgery=False)
        rows[dtype] = {"training": tr, "nll": ev["nll"], "eval_k": eval_k, "eval_examples": len(test),
                       "eval_s": time.perf_counter() - t}
        rec.put("runs", rows)
    rec.put("speedup_b100_k5", rows["bfloat16"]["training"]["examples_per_s"]
            / rows["float32"]["training"]["examples_per_s"])
    rec.put("nll_bf16_minus_f32", rows["bfloat16"]["nll"] - rows["float32"]["nll"])
    if tiny:
        return
    # throughput alone at a size where the matmuls dominate
    big = {}
    b, k, steps = 1000, 50, 25
    for dtype in ("float32", "bfloat16"):
        r = bench.bench_train(b, "iwae", k, steps, 3, model=mlp(dtype))
        big[dtype] = {"batch_size": b, "k": k, "examples_per_s": r["examples_per_s"], "first_call_s": r["first_call_s"]}
        rec.put("throughput_large", big)
    rec.put("speedup_large", big["bfloat16"]["examples_per_s"] / big["float32"]["examples_per_s"])


# -- hier --------------------------------------------------------------------------------------------
def step_hier(a, rec: Record):
    tiny = a.tiny
    train, test, source = load_mnist(a.mnist, 400 if tiny else 50000, 20 if tiny else 2000)
    rec.put("data", source)
    c = iwae_paper_config()
    c.model.stochastic_layers = 2
    c.model.latent_dims = (100, 50)
    c.model.upper_hidden = (100, 100)
    c.objective.name, c.objective.k = "iwae", 5
    c.train.schedule = "constant"
    model = build_model(c, bench.X_DIM)
    params, tr = train_epochs(model, c, train, 2, seed=0, bias=output_bias(c, model, train))
    tr["steps"] = tr["steps_per_epoch"] * tr["epochs"]
    rec.put("training", tr)
    k = 10 if tiny else 5000
    t = time.perf_counter()
    ev = eval_driver.evaluate_split(model, params, test, jax.random.key(3), ks=(1, k), batch_size=100,
                                    chunk_size=10 if tiny else 500, surgery=False)
    rec.put("test", {"examples": len(test), "k": k, "nll": ev["nll"], "elbo": ev["elbo"],
                     "active_units": ev.get("active_units"), "seconds": time.perf_counter() - t})


STEPS = {"ais": step_ais, "conv": step_conv, "bf16": step_bf16, "hier": step_hier}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--mnist", default=None, help="binarized_mnist.npz (else random binary images)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (the CPU test)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rec = Record(Path(a.out), step=a.step, tiny=a.tiny)
    STEPS[a.step](a, rec)
    finish(rec["device_info"])
    rec.put("seconds", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
