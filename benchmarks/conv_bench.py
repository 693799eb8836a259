"""Training throughput of the conv VAE at 32x32x3, batch 64 (issue 19), and its fraction of the conv peak.

    python benchmarks/conv_bench.py [--steps 20] [--repeats 3] [--torch]

Model: experiments/conv_vae_cifar10.py's shape made plain: ``network=conv``, widths (32, 64), strides (2, 2),
3x3 kernels, ReLU, latent 64, per-pixel mixture of 5 discretized logistics, ELBO (K=1), Adam; synthetic 8-bit
images (throughput does not depend on the pixel values).

Reports, in one process: jaxvae's training examples/s (fused lax.scan of ``--steps`` steps, best of
``--repeats`` after a warm-up), the FLOPs of a step from XLA's cost analysis, and the "conv peak": the
GFLOP/s of one jitted 3x3 convolution (64 x 16x16x64 -> 64 channels, forward only, repeated in a scan)
measured right before, so the fraction achieved/peak compares like with like on a shared machine.
``--torch`` also times the same network in PyTorch eager (needs ``pip install -e '.[bench]'``); it was
not run where torch was not installed (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.experiment import train as train_lib
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.runner import build_model

SHAPE = (32, 32, 3)
BATCH = 64


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def config():
    c = base_config()
    c.model.latent_dim = 64
    c.model.network = "conv"
    c.model.conv_widths = (32, 64)
    c.model.activation = "relu"
    c.model.likelihood = "discretized_logistic_mixture"
    c.model.num_mixtures = 5
    c.objective.name = "elbo"
    c.train.batch_size = BATCH
    return c


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def conv_peak(repeats: int, n: int = 20) -> float:
    """GFLOP/s of a 3x3, 64 -> 64 channel convolution on 64 x 16 x 16 (XLA's own FLOP count)."""
    x = jnp.ones((BATCH, 16, 16, 64), jnp.float32)
    w = jnp.ones((3, 3, 64, 64), jnp.float32) * 0.01

    def body(h, _):
        y = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y * 0.5, None

    f = jax.jit(lambda x: jax.lax.scan(body, x, None, length=n)[0])
    flops = f.lower(x).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops)["flops"]
    jax.block_until_ready(f(x))
    return flops / best_time(lambda: f(x), repeats) / 1e9


def jaxvae_throughput(steps: int, repeats: int) -> dict:
    c = config()
    n = steps * BATCH
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, int(np.prod(SHAPE)))) / 255.0, jnp.float32)
    model = build_model(c, x.shape[1], SHAPE)
    tx = train_lib.make_optimizer(c, train_lib.learning_rate_schedule(c, steps)[0])
    state = train_lib.create_train_state(model, tx, 0)
    # one compile: the executable that is timed is the one whose FLOPs XLA counts
    run = jax.jit(train_lib.make_run_steps(model, c, tx, steps, BATCH, jit=False), static_argnums=2,
                  donate_argnums=0).lower(state, x, steps).compile()
    cost = run.cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"] / steps
    state, _ = run(state, x)  # warm-up
    holder = {"s": state}

    def go():
        holder["s"], info = run(holder["s"], x)
        return info.metrics["loss"]

    t = best_time(go, repeats)
    params = sum(v.size for v in jax.tree_util.tree_leaves(state.params))
    return {"examples_per_s": n / t, "step_ms": 1e3 * t / steps, "flops_per_step": flops,
            "gflops_per_s": flops * steps / t / 1e9, "params": int(params)}


def torch_throughput(steps: int, repeats: int) -> dict:  # not run here: torch was not installed
    import torch
    from torch import nn

    torch.manual_seed(0)
    k, c = 5, 3
    per_pixel = k * c + k + k * c + k * 3

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                     nn.Flatten(), nn.Linear(8 * 8 * 64, 128))
            self.dec_in = nn.Linear(64, 8 * 8 * 64)
            self.dec = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn.ReLU(),
                                     nn.Conv2d(32, per_pixel, 3, 1, 1))

        def forward(self, x):
            mu, logvar = self.enc(x).chunk(2, 1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            out = self.dec(self.dec_in(z).view(-1, 64, 8, 8))
            kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
            return out, kl

    def mixture_nll(x, out):  # PixelCNN++'s loss, per pixel, same parametrization as jaxvae's
        y = x * 2 - 1
        means, logits, log_s, coeffs = torch.split(out, [k * c, k, k * c, k * 3], 1)
        b, _, h, w = x.shape
        means, log_s = means.view(b, k, c, h, w), log_s.view(b, k, c, h, w).clamp(min=-7)
        co = torch.tanh(coeffs.view(b, k, 3, h, w))
        y = y.unsqueeze(1)
        m = torch.stack([means[:, :, 0], means[:, :, 1] + co[:, :, 0] * y[:, :, 0],
                         means[:, :, 2] + co[:, :, 1] * y[:, :, 0] + co[:, :, 2] * y[:, :, 1]], 2)
        inv = torch.exp(-log_s)
        a, bb = (y + 1 / 255 - m) * inv, (y - 1 / 255 - m) * inv
        mid = nn.functional.logsigmoid(a) + nn.functional.logsigmoid(-bb) + torch.log(-torch.expm1(bb - a))
        lp = torch.where(y < -0.999, nn.functional.logsigmoid(a),
                         torch.where(y > 0.999, nn.functional.logsigmoid(-bb), mid)).sum(2)
        lp = torch.logsumexp(lp + torch.log_softmax(logits, 1), 1)
        return -lp.sum((1, 2))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randint(0, 256, (BATCH, 3, 32, 32)).float() / 255

    def step():
        out, kl = net(x)
        loss = (mixture_nll(x, out) + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(time.perf_counter() - t0)
    t = min(times)
    return {"examples_per_s": steps * BATCH / t, "step_ms": 1e3 * t / steps, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args()
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
           "jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "batch": BATCH,
           "image": SHAPE, "steps": args.steps}
    out["conv_peak_gflops_per_s"] = conv_peak(args.repeats)
    print(json.dumps(out), flush=True)  # partial results survive a timeout
    out["jaxvae"] = jaxvae_throughput(args.steps, args.repeats)
    out["fraction_of_conv_peak"] = out["jaxvae"]["gflops_per_s"] / out["conv_peak_gflops_per_s"]
    if args.torch:
        out["torch_eager"] = torch_throughput(args.steps, args.repeats)
        out["jaxvae_over_torch"] = out["jaxvae"]["examples_per_s"] / out["torch_eager"]["examples_per_s"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
