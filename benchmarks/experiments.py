"""Before/after experiments for changes proposed to jaxvae/ (see benchmarks/README.md).

Each experiment times jaxvae's own function and modified copies of it *interleaved* in one process
(round-robin over the variants, median per variant), so that a shared machine's changing load hits all
variants alike. Reports examples/s (wall) and FLOP per CPU-second.

    python benchmarks/experiments.py train   # run_steps: XLA CPU options, cheaper finite checks, softplus
    python benchmarks/experiments.py eval    # K=5000 batch bound: XLA CPU options, chunk size, softplus
    python benchmarks/experiments.py all

Variants:
  * ``ynn_off``: compile with ``compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}``: XLA's
    own (Eigen) dots and loop/reduce fusions instead of YNNPACK library fusions.
  * ``dot_only``: YNNPACK for dots only (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``), XLA's reductions.
  * ``lean_checks``: the non-finite check as ``isfinite(sum(g * 0))`` per leaf (one fused multiply-reduce
    instead of a materialized boolean array + reduce-window tree) and the nan_policy=stop freeze folded
    into the one keep/select of the step (same semantics, see ``make_run_steps_lean``).
  * ``softplus``: ``bernoulli_log_prob`` as ``x*l - (max(l, 0) + log1p(exp(-|l|)))`` instead of
    ``x*l - logaddexp(0, l)`` (no NaN-guard select, and the backward pass reuses exp(-|l|)).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp

import bench
import common
from jaxvae.vae import distributions as D
from jaxvae.vae import evaluation
from jaxvae.experiment import train as train_lib
from jaxvae.data import binarize_batch
from jaxvae.vae.objectives import make_loss_fn

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
DOT_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def bernoulli_log_prob_softplus(x, logits):
    """sum_i [x_i l_i - softplus(l_i)], softplus(l) = max(l, 0) + log1p(exp(-|l|))."""
    sp = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.sum(x * logits - sp, axis=-1)


@contextlib.contextmanager
def patched_bernoulli(enabled: bool):
    """Trace with the softplus form of the Bernoulli log-likelihood (jaxvae.vae.model looks it up at trace time)."""
    orig = D.bernoulli_log_prob
    if enabled:
        D.bernoulli_log_prob = bernoulli_log_prob_softplus
    try:
        yield
    finally:
        D.bernoulli_log_prob = orig


# -- a copy of jaxvae.experiment.train.make_train_step / make_run_steps with the lean checks ------------------
def _all_finite_lean(tree) -> jax.Array:
    """True iff every element is finite: x * 0 is 0 for finite x and NaN for inf/NaN, so one fused
    multiply-add reduction per leaf decides it (no boolean array, no overflow false positives)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.bool_(True)
    return jnp.isfinite(sum(jnp.sum(x * jnp.zeros((), x.dtype)) for x in leaves))


