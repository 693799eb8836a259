"""Diagnostics of importance weights and gradient estimators, as pure functions.

- Gradient signal-to-noise ratio (Rainforth et al. 2018, "Tighter variational bounds are not necessarily
  better"): per parameter SNR = |E[g]| / std[g] over R independent gradient draws on a fixed batch,
  summarised per network (median and mean over parameters) with the gradient variance.
- Normalised effective sample size of K importance weights, ESS/K = (sum_k w_k)^2 / (K sum_k w_k^2) in (0, 1]
  (Kong 1992): 1 when all weights are equal (q(z|x) = p(z|x)), 1/K when one weight dominates.
- Pareto k-hat of the weights' upper tail (Vehtari, Simpson, Gelman, Yao & Gabry 2015/2024, "Pareto
  smoothed importance sampling"): the shape of a generalized Pareto fitted to the largest
  M = ceil(min(K/5, 3 sqrt K)) weights (Zhang & Stephens 2009 estimator, weakly informative prior as in
  PSIS). k-hat > 0.7: the weights' variance is effectively infinite and log (1/K) sum_k w_k (e.g. the K = 5000
  NLL estimate) is unreliable.

Device-side functions take and return jax arrays; the k-hat fit and the SNR summaries run on the host in
float64 (numpy), vectorized over examples / parameters.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.vae.model import VAE, Params
from jaxvae.vae.objectives import log_weights_from_posterior, make_loss_fn

PARETO_K_WARN = 0.7  # Vehtari et al.: above this the importance-sampling estimate is unreliable
# k-hat of M = 213 tail weights (K = 5000) has sd ~0.1, so ~2% of examples with a true k of 0.5 read above
# 0.7: a run is flagged when more than this fraction of its examples do.
PARETO_K_WARN_FRACTION = 0.05


# -- effective sample size -----------------------------------------------------------------------------

def ess_fraction(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """ESS/K = (sum_k w_k)^2 / (K sum_k w_k^2) = exp(2 LSE(log w) - LSE(2 log w)) / K, per example."""
    log_w = log_w.astype(jnp.promote_types(log_w.dtype, jnp.float32))
    k = log_w.shape[axis]
    return jnp.exp(2 * jax.nn.logsumexp(log_w, axis=axis) - jax.nn.logsumexp(2 * log_w, axis=axis) - math.log(k))


# -- Pareto k-hat (PSIS) -------------------------------------------------------------------------------

def psis_tail_length(num_samples: int) -> int:
    """M = ceil(min(K/5, 3 sqrt K)): the number of largest weights the generalized Pareto is fitted to."""
    return int(math.ceil(min(0.2 * num_samples, 3 * math.sqrt(num_samples))))


def khat_available(num_samples: int) -> bool:
    """PSIS needs more than 4 tail weights (and one more weight as the threshold): K >= 21."""
    m = psis_tail_length(num_samples)
    return m > 4 and num_samples > m


def _gpd_shape(x: np.ndarray) -> np.ndarray:
    """Shape k of a generalized Pareto fitted to the exceedances ``x`` (..., n), sorted ascending and > 0:
    the Zhang & Stephens (2009) posterior-mean estimate of theta, the profile k(theta) = mean log(1 - theta x),
    then shrunk towards 0.5 as PSIS does (prior weight 10 samples)."""
    n = x.shape[-1]
    m = 30 + int(math.sqrt(n))
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    theta = theta / (3.0 * x[..., int(n / 4 + 0.5) - 1, None]) + 1.0 / x[..., -1, None]  # (..., m)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        k = np.log1p(-theta[..., :, None] * x[..., None, :]).mean(-1)  # (..., m)
        profile = n * (np.log(-theta / k) - k - 1.0)
        weights = 1.0 / np.exp(profile[..., None, :] - profile[..., :, None]).sum(-1)
    weights = np.where(weights >= 10 * np.finfo(np.float64).eps, weights, 0.0)
    weights = weights / weights.sum(-1, keepdims=True)
    theta_post = np.sum(theta * weights, -1)
    k_post = np.log1p(-theta_post[..., None] * x).mean(-1)
    return (n * k_post + 10 * 0.5) / (n + 10)


def pareto_khat_from_top(top_log_w: np.ndarray) -> np.ndarray:
    """k-hat per row from the M + 1 largest log weights of each example, (..., M + 1) in any order: the
    (M + 1)-th largest is the threshold u, the fit is on w - u of the M largest (after subtracting the max)."""
    top = np.sort(np.asarray(top_log_w, np.float64), axis=-1)  # ascending
    top = top - top[..., -1:]
    cutoff = np.maximum(top[..., 0], np.log(np.finfo(np.float64).tiny))
    x = np.exp(top[..., 1:]) - np.exp(cutoff)[..., None]
    x = np.maximum(x, np.finfo(np.float64).tiny)  # ties at the threshold
    return _gpd_shape(x)


def pareto_khat(log_w, axis: int = 0) -> np.ndarray:
    """PSIS k-hat of the importance weights exp(log_w) along ``axis`` (host, float64); nan when K < 21."""
    log_w = np.moveaxis(np.asarray(log_w, np.float64), axis, -1)
    k = log_w.shape[-1]
    if not khat_available(k):
        return np.full(log_w.shape[:-1], np.nan)
    m = psis_tail_length(k)
    return pareto_khat_from_top(np.sort(log_w, axis=-1)[..., -(m + 1):])


# -- IWAE bound with weight statistics, bounded memory --------------------------------------------------

def iwae_weight_stats_chunked(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
                              chunk_size: int = 500, tail: int = 0) -> dict[str, jax.Array]:
    """``evaluation.iwae_bound_chunked`` (the same draws and the same bound, to the last bit) plus, from the
    same K weights, ESS/K per example and (``tail`` > 0) the ``tail`` largest log weights per example,
    shape (batch, tail), for ``pareto_khat_from_top``. The scan carries (max, sum w, sum w^2, top weights).
    """
    chunk = min(chunk_size, num_samples)
    n_chunks = -(-num_samples // chunk)
    post = model.encode(params, x)
    batch = x.shape[0]

    def step(carry, i):
        run_max, run_sum, run_sq, top = carry
        log_w, _ = log_weights_from_posterior(model, params, x, post, jax.random.fold_in(key, i), chunk)
        valid = (i * chunk + jnp.arange(chunk)) < num_samples
        log_w = jnp.where(valid[:, None], log_w.astype(jnp.float32), -jnp.inf)
        new_max = jnp.maximum(run_max, log_w.max(0))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.exp(log_w - new_max).sum(0)
        run_sq = run_sq * jnp.exp(2 * (run_max - new_max)) + jnp.exp(2 * (log_w - new_max)).sum(0)
        if tail:
            top = jax.lax.top_k(jnp.concatenate([top, log_w.T], axis=1), tail)[0]
        return (new_max, run_sum, run_sq, top), None

    init = (jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32),
            jnp.zeros((batch,), jnp.float32), jnp.full((batch, tail), -jnp.inf, jnp.float32))
    (run_max, run_sum, run_sq, top), _ = jax.lax.scan(step, init, jnp.arange(n_chunks))
    out = {"bound": run_max + jnp.log(run_sum) - math.log(num_samples),
           "ess": jnp.square(run_sum) / (num_samples * run_sq)}
    if tail:
        out["top_log_w"] = top
    return out


# -- gradient signal-to-noise ratio --------------------------------------------------------------------

def gradient_draws(loss_fn: Callable, params: Params, x: jax.Array, key: jax.Array, num_draws: int,
                   chunk: int | None = None) -> Params:
    """R = ``num_draws`` independent gradients of ``loss_fn(params, x, key) -> (loss, metrics)`` on the fixed
    batch x (only the key changes), stacked on a leading axis; ``chunk`` draws vmapped at a time."""
    grad = jax.grad(lambda p, k: loss_fn(p, x, k)[0])
    return jax.lax.map(lambda k: grad(params, k), jax.random.split(key, num_draws), batch_size=chunk)


def snr_summary(draws: Params) -> dict[str, dict]:
    """Per network (top-level parameter group: encoder, decoder, ...): over its parameters with a
    non-constant gradient, the median and mean of SNR = |mean_r g| / std_r g, and the mean and sum of the
    per-parameter variance var_r g (unbiased, ddof 1). ``draws``: gradients with a leading axis of R >= 2.

    The plain estimate has a floor: E|mean_r g| >= sqrt(2 / pi) std / sqrt(R) even when E g = 0, so SNRs
    near 1/sqrt(R) are overestimated. ``snr_debiased_*`` use sqrt(max(mean^2 - var / R, 0)) / std
    (E[mean_r^2] = (E g)^2 + var / R) and follow the true SNR down to ~1/sqrt(R) further."""
    out = {}
    for group, tree in draws.items():
        leaves = jax.tree_util.tree_leaves(tree)
        if not leaves:
            continue
        g = np.concatenate([np.asarray(a, np.float64).reshape(a.shape[0], -1) for a in leaves], axis=1)
        mean, std = g.mean(0), g.std(0, ddof=1)
        ok = std > 0
        var = std ** 2
        snr = np.abs(mean[ok]) / std[ok]
        snr_d = np.sqrt(np.maximum(mean[ok] ** 2 - var[ok] / g.shape[0], 0.0)) / std[ok]
        out[group] = {
            "snr_median": float(np.median(snr)) if snr.size else None,
            "snr_mean": float(np.mean(snr)) if snr.size else None,
            "snr_debiased_median": float(np.median(snr_d)) if snr.size else None,
            "snr_debiased_mean": float(np.mean(snr_d)) if snr.size else None,
            "grad_var_mean": float(var.mean()),
            "grad_var_sum": float(var.sum()),
            "num_params": int(g.shape[1]),
            "num_constant": int((~ok).sum()),
        }
    return out


def estimator_options(name: str, total: int, m: int = 4, beta_ciwae: float = 0.5) -> dict:
    """Objective options for a budget of ``total`` draws per example: K = total for IWAE-like estimators;
    MIWAE/PIWAE use M = min(m, total) groups of K = total // M (M*K = total when m divides it)."""
    if name in ("miwae", "piwae"):
        mm = max(1, min(m, total))
        return {"m": mm, "k": max(1, total // mm)}
    if name == "ciwae":
        return {"k": total, "beta_ciwae": beta_ciwae}
    return {"k": total}


def snr_vs_k(model: VAE, params: Params, x: jax.Array, key: jax.Array, ks: Sequence[int],
             estimators: Sequence[str], num_draws: int = 100, m: int = 4, beta_ciwae: float = 0.5,
             chunk: int | None = None) -> dict[str, list[dict]]:
    """``{estimator: [{"k": total draws, "options": ..., "encoder": snr_summary, "decoder": ...}, ...]}`` for
    each budget in ``ks``: R = ``num_draws`` gradient draws of the registered objective on the batch x. The
    same key for every (estimator, K), so estimators are compared on common random numbers where they can."""
    out: dict[str, list[dict]] = {}
    for name in estimators:
        rows = []
        for total in ks:
            opts = estimator_options(name, int(total), m, beta_ciwae)
            loss_fn = make_loss_fn(model, name, **opts)
            draws = jax.jit(gradient_draws, static_argnums=(0, 4, 5))(
                lambda p, xx, k: loss_fn(p, xx, k), params, x, key, num_draws, chunk)
            rows.append({"k": int(total), "options": opts, **snr_summary(jax.device_get(draws))})
        out[name] = rows
    return out
