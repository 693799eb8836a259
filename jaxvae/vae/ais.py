"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) estimates of log p(x).

AIS (Neal 2001; for decoder-based models Wu, Burda, Salakhutdinov & Grosse 2017) moves C chains per
example from a normalized start density f_0 = q to the unnormalized posterior f_T(u) = p(x, u) along the
geometric path

    f_t(u) = q(u)^(1 - beta_t) p(x, u)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

with one HMC transition leaving f_t invariant after each intermediate temperature. Each chain's weight

    log w = sum_{t=1..T} (beta_t - beta_{t-1}) [log p(x, u_{t-1}) - log q(u_{t-1})]

has E[w] = p(x), so log p_hat(x) = log (1/C) sum_c w_c is a stochastic lower bound (Jensen). With T = 1
it is the IWAE bound with K = C on the same draws (Burda et al. 2015).

BDMC (Grosse, Ghahramani & Adams 2015): for x simulated from the model, (z, x) ~ p(z) p(x|z), the z is an
exact posterior sample; AIS run backwards from it (beta from 1 to 0) has E[w_rev] = 1/p(x), so
-log (1/C) sum_c w_rev_c is a stochastic upper bound. [lower, upper] sandwiches log p(x).

Start densities (``init``):
  * ``"prior"``: q = p(z) (as in Wu et al.); u = z, flattened with ``jax.flatten_util.ravel_pytree`` so a
    pytree z (hierarchical latents) works. Uses only ``sample_prior``, ``log_prior`` and ``log_joint``.
  * ``"encoder"``: q = q(z|x). AIS runs in the space of the base draw u = z_0 ~ N(mu, sigma^2) of
    ``sample_posterior``, against the pulled-back target p(x, f(u)) |det df/du| (identical to p(x, z)
    without a flow), so flow posteriors work without the flow's inverse. Reverse AIS (BDMC) from the
    encoder needs u = f^-1(z), so it is only offered for Gaussian posteriors.

Transitions: BlackJAX's HMC kernel (``blackjax.mcmc.hmc.build_kernel``, identity mass matrix,
``leapfrog_steps`` leapfrog steps), ``jax.vmap``-ped over examples and chains. The step size is one per
example, adapted after every transition toward ``target_accept`` from the chains' mean acceptance
probability: log eps += adapt_rate (accept - target), as Wu et al. adapt theirs during annealing (the
adaptation uses the chains' own history, a small departure from exact AIS that their evaluation shares).
Cost per temperature: ``leapfrog_steps`` + 1 gradient evaluations of log p(x, z) (the kernel returns only
the tempered density, so the two path ends are re-evaluated at each new state for the weight).
BlackJAX 1.7.1 was measured to work with jax 0.10.2 (its requirements: jax>=0.9, numpy>=1.25, optax, scipy).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import hmc as bj_hmc
from jax.flatten_util import ravel_pytree

from jaxvae.vae import distributions as D
from jaxvae.vae import flows
from jaxvae.vae.model import VAE, Params, Posterior

INITS = ("encoder", "prior")
SCHEDULES = ("sigmoid", "linear")


class AISResult(NamedTuple):
    """Per-example outputs of one AIS run (forward: log p_hat(x); reverse: -log p_hat(x)^-1)."""

    log_px: jax.Array  # (B,) lower bound (forward) or upper bound (reverse) of log p(x)
    log_w: jax.Array  # (B, C) per-chain log weights
    acceptance: jax.Array  # (B,) mean HMC acceptance probability over the second half of the transitions
    step_size: jax.Array  # (B,) final adapted step size
    divergences: jax.Array  # (B,) number of divergent (or non-finite) HMC proposals


def schedule(t, num_steps, kind: str = "sigmoid", delta: float = 4.0):
    """beta_t for t = 0..T (arrays or traced scalars; beta_0 = 0, beta_T = 1). ``sigmoid``: rescaled
    sigmoid(delta (2t/T - 1)) (Grosse et al. 2015), denser near both ends; ``linear``: t/T."""
    r = jnp.asarray(t, jnp.float32) / num_steps
    if kind == "linear":
        return r
    if kind != "sigmoid":
        raise ValueError(f"AIS schedule {kind!r} is not one of {', '.join(SCHEDULES)}")
    lo, hi = jax.nn.sigmoid(-delta), jax.nn.sigmoid(delta)
    return (jax.nn.sigmoid(delta * (2.0 * r - 1.0)) - lo) / (hi - lo)


# -- the two ends of the path, per example (unbatched u) --------------------------------------------------
class _Path(NamedTuple):
    """log f_0 and log f_T of one example as functions of a flat u, plus that example's context."""

    log_start: Callable  # (ctx, u) -> log q(u)
    log_target: Callable  # (ctx, u) -> log p(x, z(u)) [+ log |det dz/du|]
    ctx: Any  # pytree with a leading batch axis (x and, for the encoder start, q's parameters)


def _add_batch(tree):
    return jax.tree_util.tree_map(lambda a: a[None], tree)


def _prior_path(model: VAE, params: Params, x: jax.Array, unravel: Callable) -> _Path:
    def log_start(ctx, u):
        return model.log_prior(params, _add_batch(unravel(u)))[0]

    def log_target(ctx, u):
        return model.log_joint(params, ctx["x"][None], _add_batch(unravel(u)))[0]

    return _Path(log_start, log_target, {"x": x})


def _batch_first_flow(model: VAE, post: Posterior, batch: int):
    """The posterior's flow parameters with the example axis first: amortized ones are (L, B, ...);
    global ones (L, ...) are broadcast to every example."""
    if not model.has_flow:
        return None
    if model.amortized_flow:
        return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 1, 0), post.flow_params)
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), post.flow_params)


