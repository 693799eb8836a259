"""Cost of one training step (ELBO, batch 100, MNIST-sized MLP 784-400-40) per posterior/prior, relative
to the Gaussian posterior, measured in one process with the variants interleaved (rounds of 20 steps,
median over rounds) so that machine load affects all alike.

    python benchmarks/flow_step_cost.py [rounds] [variant substrings ...]

``python benchmarks/flow_step_cost.py --flops [substrings ...]`` times nothing: it prints XLA's count of
floating-point operations of one ELBO gradient (batch 100) per variant, relative to the Gaussian posterior
(a machine-independent proxy; it needs no quiet machine).

e.g. ``python benchmarks/flow_step_cost.py 5 planar sylv`` times only the Gaussian baseline and the
variants whose names contain "planar" or "sylv" (fewer programs to compile). Run it alone on the machine
(``flock -x /tmp/jaxvae-cpu.lock ...``).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import common
from jaxvae.experiment import train as T
from jaxvae.experiment.configs import base_config
from jaxvae.vae.model import VAE

BASE = "gaussian (analytic KL)"
VARIANTS = {
    "gaussian (analytic KL)": dict(),
    "gaussian (Monte Carlo KL)": dict(analytic_kl=False),
    "planar L=10": dict(flow="planar", flow_length=10),
    "iaf L=4 (MADE 320, context 16)": dict(flow="iaf", flow_length=4,
                                           flow_options=dict(hidden=(320,), context=16)),
    "sylvester orthogonal L=4": dict(flow="sylvester", flow_length=4, flow_options=dict(variant="orthogonal")),
    "sylvester orthogonal L=4, M=16 columns": dict(flow="sylvester", flow_length=4,
                                                  flow_options=dict(variant="orthogonal", columns=16)),
    "sylvester householder L=4 (4 refl.)": dict(flow="sylvester", flow_length=4,
                                               flow_options=dict(variant="householder")),
    "sylvester triangular L=4": dict(flow="sylvester", flow_length=4, flow_options=dict(variant="triangular")),
    "vampprior K=50": dict(prior="vampprior", prior_options=dict(components=50)),
    "vampprior K=500": dict(prior="vampprior", prior_options=dict(components=500)),
}


def flops(variants):
    """XLA's flop count of one ELBO value-and-gradient (batch 100) per variant."""
    from jaxvae.vae import objectives

    # XLA counts a loop body once, whatever its trip count: unroll the flows' scans over layers and the
    # Bjorck iterations' fori_loop so that every iteration is counted
    scan = jax.lax.scan
    jax.lax.scan = lambda f, init, xs=None, length=None, **kw: scan(f, init, xs, length, **{**kw, "unroll": True})

    def fori_loop(lower, upper, body, init, **_):
        for i in range(lower, upper):
            init = body(i, init)
        return init

    jax.lax.fori_loop = fori_loop
    x = jnp.asarray((np.random.default_rng(0).uniform(size=(100, 784)) > 0.7).astype(np.float32))
    out = {}
    for name, opts in variants.items():
        opts = dict(opts)
        analytic = opts.pop("analytic_kl", True)
        model = VAE(x_dim=784, latent_dim=40, encoder_hidden=(400,), decoder_hidden=(400,), **opts)
        params = model.init(jax.random.key(0), data=np.asarray(x))
        fn = jax.jit(jax.value_and_grad(
            lambda p, k: objectives.elbo_loss(model, p, x, k, analytic_kl=analytic)[0]))
        cost = fn.lower(params, jax.random.key(1)).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out[name] = float(cost["flops"])
        print(f"analysed {name}", file=sys.stderr, flush=True)
    print("| posterior / prior | GFLOP per step (XLA count) | relative to Gaussian |\n| --- | ---: | ---: |")
    for name, f in out.items():
        print(f"| {name} | {f / 1e9:.3f} | {f / out[BASE]:.2f} |")


def main():
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return None
    count_flops = "--flops" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--flops"]
    if count_flops:
        args = ["0"] + args
    rounds = int(args[0]) if args else 5
    wanted = args[1:]
    variants = {name: opts for name, opts in VARIANTS.items()
                if name == BASE or not wanted or any(w in name for w in wanted)}
    if wanted and len(variants) == 1:
        raise SystemExit(f"no variant matches {wanted}; variants: {list(VARIANTS)}")
    if count_flops:
        return flops(variants)
    info_start = common.device_info()
    x = (np.random.default_rng(0).uniform(size=(2000, 784)) > 0.7).astype(np.float32)
    x = jnp.asarray(x)
    runs = {}
    for name, opts in variants.items():
        opts = dict(opts)
        cfg = base_config()
        cfg.objective.analytic_kl = opts.pop("analytic_kl", True)  # only the plain Gaussian has a closed form
        model = VAE(x_dim=784, latent_dim=40, encoder_hidden=(400,), decoder_hidden=(400,), **opts)
        tx = T.make_optimizer(cfg, 1e-3)
        run = T.make_run_steps(model, cfg, tx, steps_per_epoch=20, batch_size=100)
        state = T.create_train_state(model, tx, 0, init_data=np.asarray(x))
        state, info = run(state, x, 20)  # compile
        jax.block_until_ready(info.metrics)
        runs[name] = [run, state]
        print(f"compiled {name}", file=sys.stderr, flush=True)
    def twenty_steps(entry):
        def once():
            entry[1], info = entry[0](entry[1], x, 20)
            jax.block_until_ready(info.metrics)
        return once

    walls, _, _ = common.round_robin({name: twenty_steps(entry) for name, entry in runs.items()}, rounds)
    times = {name: [w / 20 for w in ws] for name, ws in walls.items()}
    print(common.machine_line(common.finish(info_start)))
    base = np.median(times[BASE])
    print("| posterior / prior | ms per step (median) | relative to Gaussian |\n| --- | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {1e3 * np.median(t):.2f} | {np.median(t) / base:.2f} |")


if __name__ == "__main__":
    main()