def make_run_steps_lean(model, config, tx, steps_per_epoch: int, batch_size: int, compiler_options=None):
    loss_fn = make_loss_fn(model, config.objective.name, num_samples=config.objective.k,
                           analytic_kl=config.objective.analytic_kl)
    dynamic = config.data.binarize == "dynamic"
    stop_on_bad = config.train.nan_policy == "stop"

    def train_step(state, x, key, frozen):
        k_bin, k_obj = jax.random.split(key)
        if dynamic:
            x = binarize_batch(k_bin, x)
        beta = train_lib.beta_at(config, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, k_obj, beta)
        checks = [jnp.isfinite(loss)] + [_all_finite_lean(grads.get(n, {})) for n in ("encoder", "decoder", "flow")]
        ok = jnp.all(jnp.stack(checks))
        bad_term = jnp.argmin(jnp.stack(checks))
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = jax.tree_util.tree_map(lambda p, u: p + u, state.params, updates)
        apply = ok & ~frozen  # one select per leaf: the update is kept only when finite and not frozen
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(apply, a, b), new, old)
        state = train_lib.TrainState(
            state.step + jnp.where(frozen, 0, 1).astype(jnp.int32),
            keep(new_params, state.params),
            keep(new_opt, state.opt_state),
            state.key,
            state.skipped + jnp.where(ok | frozen, 0, 1).astype(jnp.int32),
        )
        return state, {"loss": loss, "beta": beta, **metrics}, ok, bad_term

    def run_steps(state, x_train, num_steps: int):
        root = jax.random.wrap_key_data(state.key)
        data_key = jax.random.fold_in(root, 1)
        step_key = jax.random.fold_in(root, 2)
        epoch = state.step // steps_per_epoch
        start = state.step % steps_per_epoch
        perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), x_train.shape[0])

        def body(carry, i):
            state, bad_step, bad_term = carry
            idx = jax.lax.dynamic_slice_in_dim(perm, (start + i) * batch_size, batch_size)
            x = jnp.take(x_train, idx, axis=0)
            frozen = (bad_step >= 0) if stop_on_bad else jnp.bool_(False)
            new_state, metrics, ok, term = train_step(state, x, jax.random.fold_in(step_key, state.step), frozen)
            first_bad = (bad_step < 0) & ~ok
            bad_term = jnp.where(first_bad, term, bad_term)
            bad_step = jnp.where(first_bad, state.step, bad_step)
            return (new_state, bad_step, bad_term), (metrics, ok)

        init = (state, jnp.int32(-1), jnp.int32(0))
        (state, bad_step, bad_term), (metrics, oks) = jax.lax.scan(body, init, jnp.arange(num_steps))
        denom = jnp.maximum(oks.astype(jnp.float32).sum(), 1.0)
        means = {k: jnp.sum(jnp.where(oks, v, 0.0)) / denom for k, v in metrics.items()}
        return state, train_lib.StepInfo(means, bad_step, bad_term)

    return jax.jit(run_steps, static_argnums=2, donate_argnums=0, compiler_options=compiler_options)


def make_run_steps_jaxvae(model, config, tx, steps_per_epoch, batch_size, compiler_options=None):
    """jaxvae's own run_steps, re-jitted with compiler options when given."""
    fn = train_lib.make_run_steps(model, config, tx, steps_per_epoch, batch_size)
    if not compiler_options:
        return fn
    return jax.jit(fn.__wrapped__, static_argnums=2, donate_argnums=0, compiler_options=compiler_options)


TRAIN_VARIANTS = {
    "jaxvae": dict(lean=False, opts=None, softplus=False),
    "ynn_off": dict(lean=False, opts=YNN_OFF, softplus=False),
    "dot_only": dict(lean=False, opts=DOT_ONLY, softplus=False),
    "lean_checks": dict(lean=True, opts=None, softplus=False),
    "softplus": dict(lean=False, opts=None, softplus=True),
    "all (ynn_off+lean+softplus)": dict(lean=True, opts=YNN_OFF, softplus=True),
}


def train_experiment(batch_size: int, objective: str, k: int, rounds: int, target_flop: float,
                     variants=TRAIN_VARIANTS) -> dict:
    config = bench.iwae_mnist_config(batch_size, objective, k)
    model = bench.make_model()
    steps = bench.steps_for(batch_size, k, target_flop, 50000)
    x_train = jax.device_put(bench.random_binary(steps * batch_size))
    schedule, _ = train_lib.learning_rate_schedule(config, steps)
    tx = train_lib.make_optimizer(config, schedule)
    runners, states = {}, {}
    for name, v in variants.items():
        make = make_run_steps_lean if v["lean"] else make_run_steps_jaxvae
        with patched_bernoulli(v["softplus"]):
            fn = make(model, config, tx, steps, batch_size, compiler_options=v["opts"])
            s, info = fn(train_lib.create_train_state(model, tx, 0), x_train, steps)  # compile + warm
            jax.block_until_ready(s)
        runners[name], states[name] = fn, s
    def dispatch(name):
        def once():
            states[name], info = runners[name](states[name], x_train, steps)
            jax.block_until_ready((states[name], info))
        return once

    walls, cpus, _ = common.round_robin({name: dispatch(name) for name in variants}, rounds)
    fl = bench.train_flops_per_example(k)
    n = steps * batch_size
    out = {}
    for name in variants:
        r = common.rate_record(float(n), walls[name], cpus[name], "examples")
        r["flop_per_cpu_s"] = r["examples_per_cpu_s"] * fl
        r["flop_per_s"] = r["examples_per_s"] * fl
        out[name] = r
    return {"batch_size": batch_size, "objective": objective, "k": k, "steps": steps, "variants": out}


