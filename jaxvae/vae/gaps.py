"""The inference-gap decomposition (Cremer, Li & Duvenaud 2018, "Inference suboptimality in VAEs"):

    log p(x) - ELBO[q_phi] = (log p(x) - ELBO[q*])      approximation gap: what the family cannot represent
                           + (ELBO[q*] - ELBO[q_phi])    amortization gap: what the encoder fails to amortize,

where q_phi = q(z|x) is the encoder's output and q* = argmax_{q in family} ELBO[q] is the best member of the
same posterior family for that example alone. q* is found by stochastic gradient ascent on the ELBO
(``num_samples`` reparameterized draws per step, Adam) over q's per-example parameters, initialised at the
encoder's output: mu and log sigma^2 for the Gaussian family, plus the flow's parameters (made per
example) for a flow posterior. Every example has its own parameters and the loss is the sum over examples,
so the optimisations are independent while one program runs them all (``jax.vmap``-free: the batch axis
of ``model.sample_posterior`` does it).

Convergence criterion: the optimisation runs in windows of ``check_every`` steps and stops after the first
window whose batch-mean ELBO estimate (averaged over the window) improved by less than ``tol`` nats on
the previous window's, or at ``max_steps``. The learning rate decays exponentially to lr/10 over
``max_steps`` (so that Adam's jitter does not cost ELBO at the end). A q* short of the optimum makes the
approximation gap too large and the amortization gap too small.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae.vae.model import VAE, Params, Posterior


def elbo_of(model: VAE, params: Params, x: jax.Array, post: Posterior, key: jax.Array,
            num_samples: int) -> jax.Array:
    """Per-example ELBO[q] = E_q[log p(x, z) - log q(z|x)] for the posterior parameters ``post``, estimated
    with ``num_samples`` reparameterized draws (``model.sample_posterior``)."""

    def one(k):
        z, log_q, _ = model.sample_posterior(post, k)
        return model.log_joint(params, x, z) - log_q

    return jax.vmap(one)(jax.random.split(key, num_samples)).mean(0)


def per_example_posterior(model: VAE, post: Posterior) -> Posterior:
    """The encoder's output with every parameter per example (a global flow broadcast to each example,
    in the amortized layout (L, B, ...)), i.e. the free parameters of q* for each example."""
    if model.has_flow and not model.amortized_flow:
        batch = post.mu.shape[0]
        fp = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a[:, None], (a.shape[0], batch) + a.shape[1:]),
                                    post.flow_params)
        post = post._replace(flow_params=fp)
    return post


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "max_steps", "check_every"))
def optimize_posterior(model: VAE, params: Params, x: jax.Array, key: jax.Array, *, num_samples: int = 10,
                       learning_rate: float = 1e-2, max_steps: int = 2000, check_every: int = 100,
                       tol: float = 0.01, init: Posterior | None = None) -> tuple[Posterior, dict[str, Any]]:
    """q* for each example of ``x`` (B, D): the posterior parameters maximising the ELBO, by Adam from the
    encoder's output (or ``init``). Returns (q*, {"steps": steps run, "converged": stopped by ``tol``,
    "elbo_last_window": per-example ELBO averaged over the last window})."""
    post0 = per_example_posterior(model, model.encode(params, x) if init is None else init)
    lr = optax.exponential_decay(learning_rate, transition_steps=max_steps, decay_rate=0.1)
    opt = optax.adam(lr)

    def loss(post, k):
        elbo = elbo_of(model, params, x, post, k, num_samples)
        return -elbo.sum(), elbo

    grad = jax.grad(loss, has_aux=True)

    def sgd_step(carry, k):
        post, opt_state = carry
        g, elbo = grad(post, k)
        updates, opt_state = opt.update(g, opt_state, post)
        return (optax.apply_updates(post, updates), opt_state), elbo

    def window(carry):
        post, opt_state, k, prev, step, _ = carry
        k, sub = jax.random.split(k)
        (post, opt_state), elbos = jax.lax.scan(sgd_step, (post, opt_state), jax.random.split(sub, check_every))
        mean = elbos.mean(0)
        done = (mean.mean() - prev.mean()) < tol
        return post, opt_state, k, mean, step + check_every, done

    def cond(carry):
        return (~carry[5]) & (carry[4] < max_steps)

    init_carry = (post0, opt.init(post0), key, jnp.full(x.shape[:1], -jnp.inf, x.dtype), jnp.int32(0),
                  jnp.bool_(False))
    post, _, _, last, steps, done = jax.lax.while_loop(cond, window, init_carry)
    return post, {"steps": steps, "converged": done, "elbo_last_window": last}


@functools.partial(jax.jit, static_argnames=("model", "eval_samples", "num_samples", "max_steps", "check_every"))
def inference_gaps(model: VAE, params: Params, x: jax.Array, log_px: jax.Array, key: jax.Array, *,
                   eval_samples: int = 1000, num_samples: int = 10, learning_rate: float = 1e-2,
                   max_steps: int = 2000, check_every: int = 100, tol: float = 0.01) -> dict[str, jax.Array]:
    """Per-example decomposition of log p(x) - ELBO[q_phi] given an estimate ``log_px`` (B,) of log p(x)
    (exact, AIS or IWAE_K): ELBO[q_phi] and ELBO[q*] are both estimated with ``eval_samples`` fresh draws.

    Returns elbo_amortized, elbo_optimal, approximation_gap = log_px - ELBO[q*], amortization_gap =
    ELBO[q*] - ELBO[q_phi], inference_gap (their sum), and the optimisation's steps/converged.
    """
    k_opt, k_amort, k_opt_eval = jax.random.split(key, 3)
    q_star, info = optimize_posterior(model, params, x, k_opt, num_samples=num_samples,
                                      learning_rate=learning_rate, max_steps=max_steps,
                                      check_every=check_every, tol=tol)
    elbo_amortized = elbo_of(model, params, x, model.encode(params, x), k_amort, eval_samples)
    elbo_optimal = elbo_of(model, params, x, q_star, k_opt_eval, eval_samples)
    return {
        "log_px": log_px,
        "elbo_amortized": elbo_amortized,
        "elbo_optimal": elbo_optimal,
        "approximation_gap": log_px - elbo_optimal,
        "amortization_gap": elbo_optimal - elbo_amortized,
        "inference_gap": log_px - elbo_amortized,
        "steps": info["steps"],
        "converged": info["converged"],
    }


def inference_gaps_dataset(model: VAE, params: Params, x, log_px, key: jax.Array, *, batch_size: int = 100,
                           **options) -> dict[str, np.ndarray]:
    """``inference_gaps`` over every example of ``x`` in batches of ``batch_size`` (the last padded and the
    padding dropped): memory O(batch_size x samples). Per-example host arrays; "steps" and "converged"
    are per batch, repeated for each of its examples."""
    x, log_px = jnp.asarray(x), jnp.asarray(log_px, jnp.float32)
    n = x.shape[0]
    bs = min(batch_size, n)
    outs = []
    for i, lo in enumerate(range(0, n, bs)):
        m = min(bs, n - lo)
        xb, lb = x[lo:lo + bs], log_px[lo:lo + bs]
        if m < bs:  # padding repeats a real example; its optimisation is independent and then dropped
            xb = jnp.concatenate([xb, jnp.repeat(xb[:1], bs - m, 0)])
            lb = jnp.concatenate([lb, jnp.repeat(lb[:1], bs - m, 0)])
        r = jax.device_get(inference_gaps(model, params, xb, lb, jax.random.fold_in(key, i), **options))
        outs.append({k: (np.asarray(v)[:m] if np.ndim(v) else np.full(m, v)) for k, v in r.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
