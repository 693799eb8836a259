"""Training: a pure ``train_step`` and many steps fused into one compiled ``lax.scan``.

Every random quantity of step t is derived from ``fold_in(root_key, t)`` and the data order of epoch e
from ``fold_in(data_key, e)``, so the state (params, optimizer state, step, root key) fully determines
the rest of a run: a resumed run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxvae.data import binarize_batch
from jaxvae.vae.model import VAE
from jaxvae.vae.objectives import make_loss_fn, objective_options
from jaxvae.experiment.parallel import shard_batch


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: number of updates applied so far
    params: Any
    opt_state: Any
    key: jax.Array  # root PRNG key (raw uint32 data, checkpointable)
    skipped: jax.Array  # int32: updates skipped because of a non-finite loss/gradient (nan_policy=skip)


class StepInfo(NamedTuple):
    """Per-dispatch summary returned to the host."""

    metrics: dict  # means over the dispatch's finite steps
    bad_step: jax.Array  # first step whose loss/gradient was not finite (-1: none)
    bad_term: jax.Array  # 0 = loss, 1 = encoder gradient, 2 = decoder gradient, 3 = flow gradient


BAD_TERMS = ("loss", "encoder gradient", "decoder gradient", "flow gradient")


def iwae_schedule_epochs(budget: float = 1.0) -> list[float]:
    """Burda et al. (2015): 3^i passes at learning rate 1e-3 * 10^(-i/7), i = 0..7 (3280 passes), scaled."""
    return [budget * 3**i for i in range(8)]


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, learning_rate=None):
    """optax schedule of the learning rate, and the total number of training steps.

    ``learning_rate`` (default train.learning_rate) may be a traced scalar (vectorized sweeps)."""
    t = config.train
    lr0 = t.learning_rate if learning_rate is None else learning_rate
    if t.schedule == "constant":
        total = max(1, round(t.num_epochs * t.budget * steps_per_epoch))
        return optax.constant_schedule(lr0), total
    if t.schedule == "iwae":
        epochs = iwae_schedule_epochs(t.budget)
        bounds, acc = [], 0
        for e in epochs:
            acc += max(1, round(e * steps_per_epoch))
            bounds.append(acc)
        lrs = [lr0 * 10 ** (-i / 7) for i in range(len(epochs))]
        sched = optax.join_schedules([optax.constant_schedule(lr) for lr in lrs], bounds[:-1])
        return sched, bounds[-1]
    raise ValueError(f"unknown train.schedule {t.schedule!r}; choose 'constant' or 'iwae'")


def make_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    t = config.train
    adam = optax.adam(schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps)
    if t.grad_clip_norm and t.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), adam)
    return adam


def beta_at(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """KL weight at a step: linear warm-up from 0 to objective.beta over kl_warmup_steps."""
    o = config.objective
    if o.kl_warmup_steps and o.kl_warmup_steps > 0:
        return o.beta * jnp.minimum(1.0, step.astype(jnp.float32) / o.kl_warmup_steps)
    return jnp.asarray(o.beta, jnp.float32)


def beta_from(hp: dict, step: jax.Array) -> jax.Array:
    """``beta_at`` with traced ``hp["beta"]`` and ``hp["kl_warmup_steps"]`` (vectorized sweeps)."""
    w = jnp.asarray(hp["kl_warmup_steps"], jnp.int32)
    ramp = jnp.minimum(1.0, step.astype(jnp.float32) / jnp.maximum(w, 1).astype(jnp.float32))
    return jnp.asarray(hp["beta"], jnp.float32) * jnp.where(w > 0, ramp, 1.0)


def create_train_state(model: VAE, tx: optax.GradientTransformation, seed: int,
                       output_bias=None, init_data=None) -> TrainState:
    """``init_data``: training examples for parts that initialise from data (VampPrior pseudo-inputs)."""
    root = jax.random.key(seed)
    params = model.init(jax.random.fold_in(root, 0), output_bias, data=init_data)
    return TrainState(jnp.int32(0), params, tx.init(params), jax.random.key_data(root), jnp.int32(0))


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def make_train_step(model: VAE, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                    tx_for: Callable | None = None, member_axis: str | None = None):
    """``train_step(state, x, key, hp=None) -> (state, metrics, ok, bad_term)``: one update on a batch x.

    With ``hp`` (a dict of traced per-run hyperparameters: learning_rate, beta, kl_warmup_steps; see
    jaxvae.experiment.vectorized) the optimizer is ``tx_for(hp)`` and the KL weight ``beta_from(hp, step)``.
    ``member_axis``: the name of the vmapped member axis when runs are stacked (jaxvae.experiment.vectorized): the
    update is then one unbatched ``lax.cond`` on "every active member's step is fine" (a plain vmapped
    Adam update) with the per-member select only in the rare other branch; ``hp["active"]`` (bool) marks
    members whose result will be kept.

    A step whose loss or gradient is not finite applies no update (``ok`` False) and reports the
    first offending term; the caller decides whether to stop (nan_policy=stop) or go on (skip).
    """
    loss_fn = make_loss_fn(model, config.objective.name, **objective_options(config.objective))
    dynamic = config.data.binarize == "dynamic"
    stop_on_bad = config.train.nan_policy == "stop"

    def train_step(state: TrainState, x: jax.Array, key: jax.Array, hp: dict | None = None,
                   allow=True):
        k_bin, k_obj = jax.random.split(key)
        if dynamic:
            x = binarize_batch(k_bin, x)
        beta = beta_at(config, state.step) if hp is None else beta_from(hp, state.step)
        opt = tx if hp is None else tx_for(hp)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, k_obj, beta)
        checks = [jnp.isfinite(loss)] + [_all_finite(grads.get(n, {})) for n in ("encoder", "decoder", "flow")]
        ok = jnp.all(jnp.stack(checks))
        bad_term = jnp.argmin(jnp.stack(checks))  # first False
        def update(_):
            updates, new_opt = opt.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), new_opt

        keep = (state.params, state.opt_state)
        good = ok & allow
        if member_axis is None:
            # lax.cond, not a select over every parameter: the skip costs nothing when the step is fine.
            new_params, new_opt = jax.lax.cond(good, update, lambda _: keep, None)
        else:
            # Under vmap a per-member predicate would turn lax.cond into selects over every parameter and
            # optimizer moment (1.7x the Adam update's memory traffic): branch once for the whole group.
            fine = good | ~jnp.asarray(hp.get("active", True), bool)  # inactive results are discarded
            all_fine = jax.lax.pmin(fine.astype(jnp.int32), member_axis) > 0

            def masked(_):
                return jax.tree_util.tree_map(lambda u, v: jnp.where(good, u, v), update(None), keep)

            new_params, new_opt = jax.lax.cond(all_fine, update, masked, None)
        # Under nan_policy=stop a bad step leaves the whole state as it was (the run stops there).
        advance = allow & (ok | (not stop_on_bad))
        skipped = allow & ~ok & (not stop_on_bad)
        state = TrainState(state.step + advance.astype(jnp.int32), new_params, new_opt, state.key,
                           state.skipped + skipped.astype(jnp.int32))
        metrics = {"loss": loss, "beta": beta, **metrics}
        return state, metrics, ok, bad_term

    return train_step


def make_run_steps(model: VAE, config: ml_collections.ConfigDict, tx, steps_per_epoch: int,
                   batch_size: int, mesh=None, tx_for: Callable | None = None, jit: bool = True,
                   member_axis: str | None = None) -> Callable:
    """``run_steps(state, x_train, num_steps) -> (state, StepInfo)``, jit-compiled with num_steps static.

    The steps must lie within one epoch. The epoch's permutation is computed once per call on device
    and the batches are gathered from the on-device training set inside the scan: no host round trip.
    With nan_policy=stop the first non-finite step freezes the state (no later update is applied).
    With a ``mesh``, each batch is split over its data axis (parameters stay replicated): the same
    numbers as on one device, computed data-parallel.
    ``jit=False`` returns the plain ``run_steps(state, x_train, num_steps, hp=None)`` (jaxvae.experiment.vectorized
    vmaps it over runs, with per-run hyperparameters ``hp`` and ``tx_for``, and ``member_axis`` the vmap
    axis name, see make_train_step).
    """
    train_step = make_train_step(model, config, tx, tx_for, member_axis)
    stop_on_bad = config.train.nan_policy == "stop"

    def run_steps(state: TrainState, x_train: jax.Array, num_steps: int, hp: dict | None = None):
        root = jax.random.wrap_key_data(state.key)
        data_key = jax.random.fold_in(root, 1)
        step_key = jax.random.fold_in(root, 2)
        epoch = state.step // steps_per_epoch
        start = state.step % steps_per_epoch
        perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), x_train.shape[0])

        def body(carry, i):
            state, bad_step, bad_term = carry
            idx = jax.lax.dynamic_slice_in_dim(perm, (start + i) * batch_size, batch_size)
            x = shard_batch(jnp.take(x_train, idx, axis=0), mesh)
            allow = (bad_step < 0) if stop_on_bad else True  # after a bad step, stop: freeze
            new_state, metrics, ok, term = train_step(state, x, jax.random.fold_in(step_key, state.step), hp,
                                                      allow)
            first_bad = (bad_step < 0) & ~ok
            bad_term = jnp.where(first_bad, term, bad_term)
            bad_step = jnp.where(first_bad, state.step, bad_step)
            return (new_state, bad_step, bad_term), (metrics, ok)

        init = (state, jnp.int32(-1), jnp.int32(0))
        if num_steps == 1:  # straight-line code, no loop: see dispatch_steps (conv nets on CPU)
            (state, bad_step, bad_term), (metrics, ok) = body(init, jnp.int32(0))
            metrics, oks = {k: v[None] for k, v in metrics.items()}, ok[None]
        else:
            (state, bad_step, bad_term), (metrics, oks) = jax.lax.scan(body, init, jnp.arange(num_steps))
        w = oks.astype(jnp.float32)
        denom = jnp.maximum(w.sum(), 1.0)
        means = {k: jnp.sum(jnp.where(oks, v, 0.0)) / denom for k, v in metrics.items()}
        return state, StepInfo(means, bad_step, bad_term)

    if not jit:
        return run_steps
    return jax.jit(run_steps, static_argnums=2, donate_argnums=0)


def dispatch_steps(config: ml_collections.ConfigDict, model: VAE) -> int:
    """``train.steps_per_dispatch``, except that a convolutional model on CPU with the default 0 (one epoch
    per dispatch) gets 1: XLA:CPU runs convolutions inside a loop (lax.scan / while) about 20x slower than
    the same step as straight-line code (a conv MNIST ELBO step: 3.7 CPU-s in a scan against 0.17 CPU-s
    outside, 2026-11-30, benchmarks/README.md "Conv VAE"), and a one-step dispatch has no loop. An explicit
    value is kept."""
    per = int(config.train.steps_per_dispatch)
    if per == 0 and getattr(model, "is_conv", False) and jax.default_backend() == "cpu":
        return 1
    return per


def dispatch_sizes(step: int, total: int, steps_per_epoch: int, steps_per_dispatch: int) -> int:
    """Number of steps in the next dispatch: up to steps_per_dispatch, never past the epoch's end."""
    per = steps_per_dispatch if steps_per_dispatch > 0 else steps_per_epoch
    to_epoch_end = steps_per_epoch - step % steps_per_epoch
    return int(min(per, to_epoch_end, total - step))


def flops_per_example(model: VAE, num_samples: int) -> float:
    """Approximate matmul FLOPs of one training example (forward + backward = 3x forward); None for conv
    networks (benchmarks/conv_bench.py measures theirs with XLA's cost analysis)."""
    if getattr(model, "is_conv", False):
        return None
    enc = [model.x_dim, *model.encoder_hidden]
    dec = [model.latent_dim, *model.decoder_hidden, model.x_dim]
    enc_f = sum(2 * a * b for a, b in zip(enc[:-1], enc[1:])) + 2 * enc[-1] * 2 * model.latent_dim
    dec_f = sum(2 * a * b for a, b in zip(dec[:-1], dec[1:]))
    return 3.0 * (enc_f + num_samples * dec_f)


def steps_per_epoch_for(n: int, batch_size: int) -> int:
    if batch_size > n:
        raise ValueError(f"train.batch_size={batch_size} exceeds the {n} training examples; lower it")
    return n // batch_size