# -- evaluation ------------------------------------------------------------------------------------
def make_eval_fn(model, k: int, chunk: int, opts=None, softplus=False):
    def f(params, x, key):
        return evaluation.iwae_bound_chunked(model, params, x, key, k, chunk)
    jf = jax.jit(f, compiler_options=opts)
    return jf, softplus


EVAL_VARIANTS = {
    "jaxvae c500": dict(chunk=500, opts=None, softplus=False),
    "jaxvae c100": dict(chunk=100, opts=None, softplus=False),
    "ynn_off c500": dict(chunk=500, opts=YNN_OFF, softplus=False),
    "ynn_off c100": dict(chunk=100, opts=YNN_OFF, softplus=False),
    "dot_only c500": dict(chunk=500, opts=DOT_ONLY, softplus=False),
    "softplus c500": dict(chunk=500, opts=None, softplus=True),
    "ynn_off+softplus c500": dict(chunk=500, opts=YNN_OFF, softplus=True),
    "ynn_off+softplus c100": dict(chunk=100, opts=YNN_OFF, softplus=True),
}


def eval_experiment(batch_size: int, rounds: int, k: int = 5000, variants=EVAL_VARIANTS) -> dict:
    model = bench.make_model()
    x_all, _ = bench.load_test_images(1000)
    params = bench.eval_params(model, x_all)
    x = jnp.asarray(x_all[:batch_size])
    fns = {}
    for name, v in variants.items():
        with patched_bernoulli(v["softplus"]):
            fn, _ = make_eval_fn(model, k, v["chunk"], v["opts"])
            compiled = fn.lower(params, x, jax.random.key(0)).compile()
        ma = compiled.memory_analysis()
        fns[name] = (compiled, getattr(ma, "temp_size_in_bytes", None) if ma else None)
        jax.block_until_ready(compiled(params, x, jax.random.key(0)))
    walls = {n: [] for n in variants}
    cpus = {n: [] for n in variants}
    vals = {}
    for r in range(rounds):  # interleaved; round r draws with key r + 1 in every variant
        for name in variants:
            v, w, c = common.time_once(lambda: jax.block_until_ready(fns[name][0](params, x, jax.random.key(r + 1))))
            walls[name].append(w)
            cpus[name].append(c)
            vals.setdefault(name, []).append(float(jnp.mean(v)))
    fl = bench.eval_flops(batch_size, k)
    out = {}
    for name in variants:
        rec = common.rate_record(fl, walls[name], cpus[name], "flop")
        rec["temp_bytes"] = fns[name][1]
        rec["mean_bound_round0"] = vals[name][0]
        out[name] = rec
    return {"batch_size": batch_size, "k": k, "variants": out}


def print_rows(title: str, variants: dict, unit: str, fl_per_unit: float = 1.0):
    base = next(iter(variants.values()))
    print(f"\n{title}")
    print(f"| variant | {unit}/s (median) | GFLOP per CPU-s | speed-up (wall) | speed-up (CPU-s) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in variants.items():
        rate = r[f"{unit}_per_s"]
        cpu = r.get("flop_per_cpu_s", r.get(f"{unit}_per_cpu_s", 0) * fl_per_unit)
        print(f"| {name} | {rate:,.1f} | {cpu / 1e9:.1f} | {rate / base[f'{unit}_per_s']:.2f}x | "
              f"{cpu / base.get('flop_per_cpu_s', cpu):.2f}x |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "eval", "all"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(common.RESULTS / "experiments_cpu.json"))
    args = ap.parse_args(argv)
    results = {"device_info": common.device_info()}
    if args.what in ("train", "all"):
        results["train"] = []
        for b, obj, k in ((20, "elbo", 1), (100, "iwae", 5), (100, "iwae", 50)):
            r = train_experiment(b, obj, k, args.rounds, target_flop=1.5e10)
            results["train"].append(r)
            print_rows(f"training, batch {b}, {obj} K={k} ({r['steps']} steps per dispatch)",
                       r["variants"], "examples")
    if args.what in ("eval", "all"):
        r = eval_experiment(100, max(3, args.rounds - 2))
        results["eval"] = r
        print_rows("K=5000 bound of 100 test examples (iwae_bound_chunked)", r["variants"], "flop")
        for name, v in r["variants"].items():
            print(f"  {name}: XLA temp {(v['temp_bytes'] or 0) / 2**20:.0f} MiB, mean bound {v['mean_bound_round0']:.3f}")
    common.finish(results["device_info"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