def _encoder_path(model: VAE, params: Params, x: jax.Array, post: Posterior) -> _Path:
    if not isinstance(post, Posterior):
        raise NotImplementedError("AIS from the encoder needs the Gaussian (+ flow) posterior of "
                                  "jaxvae.vae.model.Posterior; use init='prior' for this model")
    ctx = {"x": x, "mu": post.mu, "logvar": post.logvar, "flow": _batch_first_flow(model, post, x.shape[0])}

    def log_start(ctx, u):
        return D.gaussian_log_prob(u, ctx["mu"], ctx["logvar"])

    def log_target(ctx, u):
        z, log_det = u[None], 0.0
        if model.has_flow:
            z, log_det = flows.apply(model.flow, ctx["flow"], z)
            log_det = log_det[0]
        return model.log_joint(params, ctx["x"][None], z)[0] + log_det

    return _Path(log_start, log_target, ctx)


# -- the annealing loop -------------------------------------------------------------------------------
def _anneal(path: _Path, u0: jax.Array, num_steps, key: jax.Array, *, reverse: bool, schedule_kind: str,
            leapfrog_steps: int, step_size, target_accept, adapt_rate):
    """Runs the chains u0 (B, C, n) through the T = ``num_steps`` temperatures (``reverse``: from beta = 1
    down to 0); returns (log_w (B, C), mean acceptance over the second half of the moves (B,), final step
    sizes (B,), divergent or non-finite proposals (B,)).

    With b_i = beta_i (or beta_{T-i} reversed): log_w = sum_{i=1..T} (b_i - b_{i-1}) [log f_T - log f_0](u_{i-1}),
    one HMC move invariant for f_{b_i} after each i < T. ``num_steps`` may be traced (one compilation for
    every T): the loop is a ``lax.fori_loop``.
    """
    batch, chains, dim = u0.shape
    kernel = bj_hmc.build_kernel()
    inv_mass = jnp.ones((dim,), u0.dtype)
    per_chain = lambda f: jax.vmap(jax.vmap(f, in_axes=(None, 0)), in_axes=(0, 0))  # noqa: E731
    vg_start = per_chain(jax.value_and_grad(path.log_start, argnums=1))
    vg_target = per_chain(jax.value_and_grad(path.log_target, argnums=1))

    def beta(i):
        return schedule(num_steps - i if reverse else i, num_steps, schedule_kind).astype(u0.dtype)

    def ends(u):
        (l0, g0), (lt, gt) = vg_start(path.ctx, u), vg_target(path.ctx, u)
        lt = jnp.where(jnp.isfinite(lt), lt, -jnp.inf)  # a non-finite target has zero weight, never NaN
        return l0, g0, lt, gt

    def move(ctx, u, l0, g0, lt, gt, eps, key, b):
        """One HMC transition of one chain, invariant for f_b."""
        logdens = lambda v: (1 - b) * path.log_start(ctx, v) + b * path.log_target(ctx, v)  # noqa: E731
        state = bj_hmc.HMCState(u, (1 - b) * l0 + b * lt, (1 - b) * g0 + b * gt)
        new, info = kernel(key, state, logdens, eps, inv_mass, leapfrog_steps)
        bad = info.is_divergent | ~jnp.isfinite(new.logdensity)
        return jnp.where(bad, u, new.position), jnp.where(bad, 0.0, info.acceptance_rate), bad

    moves = jax.vmap(jax.vmap(move, in_axes=(None, 0, 0, 0, 0, 0, None, 0, None)),
                     in_axes=(0, 0, 0, 0, 0, 0, 0, 0, None))
    n_moves = num_steps - 1
    half = n_moves // 2

    def step(i, carry):
        u, log_w, l0, g0, lt, gt, eps, acc, div = carry
        b = beta(i)
        log_w = log_w + (b - beta(i - 1)) * (lt - l0)
        keys = jax.random.split(jax.random.fold_in(key, i), batch * chains).reshape(batch, chains)
        u, accept, bad = moves(path.ctx, u, l0, g0, lt, gt, eps, keys, b)
        l0, g0, lt, gt = ends(u)
        a = accept.mean(1)
        eps = jnp.clip(eps * jnp.exp(adapt_rate * (a - target_accept)), 1e-4, 10.0)
        acc = acc + jnp.where(i > half, a, 0.0)
        return u, log_w, l0, g0, lt, gt, eps, acc, div + bad.sum(1)

    l0, g0, lt, gt = ends(u0)
    carry = (u0, jnp.zeros((batch, chains), u0.dtype), l0, g0, lt, gt,
             jnp.full((batch,), step_size, u0.dtype), jnp.zeros((batch,), u0.dtype), jnp.zeros((batch,), jnp.int32))
    carry = jax.lax.fori_loop(1, num_steps, step, carry)
    u, log_w, l0, g0, lt, gt, eps, acc, div = carry
    log_w = log_w + (beta(num_steps) - beta(num_steps - 1)) * (lt - l0)
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    acceptance = jnp.where(n_moves > 0, acc / jnp.maximum(n_moves - half, 1), 1.0)
    return log_w, acceptance, eps, div


