"""Training throughput of the conv VAE at 32x32x3, batch 64 (issue 19): jaxvae against the same network in
PyTorch eager, and the fraction of the convolution FLOP peak, all in one process.

    python benchmarks/conv_bench.py [--steps 20] [--repeats 3] [--fused-steps 3] [--no-torch] [--out FILE.json]

Model: experiments/conv_vae_cifar10.py's shape made plain: ``network=conv``, widths (32, 64), strides (2, 2),
3x3 kernels, no normalization, ReLU, latent 64, per-pixel mixture of 5 discretized logistics (PixelCNN++
parametrization), ELBO (K=1, analytic KL), Adam (lr 1e-3, eps 1e-4); synthetic 8-bit images (throughput
does not depend on the pixel values). Both frameworks draw a fresh batch of 64 from an in-memory training
set of ``steps`` x 64 images at each step.

What is reported (one JSON, also printed):

- ``conv_peak``: the best GFLOP/s of a few large jitted 3x3 convolutions (FLOPs counted analytically,
  2 x multiply-adds), measured in this process right before the training steps.
- ``jaxvae``: training examples/s of jaxvae's training step, one step per dispatch (how the runner
  trains conv nets on CPU), ``--steps`` steps per repeat, best of ``--repeats`` after a warm-up;
  ``jaxvae_fused_scan``: the same steps fused into one lax.scan (the MLP default), for the record.
- ``torch_eager``: the same network in PyTorch eager (``TorchConvVAE`` below), best of ``--repeats`` at
  torch.set_num_threads(2) and at (1); the faster setting is the one compared (as benchmarks/bench.py).
- ``flops``: the model's convolution (and dense) FLOPs per example counted analytically from the layer
  shapes; training = 3 x forward (forward, input gradient, weight gradient). Checked against torch's own
  FlopCounterMode count of the torch network (must agree exactly), and the parameter counts must agree.
- ``same_network``: with jaxvae's parameters copied into the torch network and the same noise, both give
  the same loss and gradients (float32 tolerance) -- the torch network is the same function, not a look-alike.
- ``fraction_of_conv_peak``: achieved conv GFLOP/s in training / conv peak, for jaxvae and for torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from common import best_time, device_info, finish
from jaxvae.experiment import train as train_lib
from jaxvae.experiment.configs import base_config
from jaxvae.experiment.building import build_model

SHAPE = (32, 32, 3)
BATCH = 64
MIXTURES = 5
LATENT = 64
WIDTHS = (32, 64)
STRIDES = (2, 2)
KERNEL = 3


def config():
    c = base_config()
    c.model.latent_dim = LATENT
    c.model.network = "conv"
    c.model.conv_widths = WIDTHS
    c.model.conv_strides = STRIDES
    c.model.conv_kernel = KERNEL
    c.model.normalization = "none"
    c.model.activation = "relu"
    c.model.likelihood = "discretized_logistic_mixture"
    c.model.num_mixtures = MIXTURES
    c.objective.name = "elbo"
    c.train.batch_size = BATCH
    return c


def jax_model():
    return build_model(config(), int(np.prod(SHAPE)), SHAPE)


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """n 8-bit images as float32 k/255, shape (n, 32, 32, 3)."""
    return (np.random.default_rng(seed).integers(0, 256, (n, *SHAPE)) / 255.0).astype(np.float32)


# -- analytic FLOPs ----------------------------------------------------------------------------------
def layer_table(model=None) -> list[dict]:
    """Every conv / transposed conv / dense layer of the jaxvae network with its shapes, read off the
    parameter shapes of ``model`` (default: the benchmark's) and the strides. ``macs``: multiply-adds per
    example of the forward pass (a transposed conv scatters each *input* pixel through its kernel, so its
    count is H_in W_in C_in C_out k^2, the useful work, not XLA's dilated-input formulation)."""
    model = model or jax_model()
    params = jax.eval_shape(model.init, jax.random.key(0))
    enc, dec = params["encoder"], params["decoder"]
    h, w, _ = SHAPE
    rows = []
    for i, s in enumerate(STRIDES):  # encoder: strided convs
        kh, kw, cin, cout = enc[f"conv_{i}"]["kernel"].shape
        h, w = h // s, w // s
        rows.append(dict(name=f"encoder/conv_{i}", kind="conv", k=kh, cin=cin, cout=cout, out_hw=(h, w),
                         macs=h * w * cin * cout * kh * kw))
    din, dout = enc["head"]["kernel"].shape
    rows.append(dict(name="encoder/head", kind="dense", cin=din, cout=dout, macs=din * dout))
    din, dout = dec["dense"]["kernel"].shape
    rows.append(dict(name="decoder/dense", kind="dense", cin=din, cout=dout, macs=din * dout))
    for i, s in enumerate(reversed(STRIDES)):  # decoder: transposed convs
        kh, kw, cin, cout = dec[f"deconv_{i}"]["kernel"].shape
        rows.append(dict(name=f"decoder/deconv_{i}", kind="conv_transpose", k=kh, cin=cin, cout=cout,
                         in_hw=(h, w), macs=h * w * cin * cout * kh * kw))
        h, w = h * s, w * s
    for name in sorted(k for k in dec if k.startswith("out")):
        kh, kw, cin, cout = dec[name]["conv"]["kernel"].shape
        rows.append(dict(name=f"decoder/{name}", kind="conv", k=kh, cin=cin, cout=cout, out_hw=(h, w),
                         macs=h * w * cin * cout * kh * kw))
    return rows


def model_flops(rows=None) -> dict:
    """FLOPs per example (2 x multiply-adds): forward, and training = 3 x forward (forward, gradient
    w.r.t. the layer's input, gradient w.r.t. its weights; the first conv's input gradient is not needed,
    which this convention ignores: it is 0.9 % of the conv FLOPs here)."""
    rows = rows or layer_table()
    conv = 2 * sum(r["macs"] for r in rows if r["kind"] != "dense")
    dense = 2 * sum(r["macs"] for r in rows if r["kind"] == "dense")
    return {"conv_forward": conv, "dense_forward": dense, "conv_train": 3 * conv, "dense_train": 3 * dense,
            "train": 3 * (conv + dense)}


# -- the same network in PyTorch eager ---------------------------------------------------------------
def torch_network(seed: int = 0):
    """``TorchConvVAE``: jaxvae's conv VAE written plainly in torch (NCHW), layer for layer:

    encoder  pad (0,1,0,1) -> Conv2d(3, 32, 3, stride 2) -> ReLU -> pad -> Conv2d(32, 64, 3, 2) -> ReLU
             -> flatten -> Linear(8*8*64, 2*64) -> (mu, logvar)
    decoder  Linear(64, 8*8*64) -> ReLU -> ConvTranspose2d(64, 64, 3, 2)[:16, :16] -> ReLU
             -> ConvTranspose2d(64, 32, 3, 2)[:32, :32] -> ReLU -> four Conv2d(32, k, 3, pad 1, no bias) heads
             (means 15, logits 5, log-scales 15, coefficients 15) each plus a per-pixel bias (k, 32, 32)
    loss     -mean[log p(x|z) - KL], z = mu + exp(logvar/2) eps, p(x|z) the per-pixel mixture of 5
             discretized logistics (PixelCNN++), analytic KL.

    The paddings reproduce XLA's "SAME" exactly (a stride-2 conv on an even size pads (0, 1); the
    transposed conv is lax.conv_transpose's, i.e. torch's padding 0 cropped to 2x the input), so that with
    copied weights (``load_jax_params``) the two networks compute the same function (``compare``).
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    k, c = MIXTURES, SHAPE[2]
    h_img, w_img = SHAPE[:2]
    f = math.prod(STRIDES)
    bottom = (h_img // f, w_img // f)
    head_channels = {"out": k * c, "out_logits": k, "out_log_scale": k * c, "out_coeffs": k * c * (c - 1) // 2}

    class PixelHead(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, KERNEL, 1, KERNEL // 2, bias=False)
            self.bias = nn.Parameter(torch.zeros(cout, h_img, w_img))

        def forward(self, h):
            return self.conv(h) + self.bias

    class TorchConvVAE(nn.Module):
        def __init__(self):
            super().__init__()
            chans = (c, *WIDTHS)
            self.enc = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], KERNEL, STRIDES[i])
                                     for i in range(len(WIDTHS)))
            self.enc_head = nn.Linear(bottom[0] * bottom[1] * WIDTHS[-1], 2 * LATENT)
            self.dec_in = nn.Linear(LATENT, bottom[0] * bottom[1] * WIDTHS[-1])
            rw = tuple(reversed(WIDTHS))
            self.dec = nn.ModuleList(nn.ConvTranspose2d(rw[max(i - 1, 0)], rw[i], KERNEL, s)
                                     for i, s in enumerate(reversed(STRIDES)))
            self.heads = nn.ModuleDict({n: PixelHead(WIDTHS[0], m) for n, m in head_channels.items()})

        @staticmethod
        def _same_pad(h, stride):  # XLA SAME for a k x k conv of this stride: (low, high) per axis
            pads = []
            for size in (h.shape[3], h.shape[2]):  # F.pad order: last axis first
                out = -(-size // stride)
                total = max((out - 1) * stride + KERNEL - size, 0)
                pads += [total // 2, total - total // 2]
            return F.pad(h, pads)

        def encode(self, x):
            h = x
            for conv, s in zip(self.enc, STRIDES):
                h = F.relu(conv(self._same_pad(h, s)))
            return self.enc_head(h.flatten(1)).chunk(2, 1)

        def decode(self, z):
            h = F.relu(self.dec_in(z)).view(-1, WIDTHS[-1], *bottom)
            for deconv, s in zip(self.dec, reversed(STRIDES)):
                size = (h.shape[2] * s, h.shape[3] * s)
                h = F.relu(deconv(h)[:, :, : size[0], : size[1]])
            return {n: head(h) for n, head in self.heads.items()}

        def loss(self, x, eps):
            """x (B, 3, 32, 32) in [0, 1]; eps (B, latent) standard normal noise."""
            mu, logvar = self.encode(x)
            z = mu + torch.exp(0.5 * logvar) * eps
            nll = mixture_nll(x, self.decode(z))
            kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
            return (nll + kl).mean()

    def mixture_nll(x, out):
        """-log p(x|z) per example, PixelCNN++'s per-pixel mixture in jaxvae's parametrization."""
        b = x.shape[0]
        y = (2.0 * x - 1.0).unsqueeze(1)  # (B, 1, C, H, W)
        means = out["out"].view(b, k, c, h_img, w_img)
        log_s = out["out_log_scale"].view(b, k, c, h_img, w_img).clamp(min=-7.0)
        co = torch.tanh(out["out_coeffs"].view(b, k, c * (c - 1) // 2, h_img, w_img))
        shifted, i = [], 0
        for ch in range(c):
            m = means[:, :, ch]
            for j in range(ch):
                m = m + co[:, :, i] * y[:, :, j]
                i += 1
            shifted.append(m)
        mu = torch.stack(shifted, 2)
        inv = torch.exp(-log_s)
        a, bb = (y + 1 / 255 - mu) * inv, (y - 1 / 255 - mu) * inv
        bottom_, top = y < -(1 - 1 / 255), y > 1 - 1 / 255
        edge = bottom_ | top
        a_m, b_m = torch.where(edge, torch.ones_like(a), a), torch.where(edge, torch.zeros_like(bb), bb)
        mid = F.logsigmoid(a_m) + F.logsigmoid(-b_m) + torch.log(-torch.expm1(b_m - a_m))
        lp = torch.where(bottom_, F.logsigmoid(a), torch.where(top, F.logsigmoid(-bb), mid)).sum(2)
        lp = torch.logsumexp(lp + torch.log_softmax(out["out_logits"], 1), 1)  # (B, H, W)
        return -lp.sum((1, 2))

    torch.manual_seed(seed)
    return TorchConvVAE()


def load_jax_params(net, params) -> None:
    """Copy jaxvae's parameters into ``net`` (layout changes only: HWIO -> OIHW, the un-flipped
    lax.conv_transpose kernel -> torch's flipped one, HWC flatten order -> CHW)."""
    import torch

    enc, dec = params["encoder"], params["decoder"]
    t = lambda a: torch.tensor(np.array(a, np.float32))  # noqa: E731  (a copy: jax arrays are read-only)
    f = math.prod(STRIDES)
    hb, wb, cb = SHAPE[0] // f, SHAPE[1] // f, WIDTHS[-1]
    # index of torch's CHW-flattened unit in jax's HWC-flattened vector
    chw_from_hwc = np.arange(hb * wb * cb).reshape(hb, wb, cb).transpose(2, 0, 1).reshape(-1)
    with torch.no_grad():
        for i, conv in enumerate(net.enc):
            conv.weight.copy_(t(np.transpose(enc[f"conv_{i}"]["kernel"], (3, 2, 0, 1))))
            conv.bias.copy_(t(enc[f"conv_{i}"]["bias"]))
        net.enc_head.weight.copy_(t(np.asarray(enc["head"]["kernel"])[chw_from_hwc].T))
        net.enc_head.bias.copy_(t(enc["head"]["bias"]))
        net.dec_in.weight.copy_(t(np.asarray(dec["dense"]["kernel"])[:, chw_from_hwc].T))
        net.dec_in.bias.copy_(t(np.asarray(dec["dense"]["bias"])[chw_from_hwc]))
        for i, deconv in enumerate(net.dec):
            kern = np.asarray(dec[f"deconv_{i}"]["kernel"])[::-1, ::-1]  # (kh, kw, in, out), flipped
            deconv.weight.copy_(t(np.transpose(kern, (2, 3, 0, 1))))
            deconv.bias.copy_(t(dec[f"deconv_{i}"]["bias"]))
        for name, head in net.heads.items():
            head.conv.weight.copy_(t(np.transpose(dec[name]["conv"]["kernel"], (3, 2, 0, 1))))
            head.bias.copy_(t(np.transpose(dec[name]["bias"], (2, 0, 1))))


def jax_loss(model, params, x, eps):
    """jaxvae's ELBO loss with given noise: -mean[log p(x|z) - KL], z = mu + exp(logvar/2) eps."""
    post = model.encode(params, x)
    z = post.mu + jnp.exp(0.5 * post.logvar) * eps
    return -jnp.mean(model.log_likelihood(params, x, z) - model.analytic_kl(params, post))


def compare(seed: int = 0, n: int = 8) -> dict:
    """Loss and gradients of jaxvae's network and the torch network with the same parameters and noise.
    The parameters are jaxvae's init with every zero-initialised head perturbed (so no gradient is
    trivially zero)."""
    import torch

    model = jax_model()
    params = model.init(jax.random.key(seed))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [p + 0.05 * jax.random.normal(kk, p.shape) for p, kk in zip(leaves, keys)]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    x = synthetic_images(n, seed)
    x[0, 0, 0], x[0, 1, 1] = 0.0, 1.0  # both edge bins present
    eps = np.random.default_rng(seed + 2).standard_normal((n, LATENT)).astype(np.float32)
    loss_j, grads_j = jax.value_and_grad(lambda p: jax_loss(model, p, x, eps))(params)

    net = torch_network(seed)
    load_jax_params(net, params)
    loss_t = net.loss(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(eps))
    loss_t.backward()
    # compare gradients in torch's layout: load jaxvae's gradient tree into a second torch net
    ref = torch_network(seed)
    load_jax_params(ref, grads_j)
    worst = 0.0
    with torch.no_grad():
        for p, g in zip(net.parameters(), ref.parameters()):
            worst = max(worst, float((p.grad - g).abs().max()) / (float(g.abs().max()) + 1e-12))
    loss_t = float(loss_t.detach())
    return {"loss_jax": float(loss_j), "loss_torch": loss_t,
            "loss_rel_diff": abs(float(loss_j) - loss_t) / abs(float(loss_j)),
            "grad_max_rel_diff": worst}


def torch_counts() -> dict:
    """Parameters and forward FLOPs of the torch network by torch's own FlopCounterMode (batch 1)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = torch_network()
    x = torch.rand(1, SHAPE[2], *SHAPE[:2])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        mu, logvar = net.encode(x)
        net.decode(mu)
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    conv = sum(v for op, v in by_op.items() if "convolution" in op)
    dense = sum(v for op, v in by_op.items() if "mm" in op)
    return {"params": sum(p.numel() for p in net.parameters()), "conv_forward": conv,
            "dense_forward": dense, "by_op": by_op}


CONV_PEAK_SHAPES = ((64, 16, 16, 64, 64), (64, 32, 32, 64, 64), (64, 16, 16, 128, 128), (32, 32, 32, 128, 128))


def conv_peak(repeats: int, n: int = 10) -> dict:
    """Best GFLOP/s over a few 3x3 stride-1 "SAME" convolutions (batch, H, W, C_in -> C_out), each
    repeated n times in one jitted scan; FLOPs = 2 B H W C_in C_out 9 per conv."""
    best, per_shape = 0.0, {}
    for b, h, w, cin, cout in CONV_PEAK_SHAPES:
        x = jnp.ones((b, h, w, cin), jnp.float32)
        kern = jnp.full((3, 3, cin, cout), 0.01, jnp.float32)

        def body(y, _, kern=kern):
            out = jax.lax.conv_general_dilated(y, kern, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return out * 0.1, None

        f = jax.jit(lambda x, body=body: jax.lax.scan(body, x, None, length=n)[0])
        jax.block_until_ready(f(x))
        flops = 2 * b * h * w * cin * cout * 9 * n
        g = flops / best_time(lambda: jax.block_until_ready(f(x)), repeats) / 1e9
        per_shape[f"{b}x{h}x{w}x{cin}->{cout}"] = g
        best = max(best, g)
    return {"gflops_per_s": best, "per_shape": per_shape}


def jaxvae_throughput(steps: int, repeats: int, fused: bool) -> dict:
    """Training examples/s of jaxvae's own training loop (train.make_run_steps, batches gathered from the
    in-memory training set inside the compiled step). ``fused=False``: one step per dispatch, a Python loop
    of ``steps`` calls (what the runner does for conv nets on CPU, train.dispatch_steps); ``fused=True``:
    one lax.scan over ``steps`` steps (the MLP default; XLA:CPU runs the conv gradients in a loop ~20x
    slower)."""
    c = config()
    n = steps * BATCH
    x = jnp.asarray(synthetic_images(n).reshape(n, -1))
    model = jax_model()
    tx = train_lib.make_optimizer(c, train_lib.learning_rate_schedule(c, steps)[0])
    state = train_lib.create_train_state(model, tx, 0)
    per_call = steps if fused else 1
    run = jax.jit(train_lib.make_run_steps(model, c, tx, steps, BATCH, jit=False), static_argnums=2,
                  donate_argnums=0)
    holder = {"s": state}

    def go():
        info = None
        for _ in range(steps // per_call):
            holder["s"], info = run(holder["s"], x, per_call)
        return info.metrics["loss"]

    jax.block_until_ready(go())  # compile + warm-up
    t = best_time(lambda: jax.block_until_ready(go()), repeats)
    params = sum(v.size for v in jax.tree_util.tree_leaves(holder["s"].params))
    return {"examples_per_s": n / t, "step_ms": 1e3 * t / steps, "params": int(params),
            "steps_per_dispatch": per_call, "steps_per_repeat": steps, "repeats": repeats}


def torch_throughput(steps: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    net = torch_network(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4)  # jaxvae's Adam
    n = steps * BATCH
    data = torch.from_numpy(synthetic_images(n)).permute(0, 3, 1, 2).contiguous()
    pos = {"perm": torch.randperm(n), "i": 0}

    def step():
        if (pos["i"] + 1) * BATCH > n:
            pos["perm"], pos["i"] = torch.randperm(n), 0
        x = data[pos["perm"][pos["i"] * BATCH:(pos["i"] + 1) * BATCH]]
        pos["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = net.loss(x, torch.randn(BATCH, LATENT))
        loss.backward()
        opt.step()
        return loss

    for _ in range(2):  # warm-up
        step()
    t = best_time(lambda: [step() for _ in range(steps)], repeats)
    return {"examples_per_s": n / t, "step_ms": 1e3 * t / steps, "threads": threads,
            "torch": torch.__version__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fused-steps", type=int, default=3,
                    help="steps of the fused-scan measurement (one repeat: it is ~15x slower), 0 = skip")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args(argv)
    out = {"device_info": device_info(), "batch": BATCH, "image": SHAPE, "command": " ".join(sys.argv)}
    flops = model_flops()
    out["flops_per_example"] = flops
    out["layers"] = layer_table()
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            out["torch_eager"] = "not installed (pip install -e '.[bench]')"
    if have_torch:
        tc = torch_counts()
        out["torch_counts"] = tc
        out["same_network"] = compare()
        out["same_network"]["params_equal"] = None  # filled below
        out["same_network"]["conv_flops_equal"] = tc["conv_forward"] == flops["conv_forward"]
        out["same_network"]["dense_flops_equal"] = tc["dense_forward"] == flops["dense_forward"]
    print(json.dumps({k: out[k] for k in out if k != "layers"}, default=str), flush=True)

    out["conv_peak"] = conv_peak(args.repeats)
    print(json.dumps({"conv_peak": out["conv_peak"]}), flush=True)  # partial results survive a timeout
    peak = out["conv_peak"]["gflops_per_s"]

    def rates(rec):
        rec["conv_gflops_per_s"] = rec["examples_per_s"] * flops["conv_train"] / 1e9
        rec["fraction_of_conv_peak"] = rec["conv_gflops_per_s"] / peak
        return rec

    out["jaxvae"] = rates(jaxvae_throughput(args.steps, args.repeats, fused=False))
    print(json.dumps({"jaxvae": out["jaxvae"]}), flush=True)
    if args.fused_steps:
        out["jaxvae_fused_scan"] = rates(jaxvae_throughput(args.fused_steps, 1, fused=True))
        print(json.dumps({"jaxvae_fused_scan": out["jaxvae_fused_scan"]}), flush=True)
    if have_torch:
        out["same_network"]["params_equal"] = out["torch_counts"]["params"] == out["jaxvae"]["params"]
        runs = [torch_throughput(args.steps, args.repeats, th) for th in (2, 1)]
        out["torch_eager"] = rates(max(runs, key=lambda r: r["examples_per_s"]))
        out["torch_eager_by_threads"] = {r["threads"]: r["examples_per_s"] for r in runs}
        out["jaxvae_over_torch"] = out["jaxvae"]["examples_per_s"] / out["torch_eager"]["examples_per_s"]
    finish(out["device_info"])
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