def _log_mean_exp(log_w, axis):
    return jax.nn.logsumexp(log_w, axis=axis) - math.log(log_w.shape[axis])


def _flatten_chains(z):
    """z: pytree with leaves (C, B, ...) -> (B, C, n) flat array and the unravel of one example's z."""
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0, 0], z))
    flat = jax.vmap(jax.vmap(lambda t: ravel_pytree(t)[0]))(z)
    return jnp.swapaxes(flat, 0, 1), unravel


@functools.partial(jax.jit, static_argnames=("model", "num_chains", "leapfrog_steps", "init", "schedule_kind"))
def ais(model: VAE, params: Params, x: jax.Array, key: jax.Array, *, num_steps: int, num_chains: int,
        leapfrog_steps: int = 10, init: str = "encoder", schedule_kind: str = "sigmoid",
        step_size: float = 0.05, target_accept: float = 0.65, adapt_rate: float = 0.5) -> AISResult:
    """Forward AIS: per-example log p_hat(x) = log (1/C) sum_c w_c, a stochastic lower bound of log p(x).

    ``x``: (B, D); T = ``num_steps`` temperatures, C = ``num_chains`` chains per example. The start draws
    are those of ``objectives.log_weights(model, params, x, k_init, C)`` for ``init="encoder"`` (k_init the
    first half of ``jax.random.split(key)``), so T = 1 reproduces IWAE_C on the same samples.
    """
    if init not in INITS:
        raise ValueError(f"AIS init {init!r} is not one of {', '.join(INITS)}")
    k_init, k_run = jax.random.split(key)
    batch = x.shape[0]
    if init == "encoder":
        post = model.encode(params, x)
        z0 = jax.vmap(lambda k: model.sample_posterior(post, k)[2])(jax.random.split(k_init, num_chains))
        u0, _ = _flatten_chains(z0)
        path = _encoder_path(model, params, x, post)
    else:
        z0 = model.sample_prior(params, k_init, num_chains * batch)
        z0 = jax.tree_util.tree_map(lambda a: a.reshape((num_chains, batch) + a.shape[1:]), z0)
        u0, unravel = _flatten_chains(z0)
        path = _prior_path(model, params, x, unravel)
    log_w, acc, eps, div = _anneal(path, u0, num_steps, k_run, reverse=False, schedule_kind=schedule_kind,
                                   leapfrog_steps=leapfrog_steps, step_size=step_size,
                                   target_accept=target_accept, adapt_rate=adapt_rate)
    return AISResult(_log_mean_exp(log_w, 1), log_w, acc, eps, div)


@functools.partial(jax.jit, static_argnames=("model", "num_chains", "leapfrog_steps", "init", "schedule_kind"))
def reverse_ais(model: VAE, params: Params, x: jax.Array, z: Any, key: jax.Array, *, num_steps: int,
                num_chains: int, leapfrog_steps: int = 10, init: str = "prior", schedule_kind: str = "sigmoid",
                step_size: float = 0.05, target_accept: float = 0.65, adapt_rate: float = 0.5) -> AISResult:
    """Reverse AIS from exact posterior samples ``z`` (leading axis B; pytree allowed) of the examples x:
    per-example -log (1/C) sum_c w_rev_c, a stochastic upper bound of log p(x) (Grosse et al. 2015).

    Every chain starts at the example's z (each chain's start is then exactly p(z|x)-distributed). For
    ``init="encoder"`` the posterior must be Gaussian without a flow (u = z needs no inverse flow).
    """
    zc = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a[None], (num_chains,) + a.shape), z)
    u0, unravel = _flatten_chains(zc)
    if init == "encoder":
        if model.has_flow:
            raise NotImplementedError("reverse AIS from the encoder needs the flow's inverse; use init='prior'")
        path = _encoder_path(model, params, x, model.encode(params, x))
    elif init == "prior":
        path = _prior_path(model, params, x, unravel)
    else:
        raise ValueError(f"AIS init {init!r} is not one of {', '.join(INITS)}")
    log_w, acc, eps, div = _anneal(path, u0, num_steps, key, reverse=True, schedule_kind=schedule_kind,
                                   leapfrog_steps=leapfrog_steps, step_size=step_size,
                                   target_accept=target_accept, adapt_rate=adapt_rate)
    return AISResult(-_log_mean_exp(log_w, 1), log_w, acc, eps, div)


def simulate(model: VAE, params: Params, key: jax.Array, num: int):
    """``num`` pairs (z, x) ~ p(z) p(x|z) from the model (z: exact posterior samples of their x)."""
    k_z, k_x = jax.random.split(key)
    z = model.sample_prior(params, k_z, num)
    x = model.likelihood_part.sample(k_x, model.decode(params, z))
    return z, x


# -- memory-bounded drivers over a data set ---------------------------------------------------------------
def _batched(fn, arrays, batch_size: int, key: jax.Array) -> dict[str, np.ndarray]:
    """Applies ``fn(*batch_arrays, key_b) -> AISResult`` to batches of ``batch_size`` examples (the last
    padded by repeating its first example, then dropped), so memory is O(batch_size x chains) and every
    batch has one shape (one compilation). Returns host arrays with the first axis = examples."""
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    bs = min(batch_size, n)
    outs = []
    for i, lo in enumerate(range(0, n, bs)):
        def take(a, lo=lo):
            part = a[lo:lo + bs]
            if part.shape[0] < bs:
                part = jnp.concatenate([part, jnp.repeat(part[:1], bs - part.shape[0], axis=0)])
            return part
        batch = jax.tree_util.tree_map(take, arrays)
        res = jax.device_get(fn(*batch, jax.random.fold_in(key, i)))
        outs.append(jax.tree_util.tree_map(lambda a, m=min(bs, n - lo): np.asarray(a)[:m], res._asdict()))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def ais_dataset(model: VAE, params: Params, x, key: jax.Array, *, batch_size: int = 100, **options):
    """``ais`` over every example of ``x`` in batches of ``batch_size``; per-example host arrays."""
    return _batched(lambda xb, k: ais(model, params, xb, k, **options), (jnp.asarray(x),), batch_size, key)


def bdmc(model: VAE, params: Params, key: jax.Array, num_examples: int, *, batch_size: int = 100,
         **options) -> dict[str, Any]:
    """BDMC sandwich on ``num_examples`` examples simulated from the model: per-example forward-AIS lower
    and reverse-AIS upper bounds (same T, chains, start) and the simulated x (for other estimators)."""
    k_sim, k_fwd, k_rev = jax.random.split(key, 3)
    z, x = simulate(model, params, k_sim, num_examples)
    lower = ais_dataset(model, params, x, k_fwd, batch_size=batch_size, **options)
    upper = _batched(lambda xb, zb, k: reverse_ais(model, params, xb, zb, k, **options), (x, z), batch_size,
                     k_rev)
    return {"x": np.asarray(x), "lower": lower, "upper": upper}
